"""Retention: a tenant's finished instances older than its retention period are deleted.

Quota.retention_days (30 days for new tenants; empty, "keep for ever", for the tenants
that existed before retention did) counts from an instance's finished_at. The clock
runs sweep() now and then; it deletes in batches, oldest first, along the
(tenant, finished_at) index, each batch in a short transaction of its own that locks
only the rows it deletes (skip_locked, so two clocks share the work).

What goes with an instance follows the models' on_delete, read from Django's metadata:
its steps, runs, events and progress events (CASCADE) are deleted, and so will be the
rows of any model added later whose foreign key to an instance cascades; webhook
deliveries, which know their instance by id only, are deleted by webhooks. References
that are SET_NULL (a child's parent, a step waiting on an instance, an event consumed
by a deleted step) are cleared. On PostgreSQL that is a
few set-based statements per batch (deletion_plan), some twenty times faster than
Django's collector, which is the portable twin (tests/execution/test_retention.py runs
both). Nothing here writes an instance's status, lease or dispatch columns: finished
rows are only deleted.

Once deleted, an instance's id may be used again by a new start (API.md).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from execution import twins
from execution.models import Instance
from lib import metrics
from tenants.models import Quota
from webhooks import deliveries


def expires_at(instance: Instance) -> datetime | None:
    """When the finished instance will be deleted; None while it runs, or if its tenant
    keeps every instance."""
    if instance.finished_at is None:
        return None
    days = instance.tenant.quota.retention_days
    return None if days is None else instance.finished_at + timedelta(days=days)


def expired(tenant_id: int, cutoff: datetime):
    """The tenant's instances that finished before `cutoff`."""
    return Instance.objects.filter(
        tenant_id=tenant_id, finished_at__lt=cutoff, status__in=Instance.TERMINAL_STATUSES
    )


def with_expired(now: datetime, after: int = 0) -> list[tuple[int, int]]:
    """(tenant id, retention days) of the tenants after `after` that have an instance to
    delete, in id order: one query per retention period in use, each an index probe per
    tenant, rather than a transaction per tenant (with 1,000 tenants and nothing to
    delete, a round was 2.5-2.9 s of the clock's CPU, bench/README.md)."""
    keeping = Quota.objects.filter(retention_days__isnull=False, tenant_id__gt=after)
    found: list[tuple[int, int]] = []
    for days in keeping.order_by().values_list("retention_days", flat=True).distinct():
        anything = Exists(expired(OuterRef("tenant_id"), now - timedelta(days=days)))
        found += keeping.filter(anything, retention_days=days).values_list(
            "tenant_id", "retention_days"
        )
    return sorted(found)


def delete_batch(tenant_id: int, cutoff: datetime, size: int) -> int:
    """Delete up to `size` of the tenant's oldest expired instances with everything that
    is theirs, in one transaction; how many."""
    with transaction.atomic():
        pks = list(
            expired(tenant_id, cutoff)
            .order_by("finished_at")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:size]
        )
        if pks and twins.hand_written():
            delete_in_statements(pks)
        elif pks:
            Instance.objects.filter(pk__in=pks).only("pk").delete()
        if pks:
            # Deliveries know their instance by id only (webhooks sits below execution).
            deliveries.forget_instances(pks)
    metrics.RETENTION_DELETED.inc(len(pks))
    return len(pks)


# The instances being deleted, in the statements below.
PICKED = "= ANY(%(pks)s)"


def deletion_plan(model: type[models.Model], condition: str) -> list[str]:
    """The statements that delete the rows of `model` matching `condition` (SQL about
    its table) and, before them, what refers to those rows, as each foreign key's
    on_delete says: CASCADE recursively, SET_NULL cleared, DO_NOTHING left. Each is its
    own statement (one statement may not write a row twice); the constraints are
    checked at commit."""
    qn = connection.ops.quote_name
    table, pk = qn(model._meta.db_table), qn(model._meta.pk.column)
    statements = []
    for relation in model._meta.related_objects:
        if relation.many_to_many or not relation.field.concrete:
            raise ValueError(f"retention cannot follow {relation}")
        column = qn(relation.field.column)
        refers = (
            f"{column} {PICKED}"
            if condition == f"{pk} {PICKED}"
            else f"{column} IN (SELECT {pk} FROM {table} WHERE {condition})"
        )
        on_delete = relation.on_delete
        if on_delete is models.CASCADE:
            statements.extend(deletion_plan(relation.related_model, refers))
        elif on_delete is models.SET_NULL:
            statements.append(
                f"UPDATE {qn(relation.related_model._meta.db_table)} SET {column} = NULL "
                f"WHERE {refers}"
            )
        elif on_delete is not models.DO_NOTHING:
            raise ValueError(f"retention cannot follow {relation}: {on_delete.__name__}")
    statements.append(f"DELETE FROM {table} WHERE {condition}")
    return statements


@functools.cache
def instance_deletion_plan() -> tuple[str, ...]:
    qn = connection.ops.quote_name
    return tuple(deletion_plan(Instance, f"{qn(Instance._meta.pk.column)} {PICKED}"))


def delete_in_statements(pks: list[int]) -> None:
    """Delete the instances and what is theirs, in the caller's transaction."""
    with connection.cursor() as cursor:
        for statement in instance_deletion_plan():
            cursor.execute(statement, {"pks": pks})


@dataclass
class Swept:
    deleted: int = 0
    batches: list[int] = field(default_factory=list)  # instances per batch, in order
    seconds: list[float] = field(default_factory=list)  # each batch's transaction
    more: bool = False  # stopped by the budget with tenants or expired instances left
    # Where the next sweep of this round goes on: after this tenant id (0: a new round).
    resume_after: int = 0


def sweep(
    now: datetime | None = None,
    *,
    batch: int | None = None,
    budget_seconds: float | None = None,
    after: int = 0,
) -> Swept:
    """Delete expired instances, one batch per tenant in turn (so that one tenant's
    backlog does not hold up another's), until none is left or the budget is spent.

    The tenants go in id order, from the one after `after`: a sweep the budget stops
    says in `resume_after` where the next goes on, so that a round over more tenants
    than one budget reaches still gets to every tenant (from the first tenant each time,
    a clock sweeping 1,000 tenants in 0.5 s never reached the last third, and swept
    again at every tick). At least one batch is deleted whatever the budget."""
    now = now or timezone.now()
    size = batch or settings.STEPWELL_RETENTION_BATCH
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    pending = with_expired(now, after)
    swept = Swept()
    first_pass = True
    while pending:
        left = []
        for tenant_id, days in pending:
            started = time.monotonic()
            deleted = delete_batch(tenant_id, now - timedelta(days=days), size)
            if deleted:
                swept.deleted += deleted
                swept.batches.append(deleted)
                swept.seconds.append(time.monotonic() - started)
            if deleted == size:
                left.append((tenant_id, days))
            if deadline is not None and time.monotonic() >= deadline:
                is_last = (tenant_id, days) == pending[-1]
                # A later pass (tenants with more to delete) starts the next round anew.
                swept.resume_after = tenant_id if first_pass and not is_last else 0
                swept.more = bool(left) or swept.resume_after != 0 or not first_pass
                return swept
        pending = left
        first_pass = False
    return swept


class Pace:
    """When the clock sweeps for retention: every `interval` seconds, and at every tick
    while a sweep stopped with work left, each within `budget` seconds so that the
    clock's own sweeps of due work wait no longer than that."""

    def __init__(self, interval: float, budget: float) -> None:
        self.interval = interval
        self.budget = budget
        self.next_at = 0.0
        self.after = 0  # the round's place (Swept.resume_after)

    def run_if_due(self) -> Swept | None:
        now = time.monotonic()
        if now < self.next_at:
            return None
        self.next_at = now + self.interval  # also after a failure: tried again later
        swept = sweep(budget_seconds=self.budget, after=self.after)
        self.after = swept.resume_after
        if swept.more:
            self.next_at = time.monotonic()
        return swept
