"""Starts the platform makes on a tenant's behalf, under ids it names: a schedule's fire
(`schedule:{schedule}:{time}`) and a tenant-wide event's (`event:{workflow}:{event id}`).

They go through the one start path (workflows.start_instance: moderation, quotas,
idempotent ids); what it refuses becomes a reason to record instead of an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from execution import workflows
from execution.errors import StartError
from execution.models import Instance, SkipReason, Workflow
from execution.quotas import QuotaExceeded


@dataclass
class Started:
    """The instance started (or found under its id), or why there is none."""

    instance: Instance | None
    reason: str = ""
    detail: str = ""


def start_named(workflow: Workflow, key: str, payload: dict) -> Started:
    """Start `workflow` under `key`, held to the starts per minute quota like the API's
    starts. Raises QuotaExceeded: callers decide whether a quota skips or refuses."""
    try:
        instance, _ = workflows.start_instance(workflow, payload=payload, key=key, rate=True)
    except QuotaExceeded:
        raise
    except StartError as exc:
        held = workflow.tenant.suspended_at is not None
        reason = SkipReason.SUSPENDED if held else SkipReason.NOT_APPROVED
        return Started(None, reason, str(exc))
    if instance.workflow_id != workflow.pk:
        return Started(None, SkipReason.ID_TAKEN, f"instance id {key!r} is another workflow's")
    return Started(instance)
