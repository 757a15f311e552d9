"""Handing instances to workers: right away through Celery, and as a backstop by the clock.

The database is the record of what must run when (`Instance.next_run_at` and the
step rows); a Celery message only makes it happen sooner. A message lost with a
Redis restart is made good by the clock once the backstop time passes.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from execution.models import Instance

log = logging.getLogger(__name__)


def redispatch_delay() -> timedelta:
    return timedelta(seconds=settings.STEPWELL_REDISPATCH_SECONDS)


def run_now(instance: Instance) -> None:
    """Mark the instance due now and enqueue it when the caller's transaction commits."""
    now = timezone.now()
    Instance.objects.filter(pk=instance.pk).update(next_run_at=now + redispatch_delay())
    instance.next_run_at = now + redispatch_delay()
    pk = instance.pk
    transaction.on_commit(lambda: enqueue(pk))


def run_at(instance: Instance, when: datetime) -> None:
    """Leave the instance to the clock until `when`: no message waits in the broker."""
    Instance.objects.filter(pk=instance.pk).update(next_run_at=when)
    instance.next_run_at = when


def enqueue(instance_pk: int) -> None:
    from execution.tasks import advance

    try:
        advance.apply_async(args=[instance_pk])
    except Exception:
        # The broker is down: the clock re-sends once next_run_at passes.
        log.warning(
            "could not enqueue instance %s; the clock will retry", instance_pk, exc_info=True
        )


def sweep(now: datetime | None = None, limit: int = 500) -> int:
    """Enqueue every instance that is due or whose lease ran out; returns how many.

    Rows are taken with skip_locked and pushed forward by the backstop delay in the
    same statement's transaction, so several clocks can sweep at once without
    sending the same instance twice.
    """
    now = now or timezone.now()
    with transaction.atomic():
        pks = list(
            Instance.objects.due(now)
            .order_by("next_run_at")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if pks:
            Instance.objects.filter(pk__in=pks).update(next_run_at=now + redispatch_delay())
    for pk in pks:
        enqueue(pk)
    return len(pks)


def expired_leases(now: datetime | None = None):
    now = now or timezone.now()
    return Instance.objects.filter(
        Q(lease_expires_at__lt=now) & ~Q(lease_owner=""), status__in=Instance.ACTIVE_STATUSES
    )
