"""The quota-usage panel: what a tenant uses now against what its quota allows."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone

from execution.models import Instance
from execution.quotas import NOT_FINISHED, WINDOW, sent_count
from tenants.models import Tenant


@dataclass
class Meter:
    label: str
    used: int
    limit: int

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.used / self.limit)) if self.limit else 100

    @property
    def level(self) -> str:
        return "high" if self.percent >= 90 else "mid" if self.percent >= 70 else "low"


def meters(tenant: Tenant) -> list[Meter]:
    quota = tenant.quota
    instances = Instance.objects.for_tenant(tenant)
    now = timezone.now()
    unfinished = instances.filter(status__in=NOT_FINISHED)
    return [
        Meter("Unfinished instances", unfinished.count(), quota.running_instances),
        Meter(
            "Activations now",
            unfinished.filter(lease_expires_at__gt=now).count(),
            quota.concurrent_activations,
        ),
        Meter(
            "Starts in the last minute",
            instances.filter(created_at__gte=now - WINDOW).count(),
            quota.instance_starts_per_minute,
        ),
        Meter("Events in the last minute", sent_count(tenant.pk), quota.events_per_minute),
    ]


def limits(tenant: Tenant) -> list[tuple[str, str]]:
    quota = tenant.quota
    return [
        ("Step memory", f"{quota.step_memory_mb} MB"),
        ("Step CPU", f"{quota.step_cpu_seconds} s"),
        ("Step timeout", f"{quota.step_timeout_seconds} s"),
        ("Steps per instance", f"{quota.steps_per_instance}"),
        ("Payload size", f"{quota.payload_bytes // 1024} KB"),
        ("Step result size", f"{quota.step_result_bytes // 1024} KB"),
        ("Instance history size", f"{quota.history_bytes // 2**20} MB"),
        ("Schedules", f"{quota.schedules}, {quota.schedule_min_interval_seconds} s apart or more"),
        ("Triggers", f"{quota.triggers}"),
        ("Network", "on" if quota.network else "off"),
        ("Sandbox", quota.get_sandbox_mode_display()),
    ]
