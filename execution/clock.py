"""The clock: the durable backstop that wakes sleepers, retries and lost work."""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings
from django.db import close_old_connections

from execution.clock_mark import SweepMark, bounded_redis
from execution.lifecycle import due
from webhooks import deliveries

log = logging.getLogger(__name__)


def run_forever(interval: float | None = None, *, stop=lambda: False) -> None:
    interval = interval or settings.STEPWELL_CLOCK_INTERVAL
    log.info("clock running every %.2f s", interval)
    mark = SweepMark(bounded_redis())
    while not stop():
        started = time.monotonic()
        try:
            sent = due.sweep()
            if sent:
                log.debug("clock dispatched %d instances", sent)
        except Exception:
            # A database or broker outage must not end the clock; it tries again.
            log.exception("clock sweep failed")
            close_old_connections()
        else:
            record_sweep(mark)
        sweep_deliveries()
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def record_sweep(mark: SweepMark) -> None:
    """Marks the sweep for /readyz; a Redis outage only leaves the mark older."""
    try:
        mark.record()
    except (redis.RedisError, OSError) as exc:
        log.debug("could not record the clock's sweep: %s", exc)


def sweep_deliveries() -> None:
    """Send due webhook deliveries to the webhooks queue; apart from the instances'
    sweep, so that a failure of one never stops the other."""
    try:
        deliveries.sweep()
    except Exception:
        log.exception("webhook sweep failed")
        close_old_connections()
