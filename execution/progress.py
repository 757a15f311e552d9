"""Progress events: stored with a per-instance sequence number, then sent to live clients."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from execution.models import Instance, ProgressEvent, Step

log = logging.getLogger(__name__)


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
    Instance.objects.filter(pk=instance.pk).update(last_seq=F("last_seq") + 1)
    seq = Instance.objects.values_list("last_seq", flat=True).get(pk=instance.pk)
    instance.last_seq = seq
    event = ProgressEvent.objects.create(
        instance=instance, seq=seq, type=type_, data=data, created_at=timezone.now()
    )
    message = event_message(event, instance.key)
    tenant_id = instance.tenant_id
    transaction.on_commit(lambda: _send(instance.pk, tenant_id, message))
    return event


def event_message(event: ProgressEvent, instance_key: str) -> dict:
    return {
        "seq": event.seq,
        "type": event.type,
        "instance": instance_key,
        "at": event.created_at.isoformat(),
        **event.data,
    }


def _send(instance_pk: int, tenant_id: int, message: dict) -> None:
    # Live delivery is best effort: the stored event is the record, and clients that
    # missed it catch up with ?after=N. A Redis outage must never fail the engine.
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        payload = {"type": "progress.event", "event": message}

        async def send_both() -> None:
            await layer.group_send(instance_group(instance_pk), payload)
            await layer.group_send(tenant_group(tenant_id), payload)

        async_to_sync(send_both)()
    except Exception:
        log.warning("could not publish progress event %s", message.get("seq"), exc_info=True)
