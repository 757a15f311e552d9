"""What a status change owes the tenant's webhooks: one delivery per webhook that wants
`instance.{status}`, written in the change's own transaction (an outbox), its body, the
instance's JSON without steps, fixed now. A tenant without webhooks pays one query on
the webhooks' tenant index per change; the hand-written statements that change a status
on their own (a start, a completion) are used only when nobody listens (`listened`).
"""

from __future__ import annotations

import json

from django.core.serializers.json import DjangoJSONEncoder

from execution.models import Instance
from execution.schemas import instance_fields
from webhooks import deliveries


def event_of(status: str) -> str:
    return f"instance.{status}"


def listened(tenant_id: int, status: str) -> bool:
    """Whether a webhook of the tenant wants changes to `status`."""
    return bool(deliveries.listening(tenant_id, event_of(status)))


def announce(
    instance_pk: int, tenant_id: int, status: str, *, listened: bool | None = None
) -> None:
    """Record the deliveries the instance's change to `status` owes, in the caller's
    transaction, after the change (the body is the row as changed). `listened` False:
    the caller read in this transaction that no webhook wants it (the claim)."""
    if listened is False:
        return
    event = event_of(status)
    webhooks = deliveries.listening(tenant_id, event)
    if not webhooks:
        return
    instance = Instance.objects.select_related("workflow", "version", "parent").get(pk=instance_pk)
    body = json.dumps({"type": event, "instance": instance_fields(instance)}, cls=DjangoJSONEncoder)
    deliveries.record(webhooks, event, instance.pk, instance.key, body)
