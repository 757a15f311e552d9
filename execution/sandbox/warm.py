"""Warm mode: one long-lived jail per (tenant id, code version, limits), a forked child per step.

Same interface and results as fresh mode. When no warm jail can be had (every one busy
and the pool full, every slot warm jails may hold on this machine taken and none of this
worker's idle, or a zygote that will not come up because the tenant's module-level code
kills it or leaves processes), the step runs in a fresh jail instead: slower, never
weaker. A jail the host finds unclean between steps is killed and replaced; any jail is
replaced after STEPWELL_WARM_MAX_JAIL_SECONDS or _STEPS.
"""

import contextlib
import dataclasses
import itertools
import logging
import os
import threading
import time

from django.conf import settings

from execution.sandbox.cgroups import Layout
from execution.sandbox.config import SandboxConfig
from execution.sandbox.fresh import FreshSandbox
from execution.sandbox.job import Refused, open_job, watch_notes
from execution.sandbox.kept import KeptChild, result_of
from execution.sandbox.limits import Limits
from execution.sandbox.protocol import dumps_secrets
from execution.sandbox.result import SandboxRequest, SandboxResult, Status, failure
from execution.sandbox.warm_jail import NoFreeSlot, WarmJail, WarmStartError
from execution.sandbox.warm_pool import JailKey, JailPool
from execution.sandbox.warm_spare import SpareJail
from execution.sandbox.warm_step import StepRun
from lib import metrics

logger = logging.getLogger(__name__)

DEFAULT_JAILS_PER_WORKER = 4
DEFAULT_IDLE_SECONDS = 300.0
DEFAULT_MAX_SECONDS = 600.0
DEFAULT_MAX_STEPS = 1000
COLD_SECONDS = 60.0  # after a jail of a key failed to start, run that key fresh this long
_jail_numbers = itertools.count()


class WarmSandbox:
    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        jails_per_worker: int = DEFAULT_JAILS_PER_WORKER,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        fresh: FreshSandbox | None = None,
        jails_per_machine: int | None = None,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        max_steps: int = DEFAULT_MAX_STEPS,
        start_in_background: bool = False,
        spare_jail: bool = False,
    ) -> None:
        self.config = config or SandboxConfig.from_settings()
        self.fresh = fresh or FreshSandbox(self.config)
        self.pool = JailPool(
            jails_per_worker, idle_seconds, max_seconds, max_steps, start_in_background
        )
        # Warm jails hold the top slots only, so the rest always serve fresh jails; from
        # the top down, as fresh jails pick at random and leave low slots likelier free.
        count = self.config.slots
        cap = min(jails_per_machine or max(1, count // 2), count)
        self.slot_range = range(count - 1, count - 1 - cap, -1)
        self._cold: dict[JailKey, float] = {}
        self._cold_lock = threading.Lock()
        self._layout: Layout | None = None
        # A jail launched ahead for the next miss (warm_spare.py): its code dir is empty.
        self.spare = (
            SpareJail(lambda limits: self._new_jail(limits, ""), idle_seconds)
            if spare_jail
            else None
        )

    @classmethod
    def from_settings(cls, fresh: FreshSandbox | None = None) -> "WarmSandbox":
        return cls(
            fresh.config if fresh else None,
            jails_per_worker=settings.STEPWELL_WARM_JAILS_PER_WORKER,
            idle_seconds=settings.STEPWELL_WARM_IDLE_SECONDS,
            fresh=fresh,
            jails_per_machine=settings.STEPWELL_WARM_JAILS_PER_MACHINE,
            max_seconds=settings.STEPWELL_WARM_MAX_JAIL_SECONDS,
            max_steps=settings.STEPWELL_WARM_MAX_JAIL_STEPS,
            start_in_background=settings.STEPWELL_WARM_START_IN_BACKGROUND,
            spare_jail=settings.STEPWELL_WARM_SPARE_JAIL,
        )

    def prepare(self) -> None:
        """The fresh sandbox's start-up (cgroup parents, sweep, directories), then the layout."""
        self.fresh.prepare()
        self.config = self.fresh.config  # with the runtime installed in the state dir
        if self._layout is None:
            self._layout = Layout.detect(self.config.cgroup_root)

    def close(self) -> None:
        self.pool.close()
        if self.spare is not None:
            self.spare.close()

    def run(self, request: SandboxRequest, *, keep: bool = False) -> SandboxResult:
        """With `keep`, a workflow's child that completes a do step may stay alive, paused:
        the result's `kept` (KeptChild) then holds it and its jail, for the caller to resume
        with the next step or close."""
        try:
            job_bytes, started = open_job(request, self.prepare, secrets=False)
        except Refused as refused:
            return refused.result
        try:
            return self._run(request, job_bytes, keep and request.mode == "workflow")
        except Exception as exc:  # the engine sees a sandbox failure, never an exception
            logger.exception("warm sandbox run failed for tenant %s", request.tenant)
            message = f"the sandbox failed: {exc}"
            return failure(Status.SANDBOX_FAILURE, "SandboxFailure", message, started)

    def _run(self, request: SandboxRequest, job_bytes: bytes, keep: bool) -> SandboxResult:
        key = JailKey(request.tenant, request.code_sha256, request.limits)
        if self._is_cold(key):
            metrics.warm_fallback("cold")
            return self.fresh.run(request)
        try:
            step, kept = self._activate(key, request, job_bytes, keep)
            if step is not None and not step.delivered:
                # The jail died between steps, before the request reached it: nothing of
                # the step ran, so it runs now in a replacement.
                step, kept = self._activate(key, request, job_bytes, keep)
            if step is None:  # every jail busy and the pool full, or the key's starting
                return self.fresh.run(request)
        except WarmStartError as exc:
            logger.warning("no warm jail for tenant %s, running fresh: %s", request.tenant, exc)
            if isinstance(exc, NoFreeSlot):
                metrics.warm_fallback("no_slot")
            else:
                metrics.warm_fallback("failed")  # and the key is cold (_start_or_mark_cold)
            return self.fresh.run(request)
        result = result_of(step, request)
        return dataclasses.replace(result, kept=kept) if kept is not None else result

    def _activate(
        self, key: JailKey, request: SandboxRequest, job_bytes: bytes, keep: bool
    ) -> tuple[StepRun | None, KeptChild | None]:
        """One step in a jail of this key (None when none can be had), and the kept child
        that holds the jail's lease on, if the step left one."""
        with contextlib.ExitStack() as lease:
            jail = lease.enter_context(
                self.pool.lease(key, lambda: self._start_or_mark_cold(key, request))
            )
            if jail is None:
                return None, None
            secrets = dumps_secrets(request.secrets) if request.secrets else None
            step = jail.activate(job_bytes, watch_notes(request.on_progress), secrets, keep=keep)
            if not step.kept:
                return step, None
            return step, KeptChild(jail, lease.pop_all(), step.run.cpu_seconds)

    def _start_or_mark_cold(self, key: JailKey, request: SandboxRequest) -> WarmJail:
        """A jail whose start failed (not for want of a slot) makes its key run fresh a
        while: here too, as a jail started in the background fails where no one sees it."""
        try:
            return self._start_jail_in_a_slot(request)
        except WarmStartError as exc:
            if not isinstance(exc, NoFreeSlot):
                self._mark_cold(key)
            raise

    def _start_jail_in_a_slot(self, request: SandboxRequest) -> WarmJail:
        """Idle warm jails hold slots that fresh jails would wait for: give one back first."""
        try:
            return self._start_jail(request)
        except NoFreeSlot:
            if not self.pool.evict_oldest() and not (self.spare and self.spare.drop()):
                raise
            return self._start_jail(request)

    def _start_jail(self, request: SandboxRequest) -> WarmJail:
        """The spare bound to this tenant if it fits, else a new jail; then the next spare
        (only after a start that worked: after NoFreeSlot it would take the slot that
        evicting an idle jail frees for this one)."""
        if self.spare is not None and (jail := self.spare.take(request.limits)):
            jail.bind(lambda slot: self.fresh.code_dir_for(slot, request.code))
        else:
            jail = self._new_jail(request.limits, request.code)
            jail.start()
        if self.spare is not None:
            self.spare.launch(request.limits)
        return jail

    def _new_jail(self, limits: Limits, code: str) -> WarmJail:
        return WarmJail(
            self.config,
            self._layout,
            self.fresh.slots,
            self.slot_range,
            lambda slot: self.fresh.code_dir_for(slot, code),
            limits,
            f"job-{os.getpid()}-warm{next(_jail_numbers)}",
            self.fresh.network,
        )

    def _is_cold(self, key: JailKey) -> bool:
        with self._cold_lock:
            until = self._cold.get(key)
            return until is not None and until > time.monotonic()

    def _mark_cold(self, key: JailKey) -> None:
        now = time.monotonic()
        with self._cold_lock:
            for stale in [k for k, until in self._cold.items() if until <= now]:
                del self._cold[stale]
            self._cold[key] = now + COLD_SECONDS

    # For tests and diagnostics

    def _all_jails(self) -> list[WarmJail]:
        spare = [self.spare.jail()] if self.spare is not None and self.spare.jail() else []
        return [jail for _, jail in self.pool.jails()] + self.pool.stopping() + spare

    def zygote_pids(self) -> set[int]:
        """Host pids of the zygotes of this sandbox's jails, in service or being stopped."""
        return {pid for jail in self._all_jails() if (pid := jail.zygote_pid())}

    def cgroup_names(self) -> set[str]:
        return {name for jail in self._all_jails() for name in jail.cgroup_names()}
