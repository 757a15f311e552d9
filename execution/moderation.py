"""Staff decisions on tenant code and tenants, each one written to the audit log.

Rejection, quarantine and suspension pause what they stop and mark why
(`paused_reason`), so lifting them resumes exactly those instances and leaves the ones
a tenant paused; the tenant cannot resume them (workflows.resume). The claim holds back
whatever slipped past (lifecycle.leases.claim): a version that is not approved never runs.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from execution import workflows
from execution.lifecycle import states
from execution.models import CodeVersion, Instance
from tenants.audit import audit
from tenants.models import Tenant

# The pauses a verdict on a version makes, which approving it lifts.
VERDICTS = tuple(Instance.HELD_BY_VERSION.values())


class ModerationError(ValueError):
    pass


def require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ModerationError("a reason is required: the tenant sees it")
    return reason


@transaction.atomic
def review(version: CodeVersion, status: str, *, actor, reason: str) -> CodeVersion:
    """Approve, reject or quarantine a version, with a reason the tenant sees."""
    if status not in CodeVersion.Status.values or status == CodeVersion.Status.PENDING_REVIEW:
        raise ModerationError(f"cannot set a version to {status!r}")
    reason = require_reason(reason)
    version = CodeVersion.objects.select_for_update().get(pk=version.pk)
    before = version.status
    version.status = status
    version.status_reason = reason
    version.reviewed_by = actor
    version.reviewed_at = timezone.now()
    version.save(update_fields=["status", "status_reason", "reviewed_by", "reviewed_at"])
    instances = Instance.objects.filter(version=version)
    held_by = version.pause_reason()
    if held_by:
        changed = {"paused": pause_all(instances, held_by)}
        # Paused for an earlier verdict on this version: now for this one, which lifts them.
        states.repause(instances, VERDICTS, held_by)
    else:
        changed = {"resumed": resume_all(instances, *VERDICTS)}
    audit(
        f"version.{status}",
        actor=actor,
        tenant=version.tenant,
        target=version,
        reason=reason,
        sha256=version.sha256,
        workflow=version.workflow.name,
        before=before,
        **changed,
    )
    return version


@transaction.atomic
def suspend_tenant(tenant: Tenant, *, actor, reason: str) -> Tenant:
    """Pause every active instance and stop every token; nothing is lost."""
    reason = require_reason(reason)
    Tenant.objects.filter(pk=tenant.pk).update(suspended_at=timezone.now())
    tenant.refresh_from_db()
    paused = pause_all(Instance.objects.for_tenant(tenant), Instance.PauseReason.SUSPENSION)
    audit(
        "tenant.suspended", actor=actor, tenant=tenant, target=tenant, reason=reason, paused=paused
    )
    return tenant


@transaction.atomic
def unsuspend_tenant(tenant: Tenant, *, actor, reason: str = "") -> Tenant:
    Tenant.objects.filter(pk=tenant.pk).update(suspended_at=None)
    tenant.refresh_from_db()
    resumed = resume_all(Instance.objects.for_tenant(tenant), Instance.PauseReason.SUSPENSION)
    audit(
        "tenant.unsuspended",
        actor=actor,
        tenant=tenant,
        target=tenant,
        reason=reason,
        resumed=resumed,
    )
    return tenant


def staff_terminate(instance: Instance, *, actor, reason: str) -> Instance:
    reason = require_reason(reason)
    with transaction.atomic():
        instance = workflows.terminate(instance)
        audit(
            "instance.terminated",
            actor=actor,
            tenant=instance.tenant,
            target=instance,
            reason=reason,
            key=instance.key,
        )
    return instance


def pause_all(instances, reason: str) -> int:
    count = 0
    for instance in instances.filter(status__in=Instance.ACTIVE_STATUSES):
        try:
            workflows.pause(instance, reason=reason)
            count += 1
        except workflows.StateConflict:
            pass  # it ended meanwhile
    return count


def resume_all(instances, *reasons: str) -> int:
    """Lift the pauses `reasons` of these instances; one still held by another decision
    stays paused, for that one (workflows.lift)."""
    count = 0
    for instance in instances.filter(status=Instance.Status.PAUSED, paused_reason__in=reasons):
        count += workflows.lift(instance, reasons)
    return count
