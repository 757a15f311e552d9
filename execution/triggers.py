"""Triggers and tenant-wide events: an event of a type starts every workflow with a
trigger for that type, once per event id.

An event is stored first, in the transaction that starts its instances, so that a
second request with the same id waits on the first's row and then answers what it
stored. The starts are all or nothing against the quotas: one refused start rolls
back the event and every start it made (HTTP 429, nothing recorded).
"""

from __future__ import annotations

import uuid

from django.db import IntegrityError, transaction

from execution import quotas
from execution.models import TenantEvent, Trigger, Workflow
from execution.named_starts import start_named
from tenants.audit import audit
from tenants.models import Tenant


def audit_trigger(action: str, trigger: Trigger, actor: dict | None) -> None:
    """`actor`: request_actor(request)'s keywords; None for the platform's own changes."""
    audit(
        action,
        tenant=trigger.tenant,
        target=trigger,
        **(actor or {"actor": None}),
        workflow=trigger.workflow.name,
        event_type=trigger.event_type,
    )


@transaction.atomic
def add_trigger(
    workflow: Workflow, event_type: str, *, actor: dict | None = None
) -> tuple[Trigger, bool]:
    """(trigger, created); raises QuotaExceeded over the tenant's triggers quota."""
    tenant = workflow.tenant
    existing = Trigger.objects.filter(workflow=workflow, event_type=event_type).first()
    if existing is not None:
        return existing, False
    limit = tenant.quota.triggers
    count = Trigger.objects.for_tenant(tenant).count()
    if count >= limit:
        raise quotas.QuotaExceeded(f"triggers quota: {count} triggers; the limit is {limit}")
    try:
        with transaction.atomic():
            trigger = Trigger.objects.create(
                tenant=tenant, workflow=workflow, event_type=event_type
            )
    except IntegrityError:  # the same trigger, added at the same moment
        return Trigger.objects.get(workflow=workflow, event_type=event_type), False
    audit_trigger("trigger.created", trigger, actor)
    return trigger, True


@transaction.atomic
def delete_trigger(trigger: Trigger, *, actor: dict | None = None) -> None:
    audit_trigger("trigger.deleted", trigger, actor)
    trigger.delete()


def publish(
    tenant: Tenant, type_: str, payload: dict, key: str | None = None
) -> tuple[TenantEvent, bool]:
    """Store the event and start its triggered workflows: (event, new). An id seen
    before answers the stored event. Raises QuotaExceeded, with nothing stored."""
    key = key or uuid.uuid4().hex
    seen = TenantEvent.objects.for_tenant(tenant).filter(key=key).first()
    if seen is not None:
        return seen, False
    try:
        return start_triggered(tenant, type_, payload, key), True
    except IntegrityError:
        seen = TenantEvent.objects.for_tenant(tenant).filter(key=key).first()
        if seen is None:
            raise
        return seen, False


@transaction.atomic
def start_triggered(tenant: Tenant, type_: str, payload: dict, key: str) -> TenantEvent:
    event = TenantEvent.objects.create(tenant=tenant, key=key, type=type_, payload=payload)
    triggered = (
        Trigger.objects.for_tenant(tenant)
        .filter(event_type=type_)
        .select_related("workflow")
        .order_by("workflow__name")
    )
    for trigger in triggered:
        workflow = trigger.workflow
        workflow.tenant = tenant
        started = start_named(workflow, f"event:{workflow.name}:{key}", payload)
        if started.instance is not None:
            event.started.append(started.instance.key)
        else:
            event.skipped.append(
                {"workflow": workflow.name, "reason": started.reason, "detail": started.detail}
            )
    event.save(update_fields=["started", "skipped"])
    # Last, just before the commit, as quotas asks.
    quotas.take_event(tenant)
    return event
