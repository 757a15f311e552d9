"""The audit log: how an entry is written, what it holds for one tenant (for its owners
to read in the console), and the entries for staff changes to who belongs to a tenant.

Tenants own the log, so every decision is written here, whichever app made it:
execution.moderation's verdicts and suspensions, the admin's quota and token changes.
Staff grant, change and remove memberships in the Django admin. Who may act for a
tenant is as much a staff decision as a suspension, so each one is written like the
others, and the tenant's owners see it.
"""

from __future__ import annotations

from django.db.models import QuerySet

from tenants.models import ApiToken, AuditLog, Membership, Tenant


def audit(
    action: str,
    *,
    actor,
    tenant: Tenant | None,
    target,
    reason: str = "",
    actor_token: ApiToken | None = None,
    **details,
):
    return AuditLog.objects.create(
        tenant=tenant,
        actor=actor,
        actor_token=actor_token,
        action=action,
        target_type=type(target).__name__.lower() if target is not None else "",
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
    return AuditLog.objects.create(
        tenant=token.tenant,
        actor=actor,
        actor_token=actor_token,
        action=action,
        target_type="token",
        target_id=str(token.pk),
        details={"name": token.name, "prefix": token.prefix},
    )


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
