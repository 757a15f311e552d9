"""The audit log: what it holds for one tenant, for its owners to read in the console,
and the entries for staff changes to who belongs to a tenant.

Staff grant, change and remove memberships in the Django admin. Who may act for a
tenant is as much a staff decision as a suspension, so each one is written like the
others (through `execution.moderation.audit`), and the tenant's owners see it.
"""

from __future__ import annotations

from django.db.models import QuerySet

from execution import moderation
from tenants.models import AuditLog, Membership, Tenant


def audit_log_for(tenant: Tenant) -> QuerySet[AuditLog]:
    """The tenant's own audit entries, newest first, with who did each one."""
    return (
        AuditLog.objects.filter(tenant=tenant)
        .select_related("actor", "actor_token")
        .order_by("-created_at", "-id")
    )


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
    moderation.audit(action, actor=actor, tenant=membership.tenant, target=membership, **details)


def audit_membership_removed(membership: Membership, actor) -> None:
    """Written before the row goes, while it still has its id."""
    moderation.audit(
        "membership.removed",
        actor=actor,
        tenant=membership.tenant,
        target=membership,
        **membership_details(membership),
    )
