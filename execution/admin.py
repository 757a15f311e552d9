"""The operators' side of execution: the review queue, code versions, instances, and the
tenant page, whose suspension pauses the tenant's instances.

Decisions go through `execution.moderation`, which writes the audit log; this module
shows what to decide on and asks for the reason.
"""

from __future__ import annotations

import copy

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponseRedirect

from execution import moderation, workflows
from execution.highlight import highlight
from execution.models import CodeVersion, Instance, Step, Workflow
from lib.diffs import diff_lines
from tenants.admin import (
    EVERYWHERE,
    MembershipInline,
    QuotaInline,
    ReadOnly,
    asks_for_reason,
    audit_quota_form,
    audit_tenant_form,
    has_model_perm,
    save_audited_memberships,
)
from tenants.models import Membership, Quota, Tenant

# -- Code versions and the review queue ----------------------------------------------


class ReviewQueueFilter(admin.SimpleListFilter):
    """By status, showing the versions awaiting review unless asked otherwise."""

    title = "status"
    parameter_name = "status"
    ALL = "all"

    def lookups(self, request, model_admin):
        return [
            (CodeVersion.Status.PENDING_REVIEW, "Review queue"),
            (CodeVersion.Status.APPROVED, "Approved"),
            (CodeVersion.Status.REJECTED, "Rejected"),
            (CodeVersion.Status.QUARANTINED, "Quarantined"),
            (self.ALL, "All"),
        ]

    def value(self):
        return super().value() or CodeVersion.Status.PENDING_REVIEW

    def choices(self, changelist):
        for value, label in self.lookup_choices:
            yield {
                "selected": self.value() == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request, queryset):
        if self.value() == self.ALL:
            return queryset
        return queryset.filter(status=self.value())


class ReviewForm(forms.Form):
    DECISIONS = [
        (CodeVersion.Status.APPROVED, "Approve"),
        (CodeVersion.Status.REJECTED, "Reject"),
        (CodeVersion.Status.QUARANTINED, "Quarantine"),
    ]

    decision = forms.ChoiceField(choices=DECISIONS)
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text="The tenant sees this in the console and the API.",
        error_messages={"required": "A reason is required: the tenant sees it."},
    )


def last_approved(version: CodeVersion) -> CodeVersion | None:
    """The version to compare with: the workflow's newest approved one before this one."""
    return (
        version.workflow.versions.filter(
            status=CodeVersion.Status.APPROVED, created_at__lte=version.created_at
        )
        .exclude(pk=version.pk)
        .order_by("-created_at", "-id")
        .first()
    )


def review_context(version: CodeVersion) -> dict:
    flagged = {flag.get("line") for flag in version.flags}
    baseline = last_approved(version)
    diff = None
    if baseline is not None:
        diff = diff_lines(
            baseline.code,
            version.code,
            f"approved {baseline.sha256[:12]}",
            f"this version {version.sha256[:12]}",
        )
    return {
        "code_lines": [
            (number, line, number in flagged)
            for number, line in enumerate(highlight(version.code), start=1)
        ],
        "flags": sorted(version.flags, key=lambda flag: flag.get("line") or 0),
        "baseline": baseline,
        "diff": diff,
    }


class VersionInline(admin.TabularInline):
    model = CodeVersion
    fields = ["sha256", "status", "status_reason", "created_at"]
    readonly_fields = fields
    show_change_link = True
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "current_version", "updated_at"]
    list_filter = ["tenant"]
    list_select_related = ["tenant", "current_version__workflow__tenant"]
    search_fields = ["name", "tenant__slug"]
    readonly_fields = ["tenant", "name", "current_version", "created_at", "updated_at"]
    inlines = [VersionInline]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(CodeVersion)
class CodeVersionAdmin(ReadOnly, admin.ModelAdmin):
    """Read-only, since versions are immutable; the change page is the review page."""

    list_display = [
        "workflow",
        "tenant",
        "short_sha",
        "status",
        "flag_count",
        "created_at",
        "reviewed_by",
    ]
    list_filter = [ReviewQueueFilter, "tenant"]
    list_select_related = ["workflow__tenant", "tenant", "reviewed_by"]
    search_fields = ["workflow__name", "tenant__slug", "sha256"]
    fields = [
        ("tenant", "workflow", "created_at"),
        "sha256",
        ("status", "reviewed_by", "reviewed_at"),
        "status_reason",
    ]
    readonly_fields = [
        "tenant",
        "workflow",
        "created_at",
        "sha256",
        "status",
        "reviewed_by",
        "reviewed_at",
        "status_reason",
    ]

    @admin.display(description="sha256")
    def short_sha(self, version: CodeVersion) -> str:
        return version.sha256[:12]

    @admin.display(description="flags")
    def flag_count(self, version: CodeVersion) -> int:
        return len(version.flags)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        form = ReviewForm(request.POST if request.method == "POST" else None)
        if form.is_bound:
            version = self.get_object(request, unquote(object_id))
            if version is None:
                raise Http404
            if not self.has_review_permission(request):
                raise PermissionDenied
            if form.is_valid():
                return self.decide(request, version, form)
            # Show the page again, with the form's errors, as the read-only page it is.
            request = copy.copy(request)
            request.method = "GET"
        context = {**(extra_context or {}), "review_form": form}
        return super().change_view(request, object_id, form_url, context)

    def decide(self, request, version, form):
        decision, reason = form.cleaned_data["decision"], form.cleaned_data["reason"]
        try:
            moderation.review(version, decision, actor=request.user, reason=reason)
        except moderation.ModerationError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"{version}: {decision}.", messages.SUCCESS)
        return HttpResponseRedirect(request.path)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context.update(review_context(obj))
            context["can_review"] = self.has_review_permission(request)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def has_review_permission(self, request):
        return has_model_perm(self, request, "change")


# -- Instances ----------------------------------------------------------------------


class StepInline(ReadOnly, admin.TabularInline):
    model = Step
    fk_name = "instance"
    fields = ["index", "name", "kind", "status", "attempts", "wake_at", "started_at", "finished_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Instance)
class InstanceAdmin(ReadOnly, admin.ModelAdmin):
    list_display = [
        "key",
        "workflow",
        "tenant",
        "status",
        "paused_reason",
        "short_version",
        "created_at",
        "updated_at",
    ]
    list_filter = ["status", "paused_reason", "tenant"]
    list_select_related = ["workflow__tenant", "tenant", "version"]
    search_fields = ["key", "workflow__name", "tenant__slug"]
    show_full_result_count = False
    inlines = [StepInline]
    actions = ["terminate"]

    @admin.display(description="version")
    def short_version(self, instance: Instance) -> str:
        return instance.version.sha256[:12]

    @admin.action(
        description="Terminate (staff): asks for a reason",
        permissions=["terminate"],
        location=EVERYWHERE,
    )
    @asks_for_reason("Terminate instances", "Terminate")
    def terminate(self, request, queryset, reason):
        done = 0
        for instance in queryset.exclude(status__in=Instance.TERMINAL_STATUSES):
            try:
                moderation.staff_terminate(instance, actor=request.user, reason=reason)
                done += 1
            except workflows.StateConflict:
                pass  # it ended meanwhile
        self.message_user(request, f"Terminated {done} instance(s).")

    def has_terminate_permission(self, request):
        return has_model_perm(self, request, "change")


# -- Tenants: a suspension pauses their instances -----------------------------------


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "review_policy", "suspended_at", "created_at"]
    list_filter = ["review_policy", ("suspended_at", admin.EmptyFieldListFilter)]
    search_fields = ["slug", "name"]
    # Suspension pauses instances and is audited: only the actions below change it.
    readonly_fields = ["suspended_at"]
    inlines = [QuotaInline, MembershipInline]
    actions = ["suspend", "unsuspend"]

    @admin.action(
        description="Suspend: pause its instances and stop its tokens",
        permissions=["change"],
        location=EVERYWHERE,
    )
    @asks_for_reason("Suspend tenants", "Suspend")
    def suspend(self, request, queryset, reason):
        self.apply(
            request,
            queryset.filter(suspended_at__isnull=True),
            reason,
            moderation.suspend_tenant,
            "Suspended",
        )

    @admin.action(
        description="Unsuspend: resume what the suspension paused",
        permissions=["change"],
        location=EVERYWHERE,
    )
    @asks_for_reason("Unsuspend tenants", "Unsuspend")
    def unsuspend(self, request, queryset, reason):
        self.apply(
            request,
            queryset.filter(suspended_at__isnull=False),
            reason,
            moderation.unsuspend_tenant,
            "Unsuspended",
        )

    def apply(self, request, queryset, reason, decision, done: str) -> None:
        """One staff decision on each tenant, with the rows locked so none is decided twice."""
        with transaction.atomic():
            tenants = list(queryset.select_for_update())
            for tenant in tenants:
                decision(tenant, actor=request.user, reason=reason)
        self.message_user(request, f"{done} {len(tenants)} tenant(s).")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        audit_tenant_form(form, request.user, change=change)

    def save_formset(self, request, form, formset, change):
        if formset.model is Membership:
            return save_audited_memberships(formset, request.user)
        super().save_formset(request, form, formset, change)
        if formset.model is Quota:
            for quota_form in formset.forms:
                if quota_form.has_changed():
                    audit_quota_form(quota_form, request.user)
