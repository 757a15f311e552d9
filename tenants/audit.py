"""What the audit log holds for one tenant, for its owners to read in the console."""

from __future__ import annotations

from django.db.models import QuerySet

from tenants.models import AuditLog, Tenant


def audit_log_for(tenant: Tenant) -> QuerySet[AuditLog]:
    """The tenant's own audit entries, newest first, with who did each one."""
    return (
        AuditLog.objects.filter(tenant=tenant)
        .select_related("actor", "actor_token")
        .order_by("-created_at", "-id")
    )
