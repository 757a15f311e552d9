"""Liveness and readiness (API.md, "Health"): what /healthz and /readyz answer.

Readiness really talks to PostgreSQL and Redis, each bounded by TIMEOUT_SECONDS so that
a hung service cannot hang the probe. The clock's last sweep is reported but never
fails readiness: a missing clock must not take every web process out of a load balancer.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.db import DEFAULT_DB_ALIAS, connections

from execution.clock_mark import TIMEOUT_SECONDS, bounded_redis, seconds_since_sweep

log = logging.getLogger(__name__)

OK = "ok"
CLOCK_STALE_SECONDS = 30
# Checks run here so that each is waited for at most TIMEOUT_SECONDS even when a driver
# ignores its own timeout. Bounded: a service hung for good ties up these threads, and
# later probes then time out (503) instead of starting more.
_checks = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")


def check_database() -> None:
    """Opens a new connection (not one of the pool's) and runs one query."""
    wrapper = connections[DEFAULT_DB_ALIAS]
    params = wrapper.get_connection_params()
    if wrapper.vendor == "postgresql":
        params["connect_timeout"] = math.ceil(TIMEOUT_SECONDS)
    conn = wrapper.Database.connect(**params)
    try:
        conn.cursor().execute("select 1")
    finally:
        conn.close()


def check_redis() -> float | None:
    """Pings Redis; the seconds since the clock's last sweep (None: never recorded)."""
    client = bounded_redis()
    try:
        client.ping()
        return seconds_since_sweep(client)
    finally:
        client.close()


def clock_state(since: float | None) -> str:
    if since is None:
        return "stale: no sweep recorded"
    if since > CLOCK_STALE_SECONDS:
        return f"stale: last sweep {since:.0f} s ago"
    return OK


def readiness() -> tuple[bool, dict[str, str]]:
    """(ready, {"database": ..., "redis": ..., "clock": ...}); a failed service's entry
    says "failed: ..." with the kind of failure (details go to the log, not the probe)."""
    running = {"database": _checks.submit(check_database), "redis": _checks.submit(check_redis)}
    deadline = time.monotonic() + TIMEOUT_SECONDS + 0.5
    outcome: dict[str, str] = {}
    since = None
    for name, future in running.items():
        try:
            value = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            log.warning("readiness: %s did not answer within %s s", name, TIMEOUT_SECONDS)
            outcome[name] = f"failed: no answer within {TIMEOUT_SECONDS:g} s"
        except Exception as exc:
            log.warning("readiness: %s failed: %s", name, exc)
            outcome[name] = f"failed: {type(exc).__name__}"
        else:
            outcome[name] = OK
            if name == "redis":
                since = value
    outcome["clock"] = clock_state(since) if outcome["redis"] == OK else "unknown: Redis failed"
    return outcome["database"] == OK and outcome["redis"] == OK, outcome
