"""The staff side outside the model admin: the overview page, and opening a tenant's
console read-only. Opening and leaving are staff actions, audited like the others
(tenants.audit.audit) with the reason given, so the tenant's owners see them."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.db import transaction
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.views.decorators.http import require_POST

from execution import overview
from tenants.audit import audit
from tenants.models import Tenant
from tenants.staff_view import close_staff_view, open_staff_view

admin.site.site_header = "Stepwell staff"
admin.site.site_title = "Stepwell staff"
admin.site.index_title = "Tenants, code review and instances"
admin.site.site_url = "/"


class OpenConsoleForm(forms.Form):
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.all(), to_field_name="slug")
    reason = forms.CharField(
        max_length=500,
        error_messages={"required": "A reason is required: the tenant's owners see it."},
    )


@staff_member_required
def staff_overview(request):
    now = timezone.now()
    context = {
        **admin.site.each_context(request),
        "title": "Staff overview",
        "now": now,
        "window": overview.WINDOW,
        "review": overview.review_queue(),
        "tenants": overview.work_per_tenant(now),
        "tenant_rows": overview.TENANT_ROWS,
        "failures": overview.sandbox_failures(now),
        "warm": overview.warm_jails(),
        "slowest": overview.slowest_tenants(now),
        "step_sample": overview.STEP_SAMPLE,
        "open_form": OpenConsoleForm(),
        "all_tenants": Tenant.objects.order_by("slug").values_list("slug", flat=True)[:1000],
    }
    return TemplateResponse(request, "console/staff_overview.html", context)


@staff_member_required
@require_POST
def open_console(request):
    form = OpenConsoleForm(request.POST)
    if not form.is_valid():
        problems = "; ".join(m for errs in form.errors.values() for m in errs)
        messages.error(request, f"The console was not opened: {problems}")
        return redirect("staff_overview")
    tenant = form.cleaned_data["tenant"]
    with transaction.atomic():
        audit(
            "staff.console_opened",
            actor=request.user,
            tenant=tenant,
            target=tenant,
            reason=form.cleaned_data["reason"],
            read_only=True,
        )
        open_staff_view(request.session, tenant)
    return redirect("home")


@staff_member_required
@require_POST
def leave_console(request):
    tenant = Tenant.objects.filter(pk=close_staff_view(request.session)).first()
    if tenant is not None:
        audit("staff.console_left", actor=request.user, tenant=tenant, target=tenant)
    return redirect("staff_overview")
