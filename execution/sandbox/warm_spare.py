"""A worker process's spare warm jail: launched ahead, bound to the next tenant that misses.

Most of a warm jail's start does not depend on the tenant: nsjail, the interpreter and
the runtime's imports (bench/jail_start.py: all but some 2.5 ms of 45 ms on a quiet
machine). A spare is launched on a thread up to the zygote's wait for GO
(WarmJail.launch), with the limits of the last miss and an empty tenant module in its
slot's code dir; the next miss with those limits writes its tenant's code there and
binds it (WarmJail.bind), and from then on it is that tenant's jail like any other,
while the next spare launches. No tenant code runs in a jail before it is bound, so
every jail stays single-tenant (SANDBOX.md). A spare holds one warm slot and some 5.5 MiB
(its job cgroup and nsjail, bench/README.md); one idle longer than the warm jails' idle
time is stopped then, by a timer, or when next looked at. /metrics has the spares
waiting (stepwell_warm_spare_jails) and what became of each (..._jail_ends).
"""

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable

from execution.sandbox.forks import forgotten_in_forked_children
from execution.sandbox.limits import Limits
from execution.sandbox.warm_jail import WarmJail, WarmStartError
from lib import metrics

logger = logging.getLogger(__name__)

JOIN_SECONDS = 10.0  # close() waits this long for a launch under way
_spares: "weakref.WeakSet[SpareJail]" = forgotten_in_forked_children()


def _stop_in_background(jail: WarmJail) -> None:
    """Its zygote exits on EOF; the step that found the spare unusable should not wait."""
    threading.Thread(target=jail.stop, name="stepwell-warm-stop", daemon=True).start()


class SpareJail:
    def __init__(self, make: Callable[[Limits], WarmJail], idle_seconds: float) -> None:
        self._make = make  # limits -> a WarmJail (not launched) whose code dir is empty
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._jail: WarmJail | None = None
        self._launched_at = 0.0
        self._thread: threading.Thread | None = None
        self._launching_limits: Limits | None = None
        self._closed = False
        self._owner_pid = os.getpid()
        self._expiry: threading.Timer | None = None
        _spares.add(self)

    def take(self, limits: Limits) -> WarmJail | None:
        """The spare, launched and still waiting, if it has these limits; else None, and
        a spare that does not fit is stopped now (a few ms), so that its slot is free for
        the jail the caller starts instead. A spare of these limits still launching is
        waited for: it is further on than a start begun now, which would also share the
        cores with it."""
        with self._lock:
            self._forget_if_forked()
            thread, launching = self._thread, self._launching_limits
        if thread is not None and thread.is_alive() and launching == limits:
            thread.join(JOIN_SECONDS)
        with self._lock:
            self._forget_if_forked()
            jail, self._jail = self._jail, None
            fresh = time.monotonic() - self._launched_at < self.idle_seconds
        if jail is None:
            return None
        self._report()
        if jail.limits == limits and fresh and jail.waiting():
            metrics.warm_spare_ended("bound")
            return jail
        metrics.warm_spare_ended("unfit" if fresh else "expired")
        jail.stop()
        return None

    def drop(self) -> bool:
        """Stop the spare to free its slot for a jail in service, now (a few ms: the
        caller claims a slot next); False if there is none."""
        with self._lock:
            self._forget_if_forked()
            jail, self._jail = self._jail, None
        if jail is not None:
            self._report()
            metrics.warm_spare_ended("dropped")
            jail.stop()
        return jail is not None

    def expire(self) -> bool:
        """Stop the spare if it has waited longer than the idle time; whether it did."""
        with self._lock:
            self._forget_if_forked()
            jail = self._jail
            if jail is None or time.monotonic() - self._launched_at < self.idle_seconds:
                return False
            self._jail = None
        self._report()
        metrics.warm_spare_ended("expired")
        jail.stop()
        return True

    def launch(self, limits: Limits) -> None:
        """Launch a spare with these limits on a thread, unless one is there or coming."""
        with self._lock:
            self._forget_if_forked()
            launching = self._thread is not None and self._thread.is_alive()
            if self._closed or launching:
                return
            if self._jail is not None and self._jail.limits == limits:
                return
            old, self._jail = self._jail, None
            self._launching_limits = limits
            self._thread = threading.Thread(
                target=self._launch, args=(limits,), name="stepwell-warm-spare", daemon=True
            )
            self._thread.start()
        if old is not None:
            self._report()
            metrics.warm_spare_ended("unfit")
            _stop_in_background(old)

    def _launch(self, limits: Limits) -> None:
        jail = None
        try:
            jail = self._make(limits)
            jail.launch()
        except WarmStartError as exc:  # every slot taken, or the machine is unwell
            logger.info("no spare warm jail: %s", exc)
            jail = None
        except Exception:
            logger.exception("the spare warm jail failed to launch")
            jail = None
        with self._lock:
            keep = jail is not None and not self._closed and os.getpid() == self._owner_pid
            if keep:
                self._jail, self._launched_at = jail, time.monotonic()
                self._expire_later()
        if keep:
            self._report()
        elif jail is not None:
            jail.stop()

    def _expire_later(self) -> None:
        """A timer (one at a time, under the lock) that stops the spare once it has
        waited the idle time, so that a worker that stops missing does not keep it."""
        if self._expiry is not None:
            self._expiry.cancel()
        # A little after the idle time, so that expire() finds the spare old enough.
        self._expiry = threading.Timer(self.idle_seconds + 0.05, self.expire)
        self._expiry.name = "stepwell-warm-spare-expiry"
        self._expiry.daemon = True
        self._expiry.start()

    def _report(self) -> None:
        with self._lock:
            waiting = 1 if self._jail is not None and os.getpid() == self._owner_pid else 0
        metrics.warm_spares_waiting(waiting)

    def close(self) -> None:
        """Stop the spare, after any launch under way."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None and os.getpid() == self._owner_pid:
            thread.join(JOIN_SECONDS)
        with self._lock:
            jail, self._jail = self._jail, None
            if self._expiry is not None:
                self._expiry.cancel()
        if jail is not None and os.getpid() == self._owner_pid:
            self._report()
            jail.stop()

    def jail(self) -> WarmJail | None:
        """The spare waiting now, if any (for tests and diagnostics)."""
        with self._lock:
            return self._jail

    def _forget_if_forked(self) -> None:
        """A forked worker inherits the parent's spare, not its jail: its copies of the
        jail's fds are closed, so the zygote still sees its host go."""
        if os.getpid() != self._owner_pid:
            if self._jail is not None:
                self._jail.forget()
            self._jail = None
            self._thread = None
            self._expiry = None  # the parent's timer thread did not come along
            self._owner_pid = os.getpid()
