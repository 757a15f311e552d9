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
    event = ProgressEvent.objects.create(
        instance=instance, seq=seq, type=type_, data=data, created_at=timezone.now()
    )
    message = event_message(event, instance.key)
    tenant_id = instance.tenant_id
    transaction.on_commit(lambda: _send(instance.pk, tenant_id, message))
    return event


def next_seq(instance_pk: int) -> int:
    table = connection.ops.quote_name(Instance._meta.db_table)
    with connection.cursor() as cursor:
        # One statement that increments and reads (PostgreSQL, and SQLite >= 3.35).
        cursor.execute(
            f"UPDATE {table} SET last_seq = last_seq + 1 WHERE id = %s RETURNING last_seq",
            [instance_pk],
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


def _send(instance_pk: int, tenant_id: int, message: dict) -> None:
    payload = {"type": "progress.event", "event": message}
    publish([instance_group(instance_pk), tenant_group(tenant_id)], payload)
