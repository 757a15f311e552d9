"""Schedules: what tenants save, and the clock's fires.

A fire is taken by one conditional UPDATE that moves the schedule's `next_fire_at` on
from the value the clock read; the instance is started and the fire recorded in the
same transaction. A second clock that read the same value updates nothing and moves
on, and a clock that dies before its commit leaves the fire owed. The fire's instance
id (`schedule:{name}:{time}`) and the one-row-per-fire constraint are two more locks
on the same door.

After a stop (no clock running for a while), the clock starts only the most recent
fire that fell due; the earlier ones are not recorded one by one, but counted in that
fire's `missed`. A paused schedule owes nothing: resumed, it next fires after now.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from execution import quotas
from execution.fire_times import Timetable, as_id_time, check_cron, check_timezone, parse_every
from execution.models import Instance, Schedule, ScheduleFire, SkipReason, Workflow
from execution.named_starts import start_named
from tenants.audit import audit
from tenants.models import Tenant

log = logging.getLogger(__name__)

# Each schedule keeps this many of its newest fires; older ones are deleted as it fires.
FIRES_KEPT = 1000
# Schedules fired per sweep at most; the rest are due still, and fire at the next one.
FIRES_PER_SWEEP = 200


class BadField(ValueError):
    """A schedule's field that cannot be used (HTTP 422 naming it)."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.field = name


class NameTaken(Exception):
    """The tenant has a schedule of that name on another workflow (HTTP 409)."""


@dataclass
class Spec:
    """A schedule as a tenant writes it, before it is checked."""

    cron: str | None = None
    every: int | float | str | None = None
    timezone: str = "UTC"
    payload: dict = field(default_factory=dict)
    overlap: str = Schedule.Overlap.SKIP
    paused: bool = False


def timetable_of(spec: Spec, tenant: Tenant) -> Timetable:
    """The spec's fire times, checked against the tenant's shortest interval."""
    if (spec.cron is None) == (spec.every is None):
        raise BadField("cron", "give exactly one of cron (5 fields) and every (seconds)")
    try:
        zone = check_timezone(spec.timezone)
    except ValueError as exc:
        raise BadField("timezone", str(exc)) from None
    name = "cron" if spec.cron is not None else "every"
    shortest = tenant.quota.schedule_min_interval_seconds
    try:
        if spec.cron is not None:
            table = Timetable(cron=check_cron(spec.cron), timezone=zone.key)
        else:
            table = Timetable(every=parse_every(spec.every), timezone=zone.key)
        # Cron fires fall on whole minutes: only a quota over a minute needs looking at them.
        too_often = (table.every or shortest > 60) and table.shortest_gap(timezone.now()) < shortest
    except (ValueError, TypeError, OverflowError) as exc:  # croniter's errors are ValueErrors
        raise BadField(name, str(exc)) from None
    if too_often:
        raise BadField(
            name, f"{name} fires more often than the tenant's shortest interval of {shortest} s"
        )
    return table


def timetable(schedule: Schedule) -> Timetable:
    return Timetable(cron=schedule.cron, every=schedule.every, timezone=schedule.time_zone)


def audit_schedule(action: str, schedule: Schedule, actor: dict | None) -> None:
    """`actor`: request_actor(request)'s keywords; None for the platform's own changes."""
    audit(
        action,
        tenant=schedule.tenant,
        target=schedule,
        **(actor or {"actor": None}),
        name=schedule.name,
        workflow=schedule.workflow.name,
    )


@transaction.atomic
def save_schedule(
    workflow: Workflow, name: str, spec: Spec, *, actor: dict | None = None
) -> tuple[Schedule, bool]:
    """Create or replace the tenant's schedule `name` on `workflow`: (schedule, created).

    Raises BadField, NameTaken, or QuotaExceeded over the tenant's schedules quota. A
    replaced schedule keeps a fire it owes if its times are unchanged and it was not
    paused; otherwise (new, changed, resumed) it next fires after now: a resume does
    not start what fell due while paused.
    """
    tenant = workflow.tenant
    table = timetable_of(spec, tenant)
    if spec.overlap not in Schedule.Overlap.values:
        raise BadField("overlap", "overlap must be 'skip' or 'allow'")
    schedule = Schedule.objects.for_tenant(tenant).select_for_update().filter(name=name).first()
    created = schedule is None
    if created:
        check_count(tenant)
        schedule = Schedule(tenant=tenant, workflow=workflow, name=name)
    elif schedule.workflow_id != workflow.pk:
        raise NameTaken(f"schedule {name!r} belongs to another workflow")
    keep_owed = not created and not schedule.paused and timetable(schedule) == table
    schedule.cron, schedule.every, schedule.time_zone = table.cron, table.every, table.timezone
    schedule.payload, schedule.overlap, schedule.paused = spec.payload, spec.overlap, spec.paused
    now = timezone.now()
    if spec.paused:
        schedule.next_fire_at = None
    elif not keep_owed:
        schedule.next_fire_at = table.next_after(now)
    schedule.updated_at = now
    schedule.save()
    audit_schedule("schedule.created" if created else "schedule.replaced", schedule, actor)
    return schedule, created


@transaction.atomic
def set_paused(schedule: Schedule, paused: bool, *, actor: dict | None = None) -> None:
    """Pause (nothing owed) or resume (next fire after now) the schedule."""
    now = timezone.now()
    schedule.paused = paused
    schedule.next_fire_at = None if paused else timetable(schedule).next_after(now)
    schedule.updated_at = now
    schedule.save(update_fields=["paused", "next_fire_at", "updated_at"])
    audit_schedule("schedule.paused" if paused else "schedule.resumed", schedule, actor)


@transaction.atomic
def delete_schedule(schedule: Schedule, *, actor: dict | None = None) -> None:
    """Delete the schedule and its fires; the instances it started stay."""
    audit_schedule("schedule.deleted", schedule, actor)
    schedule.delete()


def check_count(tenant: Tenant) -> None:
    limit = tenant.quota.schedules
    count = Schedule.objects.for_tenant(tenant).count()
    if count >= limit:
        raise quotas.QuotaExceeded(f"schedules quota: {count} schedules; the limit is {limit}")


# --- the clock's part -------------------------------------------------------------------


def sweep(now: datetime | None = None, limit: int = FIRES_PER_SWEEP) -> int:
    """Fire every schedule that is due, oldest fire first; how many fires were taken."""
    now = now or timezone.now()
    due = (
        Schedule.objects.filter(paused=False, next_fire_at__lte=now)
        .select_related("workflow", "tenant")
        .order_by("next_fire_at")[:limit]
    )
    fired = 0
    for schedule in due:
        try:
            fired += fire(schedule, now) is not None
        except Exception:
            # One schedule that cannot fire must not keep the others from firing.
            log.exception("schedule %s could not fire", schedule.pk)
    return fired


@transaction.atomic(durable=True)
def fire(schedule: Schedule, now: datetime) -> ScheduleFire | None:
    """Take the schedule's most recent due fire and start it, or record why not; None
    when another clock took it first (or the schedule changed since it was read)."""
    table = timetable(schedule)
    fire_at = table.latest_at_or_before(now)
    owed = schedule.next_fire_at
    taken = Schedule.objects.filter(pk=schedule.pk, paused=False, next_fire_at=owed).update(
        next_fire_at=table.next_after(fire_at), last_fire_at=fire_at
    )
    if taken != 1:
        return None
    record = ScheduleFire(schedule=schedule, fire_at=fire_at)
    record.missed = table.count_between(owed, fire_at)
    instance = start_fire(schedule, fire_at, record)
    if instance is not None:
        Schedule.objects.filter(pk=schedule.pk).update(last_instance=instance)
    record.save()
    forget_old_fires(schedule)
    return record


def start_fire(schedule: Schedule, fire_at: datetime, record: ScheduleFire) -> Instance | None:
    """Start the fire's instance, or write on `record` why it started none."""
    if schedule.overlap == Schedule.Overlap.SKIP and still_running(schedule.last_instance_id):
        return skip(record, SkipReason.OVERLAP, "the previous instance has not ended")
    workflow = schedule.workflow
    workflow.tenant = schedule.tenant
    key = f"schedule:{schedule.name}:{as_id_time(fire_at)}"
    try:
        started = start_named(workflow, key, schedule.payload)
    except quotas.QuotaExceeded as exc:
        return skip(record, SkipReason.QUOTA, str(exc))
    if started.instance is None:
        return skip(record, started.reason, started.detail)
    record.instance_key = started.instance.key
    return started.instance


def skip(record: ScheduleFire, reason: str, detail: str) -> None:
    record.skipped, record.detail = reason, detail
    log.info("schedule %s skipped its fire at %s: %s", record.schedule_id, record.fire_at, detail)


def still_running(instance_pk: int | None) -> bool:
    if instance_pk is None:
        return False
    return (
        Instance.objects.filter(pk=instance_pk)
        .exclude(status__in=Instance.TERMINAL_STATUSES)
        .exists()
    )


def forget_old_fires(schedule: Schedule) -> None:
    oldest_kept = (
        ScheduleFire.objects.filter(schedule=schedule)
        .order_by("-fire_at")
        .values_list("fire_at", flat=True)[FIRES_KEPT - 1 : FIRES_KEPT]
    )
    cutoff = next(iter(oldest_kept), None)
    if cutoff is not None:
        ScheduleFire.objects.filter(schedule=schedule, fire_at__lt=cutoff).delete()
