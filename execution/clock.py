"""The clock: the durable backstop that wakes sleepers, retries and lost work, and fires
schedules."""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings
from django.db import close_old_connections

from execution import schedules
from execution.clock_mark import SweepMark, bounded_redis
from execution.lifecycle import due

log = logging.getLogger(__name__)


def run_forever(interval: float | None = None, *, stop=lambda: False) -> None:
    interval = interval or settings.STEPWELL_CLOCK_INTERVAL
    log.info("clock running every %.2f s", interval)
    mark = SweepMark(bounded_redis())
    while not stop():
        started = time.monotonic()
        try:
            sent = due.sweep()
            fired = schedules.sweep()
            if fired or sent:
                log.debug("clock fired %d schedules, dispatched %d instances", fired, sent)
        except Exception:
            # A database or broker outage must not end the clock; it tries again.
            log.exception("clock sweep failed")
            close_old_connections()
        else:
            record_sweep(mark)
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def record_sweep(mark: SweepMark) -> None:
    """Marks the sweep for /readyz; a Redis outage only leaves the mark older."""
    try:
        mark.record()
    except (redis.RedisError, OSError) as exc:
        log.debug("could not record the clock's sweep: %s", exc)
