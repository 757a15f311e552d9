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
from execution.sandbox.config import SandboxConfig, SandboxSetupError, closed_ancestor
from execution.sandbox.network import Network
from execution.sandbox.outcome import classify
from execution.sandbox.protocol import NoteWatcher, dumps_job
from execution.sandbox.result import SandboxRequest, SandboxResult, Status
from execution.sandbox.slots import NoSlotInTime, Slots

logger = logging.getLogger(__name__)
CODE_ROOT_MODE = 0o711  # the slots' uids pass through to their own directory, list nothing
_job_numbers = itertools.count()


class CodeCache:
    """The tenant source each slot runs, readable by that slot's uid and root alone.

    nsjail mounts /code as the slot's uid (a 0700 source fails with EACCES), so that uid
    must reach it: code/ is 0711 (no listing), code/<slot>/ is root:<slot gid> 0750 and its
    tenant.py 0640. No other local user, and no other slot, can read a tenant's code.
    A slot is held by one jail at a time, so its directory holds that jail's code alone.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.parent.chmod(0o755)
        self.directory.chmod(CODE_ROOT_MODE)
        for entry in self.directory.iterdir():
            # Before issue 13 the cache was world-readable (0755 by sha256, 0644 files).
            mode = entry.lstat().st_mode
            if stat.S_ISDIR(mode) and stat.S_IMODE(mode) != 0o750:
                entry.chmod(0o750)
                for source in entry.iterdir():
                    source.chmod(0o640)
        closed = closed_ancestor(self.directory)
        if closed is not None:
            raise SandboxSetupError(
                f"{closed} is not traversable by other users, so the sandbox uids "
                f"cannot read {self.directory}; choose another STEPWELL_SANDBOX_DIR"
            )

    def put(self, name: str, code: str, gid: int = 0) -> Path:
        """Write code as <name>/tenant.py, readable by root and the group gid; its dir."""
        directory = self.directory / name
        try:
            os.mkdir(directory, 0o750)
        except FileExistsError:
            pass
        else:
            os.chown(directory, 0, gid)
            os.chmod(directory, 0o750)  # mkdir's mode passes through the umask
        tmp = directory / f".tenant.{os.getpid()}.{threading.get_ident()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o640)
        try:
            os.fchown(fd, 0, gid)
            os.fchmod(fd, 0o640)
            data = code.encode()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, directory / "tenant.py")
        return directory


class FreshSandbox:
    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig.from_settings()
        self.code_cache = CodeCache(self.config.code_dir)
        self.slots = Slots(self.config.slots_dir, self.config.slots, self.config.slot_wait_seconds)
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

    def code_dir_for(self, slot: int, code: str) -> Path:
        """The directory bound at /code for the jail holding `slot`, holding `code`."""
        return self.code_cache.put(str(slot), code, self.config.uid_base + slot)

    def run(self, request: SandboxRequest) -> SandboxResult:
        try:
            job_bytes, started = open_job(request, self.prepare)
        except Refused as refused:
            return refused.result
        try:
            return self._run(request, job_bytes)
        except NoSlotInTime as exc:
            logger.warning("no sandbox slot for tenant %s: %s", request.tenant, exc)
            return failure(Status.BUSY, "SandboxBusy", str(exc), started)
        except (SandboxSetupError, OSError) as exc:
            logger.exception("sandbox run failed for tenant %s", request.tenant)
            return failure(Status.SANDBOX_FAILURE, "SandboxFailure", str(exc), started)

    def _run(self, request: SandboxRequest, job_bytes: bytes) -> SandboxResult:
        limits = request.limits
        with self.slots.acquire() as slot:
            code_dir = self.code_dir_for(slot, request.code)
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
