"""The trigger and tenant-wide event endpoints of API.md ("Tenant-wide events and triggers")."""

from __future__ import annotations

from django.http import Http404
from ninja import Path, Query, Router, Status

from execution import triggers
from execution.api import NOT_FOUND, QUOTA, check_size, get_workflow, tenant_of
from execution.schedule_schemas import (
    NamePageFilters,
    TenantEventIn,
    TenantEventOut,
    TriggerOut,
    TriggerPageOut,
    TriggerPath,
    tenant_event_out,
    trigger_out,
)
from execution.schemas import WorkflowPath
from lib.api_errors import AUTH_ERRORS, WRITE_ERRORS
from tenants.audit import request_actor
from tenants.auth import require_write

router = Router(tags=["events"])


@router.put(
    "/workflows/{name}/triggers/{event_type}",
    response={200: TriggerOut, 201: TriggerOut, **WRITE_ERRORS, **NOT_FOUND, **QUOTA},
)
def put_trigger(request, path: Path[TriggerPath]):
    """Tenant-wide events of `event_type` start this workflow: 201, or 200 if they did
    already. 429 over the tenant's triggers quota. The body, if any (`{}`), is ignored."""
    require_write(request)
    workflow = get_workflow(request, path.name)
    trigger, created = triggers.add_trigger(workflow, path.event_type, actor=request_actor(request))
    return Status(201 if created else 200, trigger_out(trigger))


@router.get(
    "/workflows/{name}/triggers",
    response={200: TriggerPageOut, **AUTH_ERRORS, **NOT_FOUND},
)
def list_triggers(request, path: Path[WorkflowPath], filters: Query[NamePageFilters]):
    """The event types that start this workflow, by name, `limit` per page."""
    workflow = get_workflow(request, path.name)
    rows = workflow.triggers.all()
    if filters.cursor:
        rows = rows.filter(event_type__gt=filters.cursor)
    page = list(rows.order_by("event_type")[: filters.limit + 1])
    more = len(page) > filters.limit
    page = page[: filters.limit]
    for trigger in page:
        trigger.workflow = workflow
    return {
        "items": [trigger_out(t) for t in page],
        "next_cursor": page[-1].event_type if more else None,
    }


@router.delete(
    "/workflows/{name}/triggers/{event_type}",
    response={204: None, **WRITE_ERRORS, **NOT_FOUND},
)
def delete_trigger(request, path: Path[TriggerPath]):
    """Events of that type no longer start this workflow."""
    require_write(request)
    workflow = get_workflow(request, path.name)
    trigger = workflow.triggers.filter(event_type=path.event_type).first()
    if trigger is None:
        raise Http404(f"workflow {path.name!r} has no trigger for {path.event_type!r}")
    triggers.delete_trigger(trigger, actor=request_actor(request))
    return Status(204, None)


@router.post("/events", response={202: TenantEventOut, **WRITE_ERRORS, **QUOTA})
def post_event(request, body: TenantEventIn):
    """A tenant-wide event: starts every workflow with a trigger for its `type`, each as
    `event:{workflow}:{id}` with the event's payload. The same `id` again starts nothing
    new and answers the same. Workflows that could not start are in `skipped` with the
    reason. 429 (and nothing stored or started) when the starts would pass the running
    instances or starts per minute quota, or the event the events per minute quota.
    To resume a waiting instance, send the event to that instance instead."""
    require_write(request)
    tenant = tenant_of(request)
    payload = body.payload or {}
    check_size(payload, tenant.quota.payload_bytes, "the event payload")
    event, _ = triggers.publish(tenant, body.type, payload, body.id)
    return Status(202, tenant_event_out(event))
