"""Fresh mode: a new nsjail per activation."""

import itertools
import logging
import os
import stat
import threading
import time
from pathlib import Path

from execution.sandbox import jail, process
from execution.sandbox.cgroups import Layout
from execution.sandbox.config import SandboxConfig, SandboxSetupError
from execution.sandbox.network import Network
from execution.sandbox.outcome import classify
from execution.sandbox.protocol import NoteWatcher, dumps_job
from execution.sandbox.result import SandboxRequest, SandboxResult, Status
from execution.sandbox.slots import Slots

logger = logging.getLogger(__name__)
_job_numbers = itertools.count()


class CodeCache:
    """Tenant sources by sha256, world-readable so every slot's uid can read its own bind.

    Only the one directory is bound into a jail, so readability here shows nothing else.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in (self.directory.parent, self.directory):
            path.chmod(0o755)
        for parent in self.directory.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                raise SandboxSetupError(
                    f"{parent} is not traversable by other users, so the sandbox uids "
                    f"cannot read {self.directory}; choose another sandbox state dir"
                )

    def put(self, sha256: str, code: str) -> Path:
        directory = self.directory / sha256
        target = directory / "tenant.py"
        if target.is_file():
            return directory
        directory.mkdir(mode=0o755, exist_ok=True)
        directory.chmod(0o755)
        tmp = directory / f".tenant.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(code.encode())
        tmp.chmod(0o644)
        os.replace(tmp, target)
        return directory


class FreshSandbox:
    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig.from_settings()
        self.code_cache = CodeCache(self.config.code_dir)
        self.slots = Slots(self.config.slots_dir, self.config.slots)
        self.network = Network()
        self._layout: Layout | None = None
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Idempotent start-up: cgroup parents (and a sweep of leftovers), directories, and
        a check that network-on jails can be had."""
        with self._lock:
            if self._layout is not None:
                return
            layout = Layout.detect(self.config.cgroup_root)
            layout.prepare()
            swept = layout.sweep()
            if swept:
                logger.warning("removed %d leftover sandbox cgroups", swept)
            if not os.access(self.config.nsjail_path, os.X_OK):
                raise SandboxSetupError(f"nsjail is not executable at {self.config.nsjail_path}")
            self.state_dir_ready()
            self.network.prepare()
            self._layout = layout

    def state_dir_ready(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_resolv_conf()
        self.code_cache.prepare()
        self.slots.prepare()
        self.config = self.config.with_runtime_installed()

    def run(self, request: SandboxRequest) -> SandboxResult:
        try:
            job_bytes, started = open_job(request, self.prepare)
        except Refused as refused:
            return refused.result
        try:
            return self._run(request, job_bytes)
        except (SandboxSetupError, OSError) as exc:
            logger.exception("sandbox run failed for tenant %s", request.tenant)
            return failure(Status.SANDBOX_FAILURE, "SandboxFailure", str(exc), started)

    def _run(self, request: SandboxRequest, job_bytes: bytes) -> SandboxResult:
        limits = request.limits
        code_dir = self.code_cache.put(request.code_sha256, request.code)
        with self.slots.acquire() as slot:
            name = f"job-{os.getpid()}-{next(_job_numbers)}"
            job = self._layout.create_job(name, limits.memory_bytes)
            try:
                uid = self.config.uid_base + slot
                spec = jail.JailSpec(limits, uid, code_dir, job)
                netns = self.network.slot(uid) if limits.network else None
                run = process.run(
                    self.config.nsjail_path,
                    jail.render(self.config, spec),
                    job_bytes,
                    output_cap=limits.output_bytes,
                    result_cap=limits.result_bytes,
                    wall_seconds=limits.wall_seconds,
                    kill_grace=self.config.kill_grace_seconds,
                    kill_all=job.kill_all,
                    on_result=watch_notes(request.on_progress),
                    netns=netns,
                )
                usage = job.usage()
            finally:
                job.kill_all()
                job.remove()
        return classify(run, limits, oom=usage.oom, peak_memory_bytes=usage.peak_memory_bytes)


class Refused(Exception):
    """A request that ends before any jail runs; `result` says why."""

    def __init__(self, result: SandboxResult):
        super().__init__(result.error)
        self.result = result


def open_job(request: SandboxRequest, prepare) -> tuple[bytes, float]:
    """Ready the sandbox and encode the job: (job bytes, start time), or Refused.

    Every sandbox mode starts a run this way, so a bad input or a broken set-up is
    the same SandboxResult whichever mode met it.
    """
    if not isinstance(request, SandboxRequest):
        raise TypeError("run() takes a SandboxRequest")
    started = time.monotonic()
    try:
        prepare()
        return dumps_job(request.mode, request.input), started
    except (TypeError, ValueError) as exc:
        raise Refused(
            failure(Status.ERROR, "BadInput", f"the input is not JSON: {exc}", started)
        ) from None
    except (SandboxSetupError, OSError) as exc:
        logger.exception("sandbox set-up failed")
        raise Refused(
            failure(Status.SANDBOX_FAILURE, "SandboxFailure", str(exc), started)
        ) from None


def failure(status: Status, kind: str, message: str, started: float) -> SandboxResult:
    return SandboxResult(
        status=status,
        result=None,
        error={"type": kind, "message": message},
        stdout="",
        stderr="",
        stdout_truncated=False,
        stderr_truncated=False,
        wall_seconds=time.monotonic() - started,
        cpu_seconds=0.0,
        peak_memory_bytes=None,
    )


def watch_notes(callback):
    """A result-channel watcher that passes progress notes to `callback`, or None."""
    if callback is None:
        return None

    def safe(note: dict) -> None:
        try:
            callback(note)
        except Exception:
            logger.exception("a progress callback failed; the step goes on")

    return NoteWatcher(safe).feed
