"""Fresh mode: a new nsjail per activation."""

import itertools
import logging
import os
import threading
from pathlib import Path

from execution.sandbox import jail, process, runtime_copy
from execution.sandbox.cgroups import Layout
from execution.sandbox.code_cache import CodeCache
from execution.sandbox.config import SandboxConfig, SandboxSetupError
from execution.sandbox.job import Refused, open_job, watch_notes
from execution.sandbox.network import Network
from execution.sandbox.outcome import classify
from execution.sandbox.result import SandboxRequest, SandboxResult, Status, failure
from execution.sandbox.slots import NoSlotInTime, Slots

logger = logging.getLogger(__name__)
_job_numbers = itertools.count()


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
        self.config = runtime_copy.installed(self.config)

    def code_dir_for(self, slot: int, code: str) -> Path:
        """The directory bound at /code for the jail holding `slot`, holding `code`."""
        return self.code_cache.put(str(slot), code, self.config.uid_base + slot)

    def run(self, request: SandboxRequest, *, keep: bool = False) -> SandboxResult:
        """`keep` is warm mode's (sticky execution): here every step's process ends."""
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
                self._layout.wait_for_moves_early()
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
