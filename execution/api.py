"""The workflow and instance endpoints of API.md (`/api/v1`)."""

from __future__ import annotations

import json

from django.http import Http404, HttpRequest
from ninja import Path, Query, Router, Schema
from ninja.errors import HttpError
from pydantic import Field

from execution import workflows
from execution.models import NAME_PATTERN, Instance, Workflow
from execution.schemas import (
    AcceptedOut,
    EventIn,
    InstanceOut,
    InstancePageOut,
    StartIn,
    ValidateIn,
    ValidateOut,
    WorkflowDetailOut,
    WorkflowIn,
    WorkflowOut,
    WorkflowUploadOut,
    instance_out,
    instance_summary,
    version_out,
    workflow_out,
)

router = Router(tags=["workflows"])


class Detail(Schema):
    detail: str


class CodeErrors(Schema):
    detail: list[dict]


class WorkflowPath(Schema):
    name: str = Field(pattern=NAME_PATTERN, max_length=100)


def tenant_of(request: HttpRequest):
    return request.auth.tenant


def require_write(request: HttpRequest) -> None:
    if request.auth.read_only:
        raise HttpError(403, "this token is read-only")


def get_workflow(request: HttpRequest, name: str) -> Workflow:
    workflow = (
        Workflow.objects.for_tenant(tenant_of(request))
        .select_related("current_version")
        .filter(name=name)
        .first()
    )
    if workflow is None:
        raise Http404(f"no workflow named {name!r}")
    return workflow


def get_instance(request: HttpRequest, key: str) -> Instance:
    instance = (
        Instance.objects.for_tenant(tenant_of(request))
        .select_related("workflow", "version", "parent")
        .filter(key=key)
        .first()
    )
    if instance is None:
        raise Http404(f"no instance {key!r}")
    return instance


def check_size(value, limit: int, what: str) -> None:
    size = len(json.dumps(value))
    if size > limit:
        raise HttpError(413, f"{what} is {size} bytes; the limit is {limit} bytes")


@router.get("/workflows", response=list[WorkflowOut])
def list_workflows(request):
    return [
        workflow_out(w)
        for w in Workflow.objects.for_tenant(tenant_of(request)).select_related("current_version")
    ]


@router.put(
    "/workflows/{name}",
    response={200: WorkflowUploadOut, 201: WorkflowUploadOut, 403: Detail, 422: CodeErrors},
)
def put_workflow(request, path: Path[WorkflowPath], body: WorkflowIn):
    require_write(request)
    try:
        upload = workflows.upload_version(
            tenant_of(request), path.name, body.code, body.description
        )
    except workflows.CodeRejected as exc:
        return 422, {"detail": [e.as_dict() for e in exc.report.errors]}
    data = {**workflow_out(upload.workflow), "version": version_out(upload.version)}
    return (201 if upload.created else 200), data


@router.get("/workflows/{name}", response=WorkflowDetailOut)
def get_workflow_detail(request, path: Path[WorkflowPath]):
    workflow = get_workflow(request, path.name)
    return {**workflow_out(workflow), "versions": [version_out(v) for v in workflow.versions.all()]}


@router.post("/workflows/{name}/validate", response=ValidateOut)
def validate_workflow(request, path: Path[WorkflowPath], body: ValidateIn):
    return workflows.check_code(body.code).as_dict()


@router.post(
    "/workflows/{name}/instances",
    response={200: InstanceOut, 201: InstanceOut, 403: Detail, 409: Detail, 413: Detail},
)
def start_instance(request, path: Path[WorkflowPath], body: StartIn):
    require_write(request)
    workflow = get_workflow(request, path.name)
    payload = body.payload or {}
    check_size(payload, workflow.tenant.quota.payload_bytes, "the payload")
    try:
        instance, created = workflows.start_instance(
            workflow, payload=payload, key=body.id, version_sha=body.version
        )
    except workflows.StartError as exc:
        return 409, {"detail": str(exc)}
    if not created and instance.workflow_id != workflow.pk:
        return 409, {
            "detail": f"instance id {body.id!r} is taken by workflow {instance.workflow.name!r}"
        }
    return (201 if created else 200), instance_out(instance)


class ListFilters(Schema):
    workflow: str | None = None
    status: Instance.Status | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, pattern=r"^[0-9]{1,20}$")


@router.get("/instances", response=InstancePageOut)
def list_instances(request, filters: Query[ListFilters]):
    qs = Instance.objects.for_tenant(tenant_of(request)).select_related("workflow", "version")
    if filters.workflow:
        qs = qs.filter(workflow__name=filters.workflow)
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.cursor:
        qs = qs.filter(pk__lt=int(filters.cursor))
    rows = list(qs.order_by("-pk")[: filters.limit + 1])
    more = len(rows) > filters.limit
    rows = rows[: filters.limit]
    return {
        "items": [instance_summary(i) for i in rows],
        "next_cursor": str(rows[-1].pk) if more else None,
    }


@router.get("/instances/{key}", response=InstanceOut)
def get_instance_detail(request, key: str):
    return instance_out(get_instance(request, key))


@router.post("/instances/{key}/events", response={202: AcceptedOut, 403: Detail, 413: Detail})
def send_event(request, key: str, body: EventIn):
    require_write(request)
    instance = get_instance(request, key)
    check_size(body.payload, instance.tenant.quota.payload_bytes, "the event payload")
    event = workflows.send_event(instance, body.type, body.payload)
    return 202, {"detail": "accepted", "id": event.pk}


def _control(request, key: str, action):
    require_write(request)
    instance = get_instance(request, key)
    try:
        action(instance)
    except workflows.StateConflict as exc:
        return 409, {"detail": str(exc)}
    return 200, instance_out(get_instance(request, key))


CONTROL_RESPONSES = {200: InstanceOut, 403: Detail, 409: Detail}


@router.post("/instances/{key}/pause", response=CONTROL_RESPONSES)
def pause_instance(request, key: str):
    return _control(request, key, workflows.pause)


@router.post("/instances/{key}/resume", response=CONTROL_RESPONSES)
def resume_instance(request, key: str):
    return _control(request, key, workflows.resume)


@router.post("/instances/{key}/terminate", response=CONTROL_RESPONSES)
def terminate_instance(request, key: str):
    return _control(request, key, workflows.terminate)


@router.post("/instances/{key}/restart", response=CONTROL_RESPONSES)
def restart_instance(request, key: str):
    return _control(request, key, workflows.restart)
