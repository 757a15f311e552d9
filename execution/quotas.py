"""A tenant's rate and concurrency quotas, enforced without counting rows on every start.

Each check raises QuotaExceeded, whose message names the limit, and the API answers
429 with it. The truth is the rows: unfinished instances, instances created and events
sent in the last 60 s. Counting them is a scan, so a start does not count: it takes one
unit of allowance from one of the tenant's usage rows (tenants.models.QuotaUsage), in
the transaction that makes its instance, with a conditional UPDATE that also locks
that row until the commit. The allowances come from a count: `share_out` locks all the
tenant's usage rows, counts, and shares the room left under each limit among them.
Every unit taken since stands for a row made since, so the rows never pass the limit;
when a start finds its row's allowance used up it takes the counting path, where it is
refused exactly when counting the rows refuses it. Instances that finish and starts
that leave the minute's window are seen at the next count. The allowances live in the
database, so they survive restarts, and a tenant without usage rows is counted first.

Every path that makes an instance or an event, or brings a finished instance back, must
go through take_start, check_running or take_event (execution.workflows does), or the
rows could pass a limit unseen. Locks: one usage row at a time on the fast path, all
of them in shard order (while holding no other usage row) on the counting path.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from execution import twins
from execution.errors import StartError
from execution.models import Event, Instance, TenantEvent
from tenants.models import Quota, QuotaUsage, Tenant

WINDOW = timedelta(seconds=60)
NOT_FINISHED = [s for s in Instance.Status.values if s not in Instance.TERMINAL_STATUSES]
SHARDS = QuotaUsage.SHARDS


class QuotaExceeded(StartError):
    """Over one of the tenant's quotas (HTTP 429); the message names the limit."""


# --- which usage row this thread takes from --------------------------------------------

# Starting at the process id spreads the threads of several web processes over the rows.
_next_shard = itertools.count(os.getpid())
_thread = threading.local()


def my_shard() -> int:
    """A usage row per thread (round robin), so that one process's concurrent requests
    take from different rows and do not wait on each other's commits."""
    if not hasattr(_thread, "shard"):
        _thread.shard = next(_next_shard) % SHARDS
    return _thread.shard


# --- the fast path: one unit from this thread's row ------------------------------------


@functools.cache
def take_sql(*kinds: str, unless: str = "") -> str:
    """UPDATE taking one unit of each kind from one usage row, if it has them all (and
    the SQL condition `unless`, placed after the tenant and shard parameters, is false);
    `RETURNING 1` when it did (PostgreSQL, and SQLite >= 3.35)."""
    table = connection.ops.quote_name(QuotaUsage._meta.db_table)
    sets = ", ".join(f"{k}_left = {k}_left - 1" for k in kinds)
    room = " AND ".join(f"{k}_left > 0" for k in kinds)
    if unless:
        room += f" AND NOT {unless}"
    return f"UPDATE {table} SET {sets} WHERE tenant_id = %s AND shard = %s AND {room} RETURNING 1"


def took(tenant_id: int, *kinds: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(take_sql(*kinds), [tenant_id, my_shard()])
        return cursor.fetchone() is not None


# --- the counting path ---------------------------------------------------------------


def unfinished_count(tenant_id: int) -> int:
    return Instance.objects.filter(tenant_id=tenant_id, status__in=NOT_FINISHED).count()


def started_count(tenant_id: int) -> int:
    since = timezone.now() - WINDOW
    return Instance.objects.filter(tenant_id=tenant_id, created_at__gte=since).count()


def sent_count(tenant_id: int) -> int:
    """Events sent to instances and tenant-wide events, in the last 60 s."""
    since = timezone.now() - WINDOW
    to_instances = Event.objects.filter(instance__tenant_id=tenant_id, created_at__gte=since)
    tenant_wide = TenantEvent.objects.filter(tenant_id=tenant_id, created_at__gte=since)
    return to_instances.count() + tenant_wide.count()


def running_refused(running: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"running instances quota: {running} unfinished instances; the limit is {limit}"
    )


def starts_refused(started: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"instance starts per minute quota: {started} starts in the last 60 s; "
        f"the limit is {limit} per minute"
    )


def events_refused(sent: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"events per minute quota: {sent} events in the last 60 s; the limit is {limit} per minute"
    )


def locked_usage(tenant_id: int) -> None:
    """Lock all the tenant's usage rows in shard order, made first if any is missing
    (a tenant's first count, or rows lost): a count that finds them all costs one query."""

    def lock() -> int:
        rows = QuotaUsage.objects.select_for_update().filter(tenant_id=tenant_id)
        return len(rows.order_by("shard").values_list("shard", flat=True))

    if lock() < SHARDS:
        QuotaUsage.objects.bulk_create(
            [QuotaUsage(tenant_id=tenant_id, shard=s) for s in range(SHARDS)],
            ignore_conflicts=True,
        )
        lock()


def share_out(tenant_id: int, **room: int) -> None:
    """Share the room left under each limit (running=, starts=, events=) among the
    tenant's rows, locked by locked_usage, in one UPDATE. What does not divide evenly
    goes to this thread's row first, then the next ones: the start or event that
    counted takes its unit from there."""
    mine = my_shard()
    values = {}
    for kind, free in room.items():
        base, extra = divmod(max(free, 0), SHARDS)
        first = [(mine + i) % SHARDS for i in range(extra)]
        values[f"{kind}_left"] = Case(
            When(shard__in=first, then=Value(base + 1)), default=Value(base)
        )
    QuotaUsage.objects.filter(tenant_id=tenant_id).update(**values)


def count(tenant: Tenant, *, rate: bool, made: bool) -> None:
    """The counting path of a start: lock the tenant's rows, count, refuse a start over
    a limit, and share out the room left. `made`: the start's instance is stored (and
    counted) already; else it is about to be, and takes a unit of what is shared out."""
    locked_usage(tenant.pk)
    mine = 1 if made else 0
    if twins.hand_written() and (counted := count_in_one_statement(tenant.pk, rate, mine)):
        refuse_over(*counted, rate=rate)  # the statement shared out only if it refuses nothing
        return
    quota = tenant.quota
    running = unfinished_count(tenant.pk) - mine
    started = started_count(tenant.pk) - mine
    limits = quota.running_instances, quota.instance_starts_per_minute
    refuse_over(running, limits[0], started, limits[1], rate=rate)
    share_out(tenant.pk, running=limits[0] - running - mine, starts=limits[1] - started - mine)


def refuse_over(
    running: int, running_limit: int, started: int, starts_limit: int, *, rate: bool
) -> None:
    """QuotaExceeded if one more start would pass a limit: `running` and `started` count
    the instances before it."""
    if running >= running_limit:
        raise running_refused(running, running_limit)
    if rate and started >= starts_limit:
        raise starts_refused(started, starts_limit)


@functools.cache
def count_sql() -> str:
    """count()'s counts, refusal and share_out as one PostgreSQL statement, run after
    locked_usage's lock (so its snapshot sees every start that took a unit before);
    returns the counts and limits, and shares out nothing when it refuses."""
    qn = connection.ops.quote_name
    usage, quota, instance = (qn(m._meta.db_table) for m in (QuotaUsage, Quota, Instance))

    def share(room: str) -> str:  # share_out's arithmetic, this thread's row first
        free = f"GREATEST({room}, 0)"
        mine = f"MOD(u.shard - %(shard)s + {SHARDS}, {SHARDS})"
        return f"{free} / {SHARDS} + CASE WHEN {mine} < MOD({free}, {SHARDS}) THEN 1 ELSE 0 END"

    return (
        f"WITH limits AS (SELECT running_instances AS running_limit, "
        f"instance_starts_per_minute AS starts_limit FROM {quota} WHERE tenant_id = %(tenant)s), "
        f"counted AS (SELECT (SELECT count(*) FROM {instance} WHERE tenant_id = %(tenant)s "
        f"AND status = ANY(%(unfinished)s)) - %(made)s AS running, "
        f"(SELECT count(*) FROM {instance} WHERE tenant_id = %(tenant)s "
        f"AND created_at >= %(since)s) - %(made)s AS started), "
        f"shared AS (UPDATE {usage} AS u SET "
        f"running_left = {share('limits.running_limit - counted.running - %(made)s')}, "
        f"starts_left = {share('limits.starts_limit - counted.started - %(made)s')} "
        f"FROM limits, counted WHERE u.tenant_id = %(tenant)s "
        f"AND counted.running < limits.running_limit "
        f"AND (NOT %(rate)s OR counted.started < limits.starts_limit) RETURNING 1) "
        "SELECT counted.running, limits.running_limit, counted.started, limits.starts_limit, "
        "(SELECT count(*) FROM shared) FROM limits, counted"
    )


def count_in_one_statement(tenant_id: int, rate: bool, made: int) -> tuple[int, ...] | None:
    """(running, its limit, started, its limit) as count_sql counted them, or None when
    the tenant has no quota row yet (the portable path makes it)."""
    params = {
        "tenant": tenant_id,
        "unfinished": NOT_FINISHED,
        "since": timezone.now() - WINDOW,
        "made": made,
        "rate": rate,
        "shard": my_shard(),
    }
    with connection.cursor() as cursor:
        cursor.execute(count_sql(), params)
        row = cursor.fetchone()
    return None if row is None else row[:4]


def count_ahead(tenant: Tenant, *, rate: bool = True) -> None:
    """Count before a start, in a transaction of its own, when the start's one statement
    found this thread's row dry: the statement then runs again and takes its unit from
    what was shared out. Raises QuotaExceeded exactly where the counting path would."""
    with transaction.atomic():
        count(tenant, rate=rate, made=False)


# --- what the paths that make rows call ----------------------------------------------


def take_start(tenant: Tenant, *, rate: bool = True) -> None:
    """Count the instance this transaction has just made; call last, just before the commit.

    Raises QuotaExceeded over the running instances quota, or over the starts per
    minute quota when `rate` (the API's starts; the engine's child starts are held to
    the running quota only, but use the starts allowance too, so that API starts see
    them).
    """
    if not took(tenant.pk, "running", "starts"):
        count(tenant, rate=rate, made=True)


def check_running(tenant: Tenant) -> None:
    """Room for a finished instance to run again? Call inside the restart's transaction,
    before the restart; it counts the instance as unfinished from then on."""
    if took(tenant.pk, "running"):
        return
    limit = tenant.quota.running_instances
    locked_usage(tenant.pk)
    running = unfinished_count(tenant.pk)
    if running >= limit:
        raise running_refused(running, limit)
    share_out(tenant.pk, running=limit - running - 1)


def take_event(tenant: Tenant, *, rate: bool = True) -> None:
    """Count the event this transaction has just stored; call last, just before the commit.
    Raises QuotaExceeded over the events per minute quota when `rate`."""
    if took(tenant.pk, "events"):
        return
    limit = tenant.quota.events_per_minute
    locked_usage(tenant.pk)
    sent = sent_count(tenant.pk)
    if rate and sent > limit:
        raise events_refused(sent - 1, limit)
    share_out(tenant.pk, events=limit - sent)


# --- checks before the fact, for callers that do not hold the quota in the transaction --


def check_start(tenant: Tenant, quota: Quota | None = None) -> None:
    """Room for one more start in this minute? A check before starting that locks nothing."""
    limit = (quota or tenant.quota).instance_starts_per_minute
    if not allowance_left(tenant.pk, "starts"):
        started = started_count(tenant.pk)
        if started >= limit:
            raise starts_refused(started, limit)


def check_event(tenant: Tenant, quota: Quota | None = None) -> None:
    """Room for one more event in this minute? A check before sending that locks nothing."""
    limit = (quota or tenant.quota).events_per_minute
    if not allowance_left(tenant.pk, "events"):
        sent = sent_count(tenant.pk)
        if sent >= limit:
            raise events_refused(sent, limit)


def allowance_left(tenant_id: int, kind: str) -> bool:
    return QuotaUsage.objects.filter(tenant_id=tenant_id, **{f"{kind}_left__gt": 0}).exists()
