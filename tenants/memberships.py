"""Which of a user's memberships they act under: the tenant they are looking at.

A user may belong to several tenants. The console's tenant switcher stores the chosen
slug in the session; without a choice the user's first membership is current. The
console's views and the WebSocket consumers both ask here, so none can forget the
membership check.
"""

from __future__ import annotations

from tenants.models import Membership
from tenants.staff_view import staff_view

SESSION_KEY = "stepwell_tenant"


def memberships_of(user):
    return Membership.objects.filter(user=user, tenant__suspended_at__isnull=True).select_related(
        "tenant"
    )


def find_membership(user, slug: str | None = None, session=None) -> Membership | None:
    """The membership to use: `slug` if given, else the session's choice, else the first."""
    if user is None or not user.is_authenticated:
        return None
    viewed = staff_view(user, session)  # a staff member reading this tenant's console
    if viewed is not None and slug in (None, "", viewed.tenant.slug):
        return viewed
    memberships = memberships_of(user).order_by("tenant__slug")
    if slug:
        return memberships.filter(tenant__slug=slug).first()
    chosen = session.get(SESSION_KEY) if session is not None else None
    if chosen:
        membership = memberships.filter(tenant__slug=chosen).first()
        if membership is not None:
            return membership
    return memberships.first()
