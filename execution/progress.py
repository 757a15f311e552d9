"""Progress events: stored with a per-instance sequence number, then sent to live clients."""

from __future__ import annotations

import functools
import json

from django.db import connection, transaction
from django.utils import timezone

from execution import twins
from execution.models import Instance, ProgressEvent, Step
from execution.publisher import publish
from lib import rows


def instance_group(instance_id: int) -> str:
    return f"instance.{instance_id}"


def tenant_group(tenant_id: int) -> str:
    return f"tenant.{tenant_id}"


def step_summary(step: Step) -> dict:
    return {
        "index": step.index,
        "name": step.name,
        "kind": step.kind,
        "status": step.status,
        "attempts": step.attempts,
    }


def started(step: Step) -> dict:
    """A step.started event's data: the step as it runs (any attempt, retries included)."""
    attempt = len(step.earlier_attempts) + 1  # the attempt that starts, not those done
    summary = {**step_summary(step), "status": Step.Status.RUNNING, "attempts": attempt}
    return {"step": summary, "status": Step.Status.RUNNING}


def record_event(instance: Instance, type_: str, **data) -> ProgressEvent:
    """Store one event in the caller's transaction and send it once that commits.

    The sequence number comes from an atomic increment on the instance row, so two
    writers can never hand out the same number and no number is skipped.
    """
    (event,) = reserve_and_store(instance, [(type_, data)])
    return event


def reserve_and_store(instance: Instance, events: list[tuple], **fields) -> list[ProgressEvent]:
    """Reserve sequence numbers for (type, data) events on the instance row, setting
    `fields` of the instance by the same UPDATE, and store the events, in the caller's
    transaction; they are sent once it commits. Sets instance.last_seq.

    On PostgreSQL one prepared statement (the UPDATE and the INSERT as CTEs); a status
    change or a settled wait paid two round trips for it, on every claim that ran one.
    """
    if not twins.hand_written():
        instance.last_seq = last = next_seq(instance.pk, len(events), **fields)
        return store_events(instance.pk, instance.key, instance.tenant_id, last, events)
    at = timezone.now()
    names = tuple(fields)
    params = [len(events)]
    params += [Instance._meta.get_field(n).get_db_prep_save(fields[n], connection) for n in names]
    params += [instance.pk, len(events), at]
    params += [[type_ for type_, _ in events], [json.dumps(data) for _, data in events]]
    with rows.cursor() as cursor:
        cursor.execute(reserve_and_store_statement(names), params)
        found = cursor.fetchall()
    if not found:
        raise Instance.DoesNotExist(f"instance {instance.pk} is gone")
    instance.last_seq = found[0][0]
    stored = numbered(instance.pk, instance.last_seq, events, at)
    for event, (_, _, pk) in zip(stored, found if events else [], strict=True):
        rows.saved(event, pk)
    messages = [event_message(event, instance.key) for event in stored]
    if messages:
        pk, tenant_id = instance.pk, instance.tenant_id
        transaction.on_commit(lambda: send(pk, tenant_id, messages))
    return stored


@functools.cache
def reserve_and_store_statement(names: tuple[str, ...]) -> str:
    qn = connection.ops.quote_name
    sets = ["last_seq = last_seq + %s"]
    sets += [f"{qn(Instance._meta.get_field(n).column)} = %s" for n in names]
    return (
        f"WITH held AS (UPDATE {qn(Instance._meta.db_table)} SET {', '.join(sets)} "
        "WHERE id = %s RETURNING id, last_seq), "
        f"stored AS (INSERT INTO {qn(ProgressEvent._meta.db_table)} "
        "(instance_id, seq, type, data, created_at) "
        "SELECT held.id, held.last_seq - %s + e.n, e.type, e.data::jsonb, %s "
        "FROM held, unnest(%s::text[], %s::text[]) WITH ORDINALITY AS e(type, data, n) "
        "RETURNING seq, id) "
        "SELECT held.last_seq, stored.seq, stored.id FROM held LEFT JOIN stored ON true "
        "ORDER BY stored.seq"
    )


def store_events(
    instance_pk: int, instance_key: str, tenant_id: int, last_seq: int, events: list[tuple]
) -> list[ProgressEvent]:
    """Store (type, data) events numbered up to `last_seq`, which the caller has reserved
    on the instance row in this transaction, and send them together once it commits."""
    stored = numbered(instance_pk, last_seq, events, timezone.now())
    if twins.hand_written():
        insert_in_one_statement(stored)
    else:
        ProgressEvent.objects.bulk_create(stored)
    messages = [event_message(event, instance_key) for event in stored]
    transaction.on_commit(lambda: send(instance_pk, tenant_id, messages))
    return stored


def insert_in_one_statement(events: list[ProgressEvent]) -> None:
    """bulk_create for one instance's events, as one statement prepared on the server
    (lib.rows): every status change and settled wait stores events, and the ORM
    spent longer composing the INSERT than PostgreSQL spent running it."""
    if not events:
        return
    with rows.cursor() as cursor:
        cursor.execute(
            insert_events_statement(),
            [
                events[0].instance_id,
                events[0].created_at,
                [e.seq for e in events],
                [e.type for e in events],
                [json.dumps(e.data) for e in events],
            ],
        )
        ids = dict(cursor.fetchall())
    for event in events:
        rows.saved(event, ids[event.seq])


@functools.cache
def insert_events_statement() -> str:
    qn = connection.ops.quote_name
    return (
        f"INSERT INTO {qn(ProgressEvent._meta.db_table)} "
        "(instance_id, seq, type, data, created_at) "
        "SELECT %s, e.seq, e.type, e.data::jsonb, %s "
        "FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS e(seq, type, data) "
        "RETURNING seq, id"
    )


def numbered(instance_pk: int, last_seq: int, events: list[tuple], at) -> list[ProgressEvent]:
    """Unsaved rows of (type, data) events numbered up to `last_seq`."""
    first = last_seq - len(events) + 1
    return [
        ProgressEvent(instance_id=instance_pk, seq=first + i, type=type_, data=data, created_at=at)
        for i, (type_, data) in enumerate(events)
    ]


def next_seq(instance_pk: int, count: int = 1, **fields) -> int:
    """Reserve `count` sequence numbers and return the last; `fields` of the instance are
    set by the same statement, an UPDATE that increments and reads (PostgreSQL, and
    SQLite >= 3.35)."""
    quote = connection.ops.quote_name
    sets, params = ["last_seq = last_seq + %s"], [count]
    for name, value in fields.items():
        field = Instance._meta.get_field(name)
        sets.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(Instance._meta.db_table)} SET {', '.join(sets)} "
            "WHERE id = %s RETURNING last_seq",
            [*params, instance_pk],
        )
        return cursor.fetchone()[0]


def event_message(event: ProgressEvent, instance_key: str) -> dict:
    return message(event.seq, event.type, instance_key, event.created_at.isoformat(), event.data)


def numbered_messages(instance_key: str, last_seq: int, events: list[tuple], at) -> list[dict]:
    """The messages of numbered's rows, without making the rows: a completed step's
    events are stored by its own statement, and only their messages are needed here."""
    first, at_text = last_seq - len(events) + 1, at.isoformat()
    return [
        message(first + i, type_, instance_key, at_text, data)
        for i, (type_, data) in enumerate(events)
    ]


def message(seq: int, type_: str, instance_key: str, at_text: str, data: dict) -> dict:
    """A progress event as browsers and the event API see it."""
    return {"seq": seq, "type": type_, "instance": instance_key, "at": at_text, **data}


def send(instance_pk: int, tenant_id: int, messages: list[dict]) -> None:
    publish([instance_group(instance_pk), tenant_group(tenant_id)], messages)
