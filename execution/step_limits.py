"""What one activation may use in the sandbox, under its tenant's quota.

Here, on the execution side, rather than on the Quota model: tenants imports nothing of
execution, and the engine is the only one to ask.
"""

from __future__ import annotations

from django.conf import settings

from execution.sandbox import Limits
from tenants.models import Quota

STEP_TIMEOUT_MARGIN_SECONDS = 2


def limits_for(quota: Quota, timeout_seconds: float | None = None) -> Limits:
    """The sandbox limits of one activation under this quota."""
    wall = min(
        timeout_seconds or quota.step_timeout_seconds,
        quota.step_timeout_seconds,
        settings.STEPWELL_MAX_STEP_TIMEOUT_SECONDS,  # Celery's hard time limit is above it
    )
    return Limits(
        memory_bytes=quota.step_memory_mb * 2**20,
        cpu_seconds=quota.step_cpu_seconds,
        # A margin over the step timeout lets the runtime's own timer end a slow
        # step cleanly, with its logs, before the host has to kill the jail.
        wall_seconds=wall + STEP_TIMEOUT_MARGIN_SECONDS,
        pids=quota.step_pids,
        output_bytes=quota.step_output_bytes,
        # The runtime's outcome wraps the step result and its logs.
        result_bytes=quota.step_result_bytes + quota.step_output_bytes + 64 * 1024,
        network=quota.network,
    )
