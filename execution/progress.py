"""Progress events: stored with a per-instance sequence number, then sent to live clients."""

from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone

from execution.models import Instance, ProgressEvent, Step
from execution.publisher import publish


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


def record_event(instance: Instance, type_: str, **data) -> ProgressEvent:
    """Store one event in the caller's transaction and send it once that commits.

    The sequence number comes from an atomic increment on the instance row, so two
    writers can never hand out the same number and no number is skipped.
    """
    seq = next_seq(instance.pk)
    instance.last_seq = seq
    (event,) = store_events(instance.pk, instance.key, instance.tenant_id, seq, [(type_, data)])
    return event


def store_events(
    instance_pk: int, instance_key: str, tenant_id: int, last_seq: int, events: list[tuple]
) -> list[ProgressEvent]:
    """Store (type, data) events numbered up to `last_seq`, which the caller has reserved
    on the instance row in this transaction, and send them together once it commits."""
    rows = ProgressEvent.objects.bulk_create(
        numbered(instance_pk, last_seq, events, timezone.now())
    )
    messages = [event_message(row, instance_key) for row in rows]
    transaction.on_commit(lambda: send(instance_pk, tenant_id, messages))
    return rows


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
    return {
        "seq": event.seq,
        "type": event.type,
        "instance": instance_key,
        "at": event.created_at.isoformat(),
        **event.data,
    }


def send(instance_pk: int, tenant_id: int, messages: list[dict]) -> None:
    publish([instance_group(instance_pk), tenant_group(tenant_id)], messages)
