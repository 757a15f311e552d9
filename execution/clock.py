"""The clock: the durable backstop that wakes sleepers, retries and lost work, and fires
schedules."""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings
from django.db import close_old_connections

from execution import retention, schedules
from execution.clock_mark import SweepMark, bounded_redis
from execution.lifecycle import due
from tenants.audit import sweep_old_entries
from webhooks import deliveries

log = logging.getLogger(__name__)

# Each turn deletes for at most about half a second, so that timers are never held up
# for long: some 10,000 entries a turn, over 3 million an hour.
AUDIT_RETENTION_EVERY_SECONDS = 10.0


def run_forever(interval: float | None = None, *, stop=lambda: False) -> None:
    interval = interval or settings.STEPWELL_CLOCK_INTERVAL
    log.info("clock running every %.2f s", interval)
    mark = SweepMark(bounded_redis())
    pace = retention.Pace(
        settings.STEPWELL_RETENTION_INTERVAL, settings.STEPWELL_RETENTION_BUDGET_SECONDS
    )
    audit_due = time.monotonic()
    while not stop():
        started = time.monotonic()
        if started >= audit_due:
            audit_due = started + AUDIT_RETENTION_EVERY_SECONDS
            sweep_audit_log()
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
            sweep_retention(pace)
        sweep_deliveries()
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def sweep_retention(pace: retention.Pace) -> None:
    """Delete expired instances when it is time; a failure waits for the next interval."""
    try:
        swept = pace.run_if_due()
    except Exception:
        log.exception("retention sweep failed")
        close_old_connections()
        return
    if swept is not None and swept.deleted:
        log.info("retention deleted %d finished instances", swept.deleted)


def sweep_audit_log() -> None:
    """The audit log's retention; a failure waits for the next turn, as a sweep does."""
    try:
        gone = sweep_old_entries()
        if gone:
            log.info("deleted %d audit log entries past their retention", gone)
    except Exception:
        log.exception("the audit log's retention sweep failed")
        close_old_connections()


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
