"""The console's current tenant: the switcher, and the decorators every view wears.

Which membership is current is tenants.memberships' rule, which the WebSocket
consumers share; every console view reads the tenant through tenant_required. A staff
member who opened a tenant's console read-only (tenants.staff_view) gets that tenant,
and only reads: tenant_required refuses any other method, whatever the view.
"""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login as to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from lib import logs
from tenants.memberships import SESSION_KEY, find_membership
from tenants.models import Membership
from tenants.staff_view import is_staff_view

READS = ("GET", "HEAD", "OPTIONS")


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
        logs.bind(tenant=membership.tenant_id)
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
    return to_login(request.get_full_path())
