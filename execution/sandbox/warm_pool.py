"""A worker's warm jails: at most `capacity`, least recently used evicted first, idle ones reaped.

A jail is keyed by (tenant id, code version, limits), so it never serves two tenants or
two versions; it runs one activation at a time. One that died, or that the host finds
unclean (WarmJail.fault), is replaced on next use or by the reaper, and every jail is
retired after max_seconds or max_steps.

With start_in_background, a miss does not wait for the new jail: the lease answers None
(the caller runs that activation in a fresh jail, some 25 ms against a jail start's
100-300 ms on a quiet machine) while the jail starts on a thread, ready for the key's
next activation. With many more tenants than warm jails most first activations miss;
bench/tenants.py measures both ways.
"""

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from execution.sandbox.forks import forgotten_in_forked_children
from execution.sandbox.limits import Limits
from execution.sandbox.warm_jail import WarmJail
from lib import metrics

logger = logging.getLogger(__name__)

MAX_REAP_INTERVAL_SECONDS = 5.0  # also how long a fault found only while idle may last
CLOSE_WAIT_SECONDS = 5.0
_pools: "weakref.WeakSet[JailPool]" = forgotten_in_forked_children()


@dataclass(frozen=True)
class JailKey:
    tenant: str  # the tenant's id (SandboxRequest.tenant), never its editable slug
    code_sha256: str
    limits: Limits  # a quota change means a new jail: its cgroups and mounts are sized by these


class JailPool:
    def __init__(
        self,
        capacity: int,
        idle_seconds: float,
        max_seconds: float,
        max_steps: int,
        start_in_background: bool = False,
    ) -> None:
        if capacity < 1 or idle_seconds <= 0 or max_seconds <= 0 or max_steps < 1:
            raise ValueError(
                "a warm pool needs a capacity >= 1, idle_seconds > 0, max_seconds > 0 "
                "and max_steps >= 1"
            )
        self.capacity = capacity
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self.max_steps = max_steps
        self.start_in_background = start_in_background
        self._lock = threading.Lock()
        self._idle: OrderedDict[WarmJail, tuple[JailKey, float]] = OrderedDict()  # oldest first
        self._busy: dict[WarmJail, JailKey] = {}
        self._starting = 0
        self._starting_keys: set[JailKey] = set()  # started on a thread, not yet idle
        self._stopping: set[WarmJail] = set()  # retired, their nsjail not yet gone
        self._owner_pid = os.getpid()
        self._closed = False
        self._wake = threading.Event()
        self._reaper: threading.Thread | None = None
        _pools.add(self)

    @contextlib.contextmanager
    def lease(self, key: JailKey, start: Callable[[], WarmJail]) -> Iterator[WarmJail | None]:
        """A jail of this key for one activation, started if need be; None when all are busy,
        or (start_in_background) when the key's jail is starting.

        start() may raise (WarmStartError); the pool then forgets the attempt.
        """
        jail, reserved, retired = self._take(key)
        self._stop_in_background(retired)
        if reserved and self.start_in_background:
            self._start_in_background(key, start)
            reserved = False
        if jail is None and not reserved:
            metrics.warm_fallback("starting" if self.start_in_background else "busy")
        if reserved:
            began = time.monotonic()
            try:
                jail = start()
            finally:
                self._started(key, jail)
                self._report()
            metrics.warm_jail_started(time.monotonic() - began)
        try:
            yield jail
        finally:
            if jail is not None:
                self._give_back(key, jail)
                self._report()

    def _take(self, key: JailKey) -> tuple[WarmJail | None, bool, list[WarmJail]]:
        """(an idle healthy jail of this key, or room reserved to start one, or neither;
        the jails to stop: expired, dead or evicted)."""
        with self._lock:
            self._forget_if_forked()
            retired = self._expired(time.monotonic())
            if key in self._starting_keys:
                return None, False, retired
            for jail, (jail_key, _) in list(self._idle.items()):
                if jail_key != key:
                    continue
                del self._idle[jail]
                fault = jail.fault()
                if fault is None:
                    self._busy[jail] = key
                    return jail, False, retired
                logger.warning("warm jail %s replaced: %s", jail.name, fault)
                retired.append(jail)
            if self._size() >= self.capacity:
                if not self._idle:
                    return None, False, retired
                oldest, _ = self._idle.popitem(last=False)  # least recently used
                retired.append(oldest)
            self._starting += 1
            return None, True, retired

    def _started(self, key: JailKey, jail: WarmJail | None) -> None:
        with self._lock:
            self._starting -= 1
            if jail is not None:
                self._busy[jail] = key

    def _start_in_background(self, key: JailKey, start: Callable[[], WarmJail]) -> None:
        with self._lock:
            self._starting_keys.add(key)
        threading.Thread(
            target=self._start_then_idle,
            args=(key, start),
            name="stepwell-warm-start",
            daemon=True,
        ).start()

    def _start_then_idle(self, key: JailKey, start: Callable[[], WarmJail]) -> None:
        began = time.monotonic()
        jail = None
        try:
            jail = start()
        except Exception as exc:  # the key's next activation runs fresh, or tries again
            logger.warning("warm jail for tenant %s did not start: %s", key.tenant, exc)
        finally:
            with self._lock:
                self._starting -= 1
                self._starting_keys.discard(key)
                if jail is not None:
                    self._busy[jail] = key  # _give_back makes it idle, or stops it
        if jail is not None:
            metrics.warm_jail_started(time.monotonic() - began)
            self._give_back(key, jail)
            self._report()

    def _give_back(self, key: JailKey, jail: WarmJail) -> None:
        with self._lock:
            self._busy.pop(jail, None)
            now = time.monotonic()
            keep = jail.alive and not self._closed and os.getpid() == self._owner_pid
            if keep and not self._worn_out(jail, now):
                self._idle[jail] = (key, now)
                self._start_reaper()
                return
        if os.getpid() != self._owner_pid:
            return
        if jail.alive:  # worn out, or the pool closed: its zygote exits on EOF, unwaited
            self._stop_in_background([jail])
        else:
            jail.stop()  # killed already: only its bookkeeping is left

    def _report(self) -> None:
        """The jails in service to /metrics (a gauge per process, summed over live ones)."""
        metrics.warm_jails_alive(len(self._idle) + len(self._busy))

    def _worn_out(self, jail: WarmJail, now: float) -> bool:
        return jail.steps >= self.max_steps or now - jail.started >= self.max_seconds

    def _stop_in_background(self, jails: list[WarmJail]) -> None:
        """Stopping waits for nsjail to exit; the activation that evicted a jail should not."""
        for jail in jails:
            with self._lock:
                self._stopping.add(jail)
            threading.Thread(
                target=self._stop, args=(jail,), name="stepwell-warm-stop", daemon=True
            ).start()

    def _stop(self, jail: WarmJail) -> None:
        try:
            jail.stop()
        finally:
            with self._lock:
                self._stopping.discard(jail)

    def _size(self) -> int:
        return len(self._idle) + len(self._busy) + self._starting

    def _expired(
        self, now: float, check: Callable[[WarmJail], str | None] | None = None
    ) -> list[WarmJail]:
        """Take out the idle jails idle too long or worn out, and those `check` faults."""
        cutoff = now - self.idle_seconds
        expired = []
        for jail, (_, used) in self._idle.items():
            fault = check(jail) if check is not None else None
            if fault is not None:
                logger.warning("warm jail %s stopped: %s", jail.name, fault)
            if used <= cutoff or self._worn_out(jail, now) or fault is not None:
                expired.append(jail)
        for jail in expired:
            del self._idle[jail]
        return expired

    def _forget_if_forked(self) -> None:
        """A forked worker inherits the parent's bookkeeping, not its jails: start over.

        Its copies of the jails' fds are closed, or a zygote would not see its host go.
        """
        if os.getpid() != self._owner_pid:
            for jail in [*self._idle, *self._busy]:
                jail.forget()
            self._idle.clear()
            self._busy.clear()
            self._starting = 0
            self._starting_keys.clear()
            self._owner_pid = os.getpid()
            self._reaper = None

    # Reaping

    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(target=self._reap_forever, daemon=True)
            self._reaper.name = "stepwell-warm-reaper"
            self._reaper.start()

    def _reap_forever(self) -> None:
        interval = min(self.idle_seconds / 4, MAX_REAP_INTERVAL_SECONDS)
        while not self._wake.wait(interval) and not self._closed:
            self.reap()

    def reap(self) -> int:
        """Stop the idle jails that are idle too long, worn out or unclean; how many."""
        with self._lock:
            if os.getpid() != self._owner_pid:
                return 0
            expired = self._expired(time.monotonic(), check=WarmJail.fault)
        if expired:
            self._report()
        for jail in expired:
            jail.stop()
        return len(expired)

    def evict_oldest(self) -> bool:
        """Stop the least recently used idle jail now, freeing its slot; False if none."""
        with self._lock:
            if not self._idle or os.getpid() != self._owner_pid:
                return False
            oldest, _ = self._idle.popitem(last=False)
        self._report()
        oldest.stop()
        return True

    # Looking and closing

    def jails(self) -> list[tuple[JailKey, WarmJail]]:
        """The jails in service, idle or busy."""
        with self._lock:
            idle = [(key, jail) for jail, (key, _) in self._idle.items()]
            return idle + [(key, jail) for jail, key in self._busy.items()]

    def stopping(self) -> list[WarmJail]:
        with self._lock:
            return list(self._stopping)

    def close(self) -> None:
        """Stop the idle jails now; busy ones stop when their activation ends."""
        with self._lock:
            self._closed = True
            idle = list(self._idle) if os.getpid() == self._owner_pid else []
            self._idle.clear()
        self._report()
        self._wake.set()
        for jail in idle:
            jail.stop()
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        while self.stopping() and time.monotonic() < deadline:
            time.sleep(0.01)  # jails evicted just before are stopping in the background
