"""The audit log: how an entry is written, what it holds for one tenant (for its owners
to read in the console), and the entries for staff changes to who belongs to a tenant.

Tenants own the log, so every decision is written here, whichever app made it:
execution.moderation's verdicts and suspensions, the admin's quota and token changes.
Staff grant, change and remove memberships in the Django admin. Who may act for a
tenant is as much a staff decision as a suspension, so each one is written like the
others, and the tenant's owners see it.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from lib import rows
from tenants.models import ApiToken, AuditLog, Membership, Tenant


def audit(action: str, **fields) -> AuditLog:
    """Write an entry: who (`actor`, a user, or `actor_token`), for which `tenant`, on
    what `target`, why (`reason`), and any other keyword as its details (audit_entry)."""
    entry = audit_entry(action, **fields)
    rows.insert(entry)  # one statement written once: starts and events write entries too
    return entry


def audit_entry(
    action: str,
    *,
    actor,
    tenant: Tenant | None,
    target,
    reason: str = "",
    actor_token: ApiToken | None = None,
    target_type: str = "",
    **details,
) -> AuditLog:
    """`audit`'s entry, unsaved: for a hot path that stores it in a statement of its own
    (an instance's start, execution.workflows)."""
    return AuditLog(
        tenant=tenant,
        actor=actor,
        actor_token=actor_token,
        action=action,
        target_type=target_type or (type(target).__name__.lower() if target is not None else ""),
        target_id=str(getattr(target, "pk", "") or ""),
        reason=reason,
        details=details,
    )


def request_actor(request) -> dict:
    """Who acts in a request, as `audit`'s keywords: the API token (`request.auth`) for
    an API call, else the signed-in user. `audit(..., **request_actor(request))`."""
    token = getattr(request, "auth", None)
    if isinstance(token, ApiToken):
        return {"actor": None, "actor_token": token}
    user = getattr(request, "user", None)
    return {"actor": user if user is not None and user.is_authenticated else None}


def audit_token(action: str, token: ApiToken, *, actor=None, actor_token=None) -> AuditLog:
    """A token made or revoked, in the console, the API or the admin."""
    return audit(
        action,
        tenant=token.tenant,
        actor=actor,
        actor_token=actor_token,
        target=token,
        target_type="token",
        name=token.name,
        prefix=token.prefix,
        read_only=token.read_only,
    )


def audit_log_for(tenant: Tenant) -> QuerySet[AuditLog]:
    """The tenant's own audit entries, newest first, with who did each one."""
    return (
        AuditLog.objects.filter(tenant=tenant)
        .select_related("actor", "actor_token")
        .order_by("-created_at", "-id")
    )


def filtered_log(
    tenant: Tenant,
    *,
    actor: str = "",
    action: str = "",
    since: date | None = None,
    until: date | None = None,
) -> QuerySet[AuditLog]:
    """The tenant's entries by who (a user name, or a token's name or prefix), by action
    (exact, or every action under a prefix ending in '.'), and by day (UTC, inclusive)."""
    entries = audit_log_for(tenant)
    if actor:
        entries = entries.filter(
            Q(actor__username=actor) | Q(actor_token__name=actor) | Q(actor_token__prefix=actor)
        )
    if action:
        entries = (
            entries.filter(action__startswith=action)
            if action.endswith(".")
            else entries.filter(action=action)
        )
    if since:
        entries = entries.filter(created_at__gte=day_start(since))
    if until:
        entries = entries.filter(created_at__lt=day_start(until + timedelta(days=1)))
    return entries


def day_start(day: date) -> datetime:
    return datetime.combine(day, dt_time.min, tzinfo=UTC)


def membership_details(membership: Membership) -> dict[str, str]:
    return {"user": membership.user.get_username(), "role": membership.role}


def audit_membership_saved(membership: Membership, actor, before: Membership | None) -> None:
    """`membership.granted` for a new membership (`before` is None); for an edit,
    `membership.changed` with each changed field as [old, new] and the user named;
    nothing when nothing changed."""
    new = membership_details(membership)
    if before is None:
        action, details = "membership.granted", new
    else:
        old = membership_details(before)
        changes = {name: [old[name], new[name]] for name in new if old[name] != new[name]}
        if not changes:
            return
        action, details = "membership.changed", {"user": new["user"], **changes}
    audit(action, actor=actor, tenant=membership.tenant, target=membership, **details)


def audit_membership_removed(membership: Membership, actor) -> None:
    """Written before the row goes, while it still has its id."""
    audit(
        "membership.removed",
        actor=actor,
        tenant=membership.tenant,
        target=membership,
        **membership_details(membership),
    )


def sweep_old_entries(
    now: datetime | None = None, *, batch: int = 1000, seconds: float = 0.5
) -> int:
    """Delete the entries older than STEPWELL_AUDIT_RETENTION_DAYS, a batch per
    transaction, for about `seconds` at most (the clock comes back for the rest);
    returns how many went. Several clocks may sweep at once: each skips the rows
    another is deleting."""
    days = settings.STEPWELL_AUDIT_RETENTION_DAYS
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deadline = time.monotonic() + seconds
    deleted = 0
    while True:
        gone = delete_batch(cutoff, batch)
        deleted += gone
        if gone < batch or time.monotonic() >= deadline:
            return deleted


@transaction.atomic
def delete_batch(cutoff: datetime, batch: int) -> int:
    if connection.vendor == "postgresql":
        # What the table's trigger (migration 0007) lets delete; until this transaction ends.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL stepwell.audit_retention = 'on'")
    old = (
        AuditLog.objects.filter(created_at__lt=cutoff)
        .order_by("id")
        .select_for_update(skip_locked=True)
        .values_list("pk", flat=True)[:batch]
    )
    return AuditLog.objects.filter(pk__in=list(old)).delete()[0]
