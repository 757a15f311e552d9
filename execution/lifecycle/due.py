"""When an instance is due, and handing due instances to workers, fairly.

An instance is *due* when `next_run_at` has passed (or its lease lapsed) and no
worker holds or has been sent it. Due instances are sent to Celery by `fill`, at
most as many per tenant as its quota's concurrent activations allow, counting
those already sent or running. So one tenant's flood never fills the queue ahead
of another tenant: each tenant has at most its cap of messages waiting.

A new instance is due at once, and its start is its fill: the statement (or
transaction) that stores it also marks it as sent when `fill` would send it then, that
is when the tenant has a free place and no older instance of the tenant is due
(`sendable_at_start`), and it is sent after the commit without a fill of its own.
Otherwise it is left unsent and the fill after the commit sends the oldest first.

A Celery message only makes things happen sooner. If one is lost (a Redis
restart), the instance stays marked as sent until `STEPWELL_REDISPATCH_SECONDS`
passes, and then the clock's sweep sends it again.
"""

from __future__ import annotations

import functools
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone

from execution import dispatch, twins
from execution.models import Instance
from lib import logs, rows
from tenants.models import Quota


def redispatch_delay() -> timedelta:
    return timedelta(seconds=settings.STEPWELL_REDISPATCH_SECONDS)


class Kept(threading.local):
    """The instance a worker will run next itself (see engine.advance)."""

    pk: int | None = None
    ready: bool = False


_kept = Kept()


@contextmanager
def kept(instance_pk: int | None):
    _kept.pk, _kept.ready = instance_pk, False
    try:
        yield _kept
    finally:
        _kept.pk = None


def is_kept(instance_pk: int) -> bool:
    """Whether the worker goes on with this instance itself (no place freed for others)."""
    return _kept.pk == instance_pk and _kept.ready


def due_from_start(instance: Instance, now: datetime, *, sent: bool = False) -> None:
    """A new instance, not stored yet, is due at once; `sent`: its start marks it as sent
    (sendable_at_start), and sends it after its commit."""
    instance.next_run_at = now
    instance.dispatched_at = now if sent else None


def placed_at_start(instance: Instance, placed: bool) -> None:
    """What the start's statement decided (start_place_sql): `placed`, the stored row is
    marked as sent, else it is due and sent by the fill after the commit."""
    if not placed:
        instance.dispatched_at = None


def sendable_at_start(tenant_id: int, now: datetime) -> bool:
    """Whether a fill run now would send a new instance of the tenant, due now: the
    tenant has a free place, and no older instance of the tenant is due (the fill sends
    the oldest first). Read in the start's transaction, before the new row exists.

    Its PostgreSQL twin is start_place_sql. Like two fills at once, two starts at once
    may both see the last free place: the claim holds the cap (leases), and refuses the
    one over it, which stays due (unsend)."""
    return in_flight(tenant_id, now) < cap_of(tenant_id) and not (
        due(now).filter(tenant_id=tenant_id).exists()
    )


def make_due(instance: Instance) -> None:
    """Make the instance due now; it is sent to a worker once the transaction commits."""
    if _kept.pk == instance.pk:
        # The worker that holds it goes on with it: count it as sent, send nothing.
        now = timezone.now()
        Instance.objects.filter(pk=instance.pk).update(next_run_at=now, dispatched_at=now)
        _kept.ready = True
        return
    make_due_at(instance, timezone.now())
    tenant_id = instance.tenant_id
    transaction.on_commit(lambda: fill(tenant_id))


def make_due_at(instance: Instance, when: datetime) -> None:
    """Leave the instance to the clock until `when`: no message waits in the broker."""
    Instance.objects.filter(pk=instance.pk).update(next_run_at=when, dispatched_at=None)
    instance.next_run_at = when
    instance.dispatched_at = None


def unsend(instance_pk: int) -> None:
    """Due again, and not sent: a claim over the tenant's cap of activations."""
    Instance.objects.filter(pk=instance_pk).update(dispatched_at=None)


def send_kept(instance_pk: int) -> None:
    """A kept instance the worker will not run after all goes to the queue."""
    Instance.objects.filter(pk=instance_pk, lease_owner="").update(dispatched_at=None)
    tenant_id = Instance.objects.filter(pk=instance_pk).values_list("tenant_id", flat=True).first()
    if tenant_id is not None:
        fill(tenant_id)


def due(now: datetime):
    """Active instances that should run and that no worker holds or was sent."""
    lease_free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    not_sent = Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=now - redispatch_delay())
    lease_lapsed = ~Q(lease_owner="") & Q(lease_expires_at__lt=now)
    return (
        Instance.objects.filter(status__in=Instance.ACTIVE_STATUSES)
        .filter(lease_free & not_sent)
        .filter(Q(next_run_at__lte=now) | lease_lapsed)
    )


def in_flight_rows(tenant_id: int, now: datetime):
    """Instances of the tenant that a worker holds or has been sent."""
    held = ~Q(lease_owner="") & Q(lease_expires_at__gte=now)
    sent = Q(dispatched_at__gte=now - redispatch_delay())
    return Instance.objects.filter(tenant_id=tenant_id, status__in=Instance.ACTIVE_STATUSES).filter(
        held | sent
    )


def in_flight(tenant_id: int, now: datetime) -> int:
    return in_flight_rows(tenant_id, now).count()


def fill(tenant_id: int, now: datetime | None = None) -> int:
    """Send the tenant's oldest due instances, up to its free concurrency; returns how many.

    Rows are taken with skip_locked and marked as sent in the same transaction, so
    several clocks and workers can fill at once without sending one instance twice.
    """
    now = now or timezone.now()
    pks = pick_in_one_statement(tenant_id, now) if twins.hand_written() else pick(tenant_id, now)
    for pk in pks:
        with logs.bound(tenant=tenant_id, instance=pk):
            dispatch.enqueue(pk)
    return len(pks)


def cap_of(tenant_id: int) -> int:
    cap = (
        Quota.objects.filter(tenant_id=tenant_id)
        .values_list("concurrent_activations", flat=True)
        .first()
    )
    return cap if cap is not None else Quota._meta.get_field("concurrent_activations").default


def pick(tenant_id: int, now: datetime) -> list[int]:
    """The portable twin of pick_in_one_statement."""
    cap = cap_of(tenant_id)
    with transaction.atomic():
        free = cap - in_flight(tenant_id, now)
        if free <= 0:
            return []
        pks = list(
            due(now)
            .filter(tenant_id=tenant_id)
            .order_by("next_run_at", "pk")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:free]
        )
        if pks:
            Instance.objects.filter(pk__in=pks).update(dispatched_at=now)
    return pks


def pick_in_one_statement(tenant_id: int, now: datetime) -> list[int]:
    """pick() as one PostgreSQL statement, bound on the server: a fill runs after a
    start that could not send itself and at the end of every instance, and pick's round
    trips and ORM-built queries cost more than the rest of a start. Its conditions are
    due()'s and in_flight_rows()'s, written out (tests/execution/test_twins.py).

    Run on its own (after a start's or an outcome's commit, or in the clock's sweep), it
    commits without waiting for the disk: `dispatched_at` only says a message was sent,
    and if an operating-system crash loses it, the clock sends the instance again, as
    after a lost message; the lease keeps one instance from running twice. The flush it
    waited for was the longest part of a fill (bench/README.md, "Where a warm step's
    time goes"). Inside a caller's transaction it leaves that transaction's commit alone.
    On its own it runs as a function of the session (FILL), which keeps its plan.
    """
    values = {"relaxed": not connection.in_atomic_block, **place_params(tenant_id, now)}
    if connection.in_atomic_block:
        found = fill_prepared(values)
    else:
        ordered = [values[name] for name in FILL_VALUES]
        found = FILL.call(ordered, lambda: fill_prepared(values))
    return [row[0] for row in found]


def fill_prepared(values: dict) -> list[tuple]:
    """The fill as a statement prepared like the others: on a big table, planned again
    at every call (see FILL)."""
    with rows.cursor() as cursor:
        cursor.execute(fill_statement(), values)
        return cursor.fetchall()


def place_params(tenant_id: int, now: datetime) -> dict:
    """The values free_places_sql and due_rows_sql name, in start_place_sql's order."""
    return {
        "tenant": tenant_id,
        "default_cap": Quota._meta.get_field("concurrent_activations").default,
        "active": [str(status) for status in Instance.ACTIVE_STATUSES],
        "now": now,
        "resend": now - redispatch_delay(),
    }


# due() and in_flight_rows() written out for PostgreSQL, once for the fill's statement
# and the start's: `{name}` is where each statement puts place_params' value `name`.
IN_FLIGHT_SQL = (
    "tenant_id = {tenant} AND status = ANY({active}) "
    "AND ((lease_owner <> '' AND lease_expires_at >= {now}) OR dispatched_at >= {resend})"
)
DUE_SQL = (
    "tenant_id = {tenant} AND status = ANY({active}) "
    "AND (lease_expires_at IS NULL OR lease_expires_at < {now}) "
    "AND (dispatched_at IS NULL OR dispatched_at < {resend}) "
    "AND (next_run_at <= {now} OR (lease_owner <> '' AND lease_expires_at < {now}))"
)


def free_places_sql(values: dict[str, str]) -> str:
    """The tenant's free places: its cap less its instances held or sent."""
    quote = connection.ops.quote_name
    return (
        "GREATEST(COALESCE("
        f"(SELECT concurrent_activations FROM {quote(Quota._meta.db_table)} "
        "WHERE tenant_id = {tenant}), {default_cap}) - "
        f"(SELECT count(*) FROM {quote(Instance._meta.db_table)} WHERE {IN_FLIGHT_SQL}), 0)"
    ).format(**values)


def due_rows_sql(values: dict[str, str]) -> str:
    """The tenant's due instances (a WHERE clause on the instance table)."""
    return DUE_SQL.format(**values)


@functools.cache
def start_place_sql() -> str:
    """sendable_at_start's twin, as CTEs for the start's statement: `place.sendable`.
    Its placeholders take place_params' values, in their order."""
    types = {
        "tenant": "bigint",
        "default_cap": "integer",
        "active": "varchar[]",
        "now": "timestamp with time zone",
        "resend": "timestamp with time zone",
    }
    given = ", ".join(f"CAST(%s AS {type_}) AS {name}" for name, type_ in types.items())
    values = {name: f"given.{name}" for name in types}
    instances = connection.ops.quote_name(Instance._meta.db_table)
    return (
        f"given AS (SELECT {given}), "
        f"place AS (SELECT {free_places_sql(values)} > 0 AND NOT EXISTS "
        f"(SELECT 1 FROM {instances} WHERE {due_rows_sql(values)}) AS sendable FROM given)"
    )


# The fill's values, in the order of its session function's parameters.
FILL_VALUES = ("relaxed", "tenant", "default_cap", "active", "now", "resend")
FILL_TYPES = (
    "boolean",
    "bigint",
    "integer",
    "varchar[]",
    "timestamp with time zone",
    "timestamp with time zone",
)


@functools.cache
def fill_statement() -> str:
    """pick_in_one_statement's SQL as it runs inside a caller's transaction."""
    return fill_sql({name: f"%({name})s" for name in FILL_VALUES})


def fill_sql(values: dict[str, str]) -> str:
    """The fill's statement; `{name}` is where it puts FILL_VALUES' value `name`. Its plan
    is good whatever the values (FILL keeps it): the rows it marks are found by id."""
    quote = connection.ops.quote_name
    instances = quote(Instance._meta.db_table)
    # set_config is in a CTE that is read, so that it runs: the commit of a statement
    # run on its own is relaxed, a caller's transaction keeps its setting.
    relaxed = (
        f"SELECT set_config('synchronous_commit', CASE WHEN {values['relaxed']} THEN 'off' "
        "ELSE current_setting('synchronous_commit') END, true) AS setting"
    )
    return (
        f"WITH relaxed AS ({relaxed}), "
        f"free AS (SELECT {free_places_sql(values)} AS n FROM relaxed), "
        f"picked AS (SELECT id FROM {instances} WHERE {due_rows_sql(values)} "
        "ORDER BY next_run_at, id LIMIT (SELECT n FROM free) FOR UPDATE SKIP LOCKED) "
        f"UPDATE {instances} SET dispatched_at = {values['now']} "
        f"WHERE {instances}.id = ANY(ARRAY(SELECT id FROM picked)) RETURNING {instances}.id"
    )


# The fill on its own, with the plan PostgreSQL made for it once per connection. As a
# prepared statement it was planned again at every call on a big table (its generic
# plan, costed with a third of the instances for each time compared, looked a thousand
# times costlier than it is): 0.2-0.3 ms a fill, more than it took to run.
FILL = rows.SessionFunction(
    "stepwell_fill",
    FILL_TYPES,
    "SETOF bigint",
    lambda: fill_sql({name: f"${n}" for n, name in enumerate(FILL_VALUES, 1)}),
)


def sweep(now: datetime | None = None, tenants: int = 200) -> int:
    """The clock's pass: fill every tenant with due work, longest-waiting tenant first."""
    now = now or timezone.now()
    waiting = (
        due(now)
        .values("tenant_id")
        .annotate(oldest=Min("next_run_at"), n=Count("pk"))
        .order_by("oldest")[:tenants]
    )
    return sum(fill(row["tenant_id"], now) for row in waiting)
