"""The clock: the durable backstop that wakes sleepers, retries and lost work."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import close_old_connections

from execution.lifecycle import due

log = logging.getLogger(__name__)


def run_forever(interval: float | None = None, *, stop=lambda: False) -> None:
    interval = interval or settings.STEPWELL_CLOCK_INTERVAL
    log.info("clock running every %.2f s", interval)
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
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
