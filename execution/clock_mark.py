"""The clock's last sweep, kept in Redis so that /readyz can tell whether a clock runs.

Any clock's sweep counts: several nodes share one Redis, and one live clock is enough.
The clock writes at most once a second, whatever its interval, so the mark costs one
small SET a second and no database row.
"""

from __future__ import annotations

import time

import redis
from django.conf import settings

KEY = "stepwell:clock:last-sweep"
RECORD_EVERY_SECONDS = 1.0
# A hung Redis must hold neither the clock nor a readiness probe for long.
TIMEOUT_SECONDS = 2.0


def bounded_redis(url: str | None = None, timeout: float = TIMEOUT_SECONDS) -> redis.Redis:
    """A client of `url` (settings.REDIS_URL by default) whose connects and replies
    give up after `timeout` seconds."""
    return redis.Redis.from_url(
        url or settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout
    )


class SweepMark:
    """Records the clock's sweeps; a clock process keeps one."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._recorded = float("-inf")  # time.monotonic() of the last write

    def record(self) -> None:
        now = time.monotonic()
        if now - self._recorded < RECORD_EVERY_SECONDS:
            return
        # Counted before the write: a Redis that fails is tried once a second, not
        # at every sweep.
        self._recorded = now
        self.client.set(KEY, repr(time.time()))


def seconds_since_sweep(client: redis.Redis) -> float | None:
    """How long ago some clock last swept; None when none ever recorded a sweep."""
    raw = client.get(KEY)
    if raw is None:
        return None
    try:
        return max(0.0, time.time() - float(raw))
    except ValueError:
        return None
