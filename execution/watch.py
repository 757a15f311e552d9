"""Looking after running activations from one thread per process.

While a sandbox runs, the engine must renew the activation's lease (so that a dead
worker's lease lapses in seconds) and show the do step the runtime announced as
running once it has run for STEPWELL_RUNNING_MARK_SECONDS (a step that ends sooner is
recorded started and completed at once, which saves a transaction per short step).
One long-lived thread does this for every activation of the process: starting a
thread per activation cost more than the rest of a warm step's bookkeeping.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

log = logging.getLogger(__name__)

TICK_SECONDS = 0.025
MIN_TICK_SECONDS = 0.002
IDLE_AFTER_SECONDS = 1.0


class Watch:
    """One activation's timers. Use as a context manager around the sandbox run."""

    def __init__(self, mark: Callable[[dict, datetime], Any], renew: Callable[[], None]):
        # Called with the announced intent and when it came; returns the step's row or None.
        self.mark = mark
        self.renew = renew
        self.marked: Any = None
        self.intent: dict | None = None
        self.intent_at = 0.0
        self.announced_at: datetime | None = None
        self.renew_at = time.monotonic() + settings.STEPWELL_LEASE_SECONDS / 3
        self.busy = threading.Lock()  # held while a callback of this watch runs
        self.closed = False
        # The watcher's thread runs the callbacks with the activation's log ids (lib.logs).
        self.context = contextvars.copy_context()

    def __enter__(self) -> Watch:
        watcher().add(self)
        return self

    def __exit__(self, *exc) -> None:
        watcher().remove(self)
        # A callback in flight finishes first: a running mark is written before the
        # outcome is recorded, or not at all.
        with self.busy:
            self.closed = True

    def announce(self, intent: dict) -> None:
        """The runtime is about to run this do step (called from the sandbox's reader)."""
        watcher().update(self, intent)

    def due_at(self) -> float:
        if self.intent is None:
            return self.renew_at
        return min(self.renew_at, self.intent_at + settings.STEPWELL_RUNNING_MARK_SECONDS)

    def renew_if_due(self) -> None:
        """Renew the lease if due; called by the watcher's thread, never under its lock."""
        with self.busy:
            now = time.monotonic()
            if self.closed or now < self.renew_at:
                return
            # Set before the call: a renewal that fails is tried again next time, not every tick.
            self.renew_at = now + settings.STEPWELL_LEASE_SECONDS / 3
            self.context.run(self.renew)

    def mark_if_due(self) -> None:
        """Write the running mark if due; called by the watcher's thread, after renewals.

        The intent came from the jail (checked on the sandbox's reader thread, never
        here); a mark it makes fail is dropped, not tried again.
        """
        with self.busy:
            intent = self.intent
            mark_at = self.intent_at + settings.STEPWELL_RUNNING_MARK_SECONDS
            if self.closed or intent is None or time.monotonic() < mark_at:
                return
            self.intent = None
            self.marked = self.context.run(self.mark, intent, self.announced_at) or self.marked


class Watcher:
    """The thread that acts on due watches.

    While it has watches, and for IDLE_AFTER_SECONDS after its last, it looks at them
    every tick instead of being woken for each: a busy worker adds, announces and
    removes a watch every few milliseconds, and each wake of another thread competes
    with the engine's own for the GIL. Only an add to an idle watcher wakes it.
    """

    def __init__(self) -> None:
        self.watches: set[Watch] = set()
        self.wake = threading.Condition()
        self.idle = True
        self.thread = threading.Thread(target=self._run, daemon=True, name="activation-watcher")
        self.thread.start()

    def add(self, watch: Watch) -> None:
        with self.wake:
            self.watches.add(watch)
            if self.idle:
                self.idle = False
                self.wake.notify()

    def remove(self, watch: Watch) -> None:
        with self.wake:
            self.watches.discard(watch)

    def update(self, watch: Watch, intent: dict) -> None:
        with self.wake:
            watch.intent, watch.intent_at = intent, time.monotonic()
            watch.announced_at = timezone.now()  # the step started then, not when marked

    def _run(self) -> None:
        last_busy = time.monotonic()
        while True:
            with self.wake:
                now = time.monotonic()
                if self.watches:
                    last_busy = now
                elif now - last_busy >= IDLE_AFTER_SECONDS:
                    self.idle = True
                    self.wake.wait_for(lambda: not self.idle)
                    last_busy = time.monotonic()
                    continue
                due = [w for w in self.watches if w.due_at() <= now]
            if due:
                look_after(due)
            time.sleep(tick_seconds())


def look_after(due: list[Watch]) -> None:
    """Every due renewal first, then the marks: a mark (whose step name and index the
    jail chose) that fails or is slow never costs a lease. Nothing here may end the
    watcher's thread, which is every running activation's only renewer."""
    for action in [w.renew_if_due for w in due] + [w.mark_if_due for w in due]:
        try:
            action()
        except Exception:
            log.warning("looking after an activation failed", exc_info=True)
            with contextlib.suppress(Exception):
                close_old_connections()
    # Give the pooled connection back: this thread needs one only now and then.
    with contextlib.suppress(Exception):
        connection.close()


def tick_seconds() -> float:
    """Often enough that a running mark is at most half its delay late."""
    return min(TICK_SECONDS, max(MIN_TICK_SECONDS, settings.STEPWELL_RUNNING_MARK_SECONDS / 2))


_watcher: Watcher | None = None
_watcher_pid: int | None = None
_lock = threading.Lock()


def watcher() -> Watcher:
    global _watcher, _watcher_pid
    with _lock:
        # A forked worker process must start its own thread.
        if _watcher is None or _watcher_pid != os.getpid():
            _watcher, _watcher_pid = Watcher(), os.getpid()
        return _watcher
