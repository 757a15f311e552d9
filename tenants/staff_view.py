"""Staff looking at a tenant's console read-only.

Staff may open any tenant's console (console.staff does it, and audits it): the session
then names that tenant, and the staff member acts there as an unsaved viewer
membership, which every console view and WebSocket already treats as read-only. The
console refuses any other method than a read in this view, whatever the view
(console.tenancy.tenant_required).
"""

from __future__ import annotations

from tenants.models import Membership, Tenant

STAFF_VIEW_KEY = "stepwell_staff_view"


def staff_view(user, session) -> Membership | None:
    """The read-only membership of the tenant a staff member opened, if any (not saved)."""
    tenant_id = session.get(STAFF_VIEW_KEY) if session is not None else None
    if not tenant_id or not (user.is_active and user.is_staff):
        return None
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return None
    return Membership(tenant=tenant, user=user, role=Membership.Role.VIEWER)


def is_staff_view(membership: Membership) -> bool:
    return membership.pk is None


def open_staff_view(session, tenant: Tenant) -> None:
    session[STAFF_VIEW_KEY] = tenant.pk


def close_staff_view(session) -> int | None:
    """Ends the staff view; returns the id of the tenant it showed (None if none)."""
    return session.pop(STAFF_VIEW_KEY, None)
