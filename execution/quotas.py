"""A tenant's rate and concurrency quotas, counted in the database.

Each check raises QuotaExceeded, whose message names the limit, and the API answers
429 with it. Counting rows is exact and needs no second store; every count is a
range scan of an index on the tenant and a time or a status.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from execution.models import Event, Instance
from execution.workflows import StartError
from tenants.models import Quota, Tenant

WINDOW = timedelta(seconds=60)
NOT_FINISHED = [s for s in Instance.Status.values if s not in Instance.TERMINAL_STATUSES]


class QuotaExceeded(StartError):
    """Over one of the tenant's quotas (HTTP 429); the message names the limit."""


def locked_quota(tenant: Tenant) -> Quota:
    """The tenant's quota row, locked until the transaction ends.

    Holding it serialises the tenant's starts, so that two starts at once cannot
    both see one free slot.
    """
    quota = Quota.objects.select_for_update().filter(tenant=tenant).first()
    return quota or tenant.quota


def check_running(tenant: Tenant, started: Instance | None = None) -> None:
    """Room for one more unfinished instance? Call inside the start's transaction.

    `started`: the instance this transaction has just made. Checking after making it
    takes the tenant's lock as late as possible, so starts wait on each other only for
    the count and the commit; the count leaves it out.
    """
    limit = locked_quota(tenant).running_instances
    unfinished = Instance.objects.for_tenant(tenant).filter(status__in=NOT_FINISHED)
    if started is not None:
        unfinished = unfinished.exclude(pk=started.pk)
    running = unfinished.count()
    if running >= limit:
        raise QuotaExceeded(
            f"running instances quota: {running} unfinished instances; the limit is {limit}"
        )


def check_start(tenant: Tenant, quota: Quota | None = None) -> None:
    """Room for one more instance start in this minute? `quota`: the tenant's, if in hand."""
    limit = (quota or tenant.quota).instance_starts_per_minute
    since = timezone.now() - WINDOW
    started = Instance.objects.for_tenant(tenant).filter(created_at__gte=since).count()
    if started >= limit:
        raise QuotaExceeded(
            f"instance starts per minute quota: {started} starts in the last 60 s; "
            f"the limit is {limit} per minute"
        )


def check_event(tenant: Tenant, quota: Quota | None = None) -> None:
    """Room for one more event in this minute? `quota`: the tenant's, if in hand."""
    limit = (quota or tenant.quota).events_per_minute
    since = timezone.now() - WINDOW
    sent = Event.objects.filter(instance__tenant=tenant, created_at__gte=since).count()
    if sent >= limit:
        raise QuotaExceeded(
            f"events per minute quota: {sent} events in the last 60 s; "
            f"the limit is {limit} per minute"
        )
