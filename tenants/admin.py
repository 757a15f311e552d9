"""The operators' side of tenants: quotas, memberships, tokens and the audit log.

Quota and membership edits are plain admin forms, so their saves and deletes here
write the audit rows themselves. The tenant page itself is execution.admin's: its
suspension pauses the tenant's instances, a decision of execution.moderation.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime

from django import forms
from django.contrib import admin
from django.contrib.admin import ActionLocation
from django.contrib.auth import get_permission_codename
from django.db import transaction
from django.template.response import TemplateResponse
from django.utils.html import format_html

from tenants.audit import audit, audit_membership_removed, audit_membership_saved, audit_token
from tenants.models import ApiToken, AuditLog, Membership, Quota
from tenants.tokens import revoke_token

# Actions offered both on the list and on an object's own page.
EVERYWHERE = [ActionLocation.CHANGE_LIST, ActionLocation.CHANGE_FORM]
REASON_TEMPLATE = "admin/tenants/action_reason.html"


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 70}),
        help_text="Recorded in the audit log; the tenant's owners can read it.",
    )


def asks_for_reason(title: str, confirm: str):
    """Turn `func(modeladmin, request, queryset, reason)` into an admin action that asks why.

    The first post (from the list or the object's page) shows a page with a required
    reason; it posts everything back, so Django routes it to the same action again.
    """

    def decorator(func):
        @functools.wraps(func)
        def action(modeladmin, request, queryset):
            form = ReasonForm(request.POST if "_with_reason" in request.POST else None)
            if form.is_valid():
                return func(modeladmin, request, queryset, form.cleaned_data["reason"])
            replay = [
                (name, value)
                for name, values in request.POST.lists()
                if name not in ("csrfmiddlewaretoken", "reason", "_with_reason")
                for value in values
            ]
            context = {
                **modeladmin.admin_site.each_context(request),
                "title": title,
                "confirm": confirm,
                "form": form,
                "objects": queryset,
                "opts": modeladmin.opts,
                "replay": replay,
            }
            return TemplateResponse(request, REASON_TEMPLATE, context)

        return action

    return decorator


def has_model_perm(modeladmin, request, action: str) -> bool:
    codename = get_permission_codename(action, modeladmin.opts)
    return request.user.has_perm(f"{modeladmin.opts.app_label}.{codename}")


def changed_fields(form) -> dict[str, list]:
    """Each changed field of a model form as [old, new]; a new row's old values are the
    field defaults (a new quota starts from the plan's)."""
    changes = {}
    for name in form.changed_data:
        field = form.instance._meta.get_field(name)
        if field.concrete and name not in ("id", "tenant"):
            old, new = form.initial.get(name, field.get_default()), form.cleaned_data[name]
            if not same_to_the_second(old, new):
                changes[name] = [plain(old), plain(new)]
    return changes


def same_to_the_second(old, new) -> bool:
    """The admin's date inputs drop microseconds: a date saved as it was shown is no edit."""
    if isinstance(old, datetime) and isinstance(new, datetime):
        return old.replace(microsecond=0) == new.replace(microsecond=0)
    return old == new


def plain(value):
    """A value the JSON of the details can hold (a date becomes its text)."""
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def audit_quota_form(form, actor) -> None:
    """Write one `quota.changed` row listing each changed field as [old, new]."""
    changes = changed_fields(form)
    if changes:
        quota = form.instance
        audit("quota.changed", actor=actor, tenant=quota.tenant, target=quota, **changes)


def audit_tenant_form(form, actor, *, change: bool) -> None:
    """`tenant.created`, or `tenant.changed` with each changed field (its review policy,
    its name) as [old, new]."""
    tenant = form.instance
    changes = changed_fields(form)
    if change and changes:
        audit("tenant.changed", actor=actor, tenant=tenant, target=tenant, **changes)
    elif not change:
        audit(
            "tenant.created",
            actor=actor,
            tenant=tenant,
            target=tenant,
            slug=tenant.slug,
            review_policy=tenant.review_policy,
        )


def stored_memberships(pks) -> dict[int, Membership]:
    """The rows as they are before a save: the forms already hold the new values."""
    return Membership.objects.select_related("tenant", "user").in_bulk([pk for pk in pks if pk])


def save_audited_memberships(formset, actor) -> None:
    """Save the tenant page's membership rows, auditing each grant, change and removal."""
    before = stored_memberships(form.instance.pk for form in formset.initial_forms)
    for form in formset.deleted_forms:
        if form.instance.pk in before:
            audit_membership_removed(before[form.instance.pk], actor)
    formset.save()
    for membership in formset.new_objects:
        audit_membership_saved(membership, actor, before=None)
    for membership, _ in formset.changed_objects:
        audit_membership_saved(membership, actor, before=before[membership.pk])


class ReadOnly:
    """Staff read these rows; only the audited actions change anything."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class PlanDefaults:
    """Show each quota field's plan default next to it."""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if formfield is not None and db_field.name != "id" and db_field.has_default():
            formfield.help_text = f"Plan default: {db_field.get_default()}"
        return formfield


class QuotaInline(PlanDefaults, admin.StackedInline):
    model = Quota
    can_delete = False


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Quota)
class QuotaAdmin(PlanDefaults, admin.ModelAdmin):
    list_display = [
        "tenant",
        "step_memory_mb",
        "step_cpu_seconds",
        "step_timeout_seconds",
        "concurrent_activations",
        "running_instances",
        "network",
        "sandbox_mode",
        "retention_days",
    ]
    search_fields = ["tenant__slug"]

    def get_readonly_fields(self, request, obj=None):
        return ["tenant"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        audit_quota_form(form, request.user)

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["tenant", "user", "role"]
    list_filter = ["role"]
    search_fields = ["tenant__slug", "user__username"]

    def get_readonly_fields(self, request, obj=None):
        # Moving a membership to another tenant would be a removal and a grant in one
        # row, audited under one tenant only: remove it and grant the other instead.
        return ["tenant"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        before = stored_memberships([obj.pk]).get(obj.pk) if change else None
        super().save_model(request, obj, form, change)
        audit_membership_saved(obj, request.user, before=before)

    def delete_model(self, request, obj):
        with transaction.atomic():
            audit_membership_removed(obj, request.user)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for membership in queryset.select_related("tenant", "user"):
                audit_membership_removed(membership, request.user)
            super().delete_queryset(request, queryset)


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnly, admin.ModelAdmin):
    """Read-only: the raw token is never stored, and the hash is useless to a person."""

    list_display = [
        "name",
        "tenant",
        "prefix",
        "read_only",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    ]
    list_filter = ["read_only", ("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["tenant"]
    search_fields = ["name", "prefix", "tenant__slug"]
    exclude = ["token_hash"]
    actions = ["revoke"]

    @admin.action(
        description="Revoke: the token stops working at once",
        permissions=["revoke"],
        location=EVERYWHERE,
    )
    def revoke(self, request, queryset):
        with transaction.atomic():
            tokens = list(queryset.select_for_update().filter(revoked_at__isnull=True))
            for token in tokens:
                revoke_token(token)
                audit_token("token.revoked", token, actor=request.user)
        self.message_user(request, f"Revoked {len(tokens)} token(s).")

    def has_revoke_permission(self, request):
        return has_model_perm(self, request, "change")


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnly, admin.ModelAdmin):
    """The record itself: nobody adds, edits or deletes a row here."""

    list_display = ["created_at", "who", "action", "tenant", "target", "reason"]
    list_filter = ["action", "tenant"]
    list_select_related = ["actor", "actor_token", "tenant"]
    search_fields = ["action", "reason", "target_id", "actor__username", "tenant__slug"]
    date_hierarchy = "created_at"
    fields = [
        "created_at",
        "actor",
        "actor_token",
        "tenant",
        "action",
        "target_type",
        "target_id",
        "reason",
        "details_json",
    ]
    readonly_fields = fields
    show_full_result_count = False

    @admin.display(description="who")
    def who(self, entry: AuditLog) -> str:
        if entry.actor is not None:
            return entry.actor.get_username()
        if entry.actor_token is not None:
            token = entry.actor_token
            return f"token {token.name} (#{token.pk}, {token.prefix}…)"
        return "—"

    @admin.display(description="target")
    def target(self, entry: AuditLog) -> str:
        return f"{entry.target_type} {entry.target_id}".strip()

    @admin.display(description="details")
    def details_json(self, entry: AuditLog) -> str:
        return format_html("<pre>{}</pre>", json.dumps(entry.details, indent=2, sort_keys=True))
