"""The console's current tenant: the one a signed-in user is looking at.

A user may belong to several tenants. The tenant switcher stores the chosen slug in
the session; without a choice the user's first membership is current. Every console
view and WebSocket reads the tenant from here, so none can forget the membership check.
A staff member who opened a tenant's console read-only (tenants.staff_view) gets that
tenant, and only reads: tenant_required refuses any other method, whatever the view.
"""

from __future__ import annotations

from functools import wraps

from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from tenants.models import Membership
from tenants.staff_view import is_staff_view, staff_view

SESSION_KEY = "stepwell_tenant"
READS = ("GET", "HEAD", "OPTIONS")


def memberships_of(user):
    return Membership.objects.filter(user=user, tenant__suspended_at__isnull=True).select_related(
        "tenant"
    )


def find_membership(user, slug: str | None = None, session=None) -> Membership | None:
    """The membership to use: `slug` if given, else the session's choice, else the first."""
    if user is None or not user.is_authenticated:
        return None
    viewed = staff_view(user, session)
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


def switch_tenant(request, slug: str) -> Membership | None:
    membership = find_membership(request.user, slug)
    if membership is not None:
        request.session[SESSION_KEY] = membership.tenant.slug
    return membership


def page_after_switch(request) -> str:
    """Where the switcher goes next: the posted `next` if it is a path on this site, else
    the home page, so a form elsewhere cannot use the switch to send a user away."""
    wanted = request.POST.get("next", "")
    # No host is allowed: only a path of ours, never an absolute or scheme-relative URL.
    if wanted.startswith("/") and url_has_allowed_host_and_scheme(wanted, allowed_hosts=None):
        return wanted
    return reverse("home")


def tenant_required(view):
    """Sign-in plus a membership; sets request.membership and request.tenant."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request)
        membership = find_membership(request.user, session=request.session)
        if membership is None:
            return redirect("no_tenant")
        request.membership = membership
        request.tenant = membership.tenant
        request.staff_view = is_staff_view(membership)
        if request.staff_view and request.method not in READS:
            return render(request, "console/forbidden.html", status=403)
        return view(request, *args, **kwargs)

    return wrapper


def writer_required(view):
    """Like tenant_required, and refuses viewers with 403."""

    @wraps(view)
    def check(request, *args, **kwargs):
        if not request.membership.can_write:
            raise PermissionDenied("viewers cannot change anything")
        return view(request, *args, **kwargs)

    return tenant_required(check)


def redirect_to_login(request):
    from django.contrib.auth.views import redirect_to_login as to_login

    return to_login(request.get_full_path())
