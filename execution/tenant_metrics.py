"""The per-tenant series of /metrics, computed when it is scraped.

Unfinished instances (what the running-instances quota counts) per tenant, read by one
grouped count along the (tenant, status) index. Only the STEPWELL_METRICS_TOP_TENANTS
tenants with most get a label of their own; the others are summed as "other", so a
platform with thousands of tenants still exposes a bounded number of series.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from execution.models import Instance
from execution.quotas import NOT_FINISHED
from tenants.models import Tenant

OTHER = "other"


def running_per_tenant(top: int) -> list[tuple[str, int]]:
    """[(tenant slug or "other", unfinished instances)], the busiest tenants first."""
    counts = list(
        Instance.objects.filter(status__in=NOT_FINISHED)
        .values_list("tenant_id")
        .annotate(n=Count("pk"))
        .order_by("-n", "tenant_id")
    )
    named, rest = counts[:top], counts[top:]
    slugs = dict(Tenant.objects.filter(pk__in=[t for t, _ in named]).values_list("pk", "slug"))
    rows = [(slugs.get(tenant_id, str(tenant_id)), n) for tenant_id, n in named]
    rows.append((OTHER, sum(n for _, n in rest)))
    return rows


class TenantCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "stepwell_tenant_running_instances",
            "Unfinished instances per tenant: the busiest tenants by name, the rest as other",
            labels=["tenant"],
        )
        for tenant, n in running_per_tenant(settings.STEPWELL_METRICS_TOP_TENANTS):
            family.add_metric([tenant], n)
        yield family
