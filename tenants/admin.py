from django.contrib import admin

from tenants.models import ApiToken, Membership, Quota, Tenant


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class QuotaInline(admin.StackedInline):
    model = Quota
    can_delete = False


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "review_policy", "suspended_at", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [QuotaInline, MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["tenant", "user", "role"]
    list_filter = ["role"]
    search_fields = ["tenant__slug", "user__username"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
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
    list_filter = ["read_only"]
    search_fields = ["name", "prefix", "tenant__slug"]
    # The hash is useless to a person and the raw token is never stored: nothing to edit here.
    readonly_fields = ["tenant", "prefix", "token_hash", "created_by", "created_at", "last_used_at"]

    def has_add_permission(self, request):
        return False


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = [
        "tenant",
        "step_memory_mb",
        "step_cpu_seconds",
        "step_timeout_seconds",
        "concurrent_activations",
        "running_instances",
        "network",
    ]
    search_fields = ["tenant__slug"]
