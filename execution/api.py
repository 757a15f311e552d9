"""The workflow and instance endpoints of API.md (`/api/v1`)."""

from __future__ import annotations

import json

from django.http import Http404, HttpRequest
from ninja import Path, Query, Router, Status
from ninja.errors import HttpError

from execution import quotas, workflows
from execution.models import Instance, Workflow
from execution.schemas import (
    CodeErrorsOut,
    EventAcceptedOut,
    EventIn,
    EventPageOut,
    InstanceOut,
    InstancePageOut,
    InstancePath,
    ListFilters,
    PageIn,
    StartIn,
    ValidateIn,
    ValidateOut,
    VersionCodeOut,
    VersionPath,
    WorkflowDetailOut,
    WorkflowIn,
    WorkflowOut,
    WorkflowPath,
    WorkflowUploadOut,
    decode_cursor,
    encode_cursor,
    instance_out,
    instance_summary,
    new_instance_out,
    version_out,
    workflow_out,
)
from lib.api_errors import AUTH_ERRORS, WRITE_ERRORS, Detail
from tenants.auth import require_write

router = Router(tags=["workflows"])

NOT_FOUND = {404: Detail}
QUOTA = {429: Detail}


def tenant_of(request: HttpRequest):
    return request.auth.tenant


def get_workflow(request: HttpRequest, name: str) -> Workflow:
    tenant = tenant_of(request)
    workflow = (
        Workflow.objects.for_tenant(tenant)
        .select_related("current_version")
        .filter(name=name)
        .first()
    )
    if workflow is None:
        raise Http404(f"no workflow named {name!r}")
    workflow.tenant = tenant  # the token's, with its quota already read
    return workflow


def get_instance(request: HttpRequest, key: str) -> Instance:
    tenant = tenant_of(request)
    instance = (
        Instance.objects.for_tenant(tenant)
        .select_related("workflow", "version", "parent")
        .filter(key=key)
        .first()
    )
    if instance is None:
        raise Http404(f"no instance {key!r}")
    instance.tenant = tenant  # the token's, with its quota already read
    return instance


def check_size(value, limit: int, what: str) -> None:
    size = len(json.dumps(value))
    if size > limit:
        raise HttpError(413, f"{what} is {size} bytes; the limit is {limit} bytes")


def instance_page(request: HttpRequest, filters: ListFilters) -> dict:
    """One page, newest first, by keyset on (created_at, id): the `instance_listing` index."""
    qs = Instance.objects.for_tenant(tenant_of(request)).select_related("workflow", "version")
    if filters.workflow:
        qs = qs.filter(workflow__name=filters.workflow)
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.cursor:
        created_at, pk = decode_cursor(filters.cursor)
        # The first condition bounds the index scan; the second breaks ties in time.
        qs = qs.filter(created_at__lte=created_at).exclude(created_at=created_at, pk__gte=pk)
    rows = list(qs.order_by("-created_at", "-id")[: filters.limit + 1])
    more = len(rows) > filters.limit
    rows = rows[: filters.limit]
    return {
        "items": [instance_summary(i) for i in rows],
        "next_cursor": encode_cursor(rows[-1]) if more else None,
    }


def events_page(instance: Instance, page: PageIn) -> dict:
    """One page of the events sent to the instance, oldest first, by keyset on id."""
    qs = instance.events.order_by("id")
    if page.cursor:
        qs = qs.filter(pk__gt=int(page.cursor))
    rows = list(
        qs.values("id", "type", "payload", "created_at", "consumed_by__index")[: page.limit + 1]
    )
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return {
        "items": [
            {
                "id": row["id"],
                "type": row["type"],
                "payload": row["payload"],
                "sent_at": row["created_at"],
                "consumed_by": row["consumed_by__index"],
            }
            for row in rows
        ],
        "next_cursor": str(rows[-1]["id"]) if more else None,
    }


@router.get("/workflows", response={200: list[WorkflowOut], **AUTH_ERRORS})
def list_workflows(request):
    """The tenant's workflows, by name, each with its current version."""
    return [
        workflow_out(w)
        for w in Workflow.objects.for_tenant(tenant_of(request)).select_related("current_version")
    ]


@router.put(
    "/workflows/{name}",
    response={200: WorkflowUploadOut, 201: WorkflowUploadOut, **WRITE_ERRORS, 422: CodeErrorsOut},
)
def put_workflow(request, path: Path[WorkflowPath], body: WorkflowIn):
    """Upload code as the workflow's new current version (made on first upload).

    201 with the new `version`; 200 when the code equals the current version. Invalid
    code is 422 with `detail` a list of `{line, column, message}`: the first syntax
    error, a missing or malformed `run`, and the size over the limit.
    """
    require_write(request)
    try:
        upload = workflows.upload_version(
            tenant_of(request), path.name, body.code, body.description
        )
    except workflows.CodeRejected as exc:
        return Status(422, {"detail": [e.as_dict() for e in exc.report.errors]})
    data = {**workflow_out(upload.workflow), "version": version_out(upload.version)}
    return Status(201 if upload.created else 200, data)


@router.get("/workflows/{name}", response={200: WorkflowDetailOut, **AUTH_ERRORS, **NOT_FOUND})
def get_workflow_detail(request, path: Path[WorkflowPath]):
    """The workflow with all its versions, newest first."""
    workflow = get_workflow(request, path.name)
    return {**workflow_out(workflow), "versions": [version_out(v) for v in workflow.versions.all()]}


@router.get(
    "/workflows/{name}/versions/{sha256}",
    response={200: VersionCodeOut, **AUTH_ERRORS, **NOT_FOUND},
)
def get_version(request, path: Path[VersionPath]):
    """One version of the workflow, with its code."""
    workflow = get_workflow(request, path.name)
    version = workflow.versions.filter(sha256=path.sha256).first()
    if version is None:
        raise Http404(f"workflow {path.name!r} has no version {path.sha256}")
    return {**version_out(version), "code": version.code}


@router.post("/workflows/{name}/validate", response={200: ValidateOut, **AUTH_ERRORS, 413: Detail})
def validate_workflow(request, path: Path[WorkflowPath], body: ValidateIn):
    """Check code as an upload would, saving nothing; read-only tokens may call it.

    `errors` (each with line and column) are what an upload would refuse; `flags`
    are risky uses that are allowed but shown to reviewers.
    """
    return workflows.check_code(body.code).as_dict()


@router.post(
    "/workflows/{name}/instances",
    response={
        200: InstanceOut,
        201: InstanceOut,
        **WRITE_ERRORS,
        **NOT_FOUND,
        409: Detail,
        **QUOTA,
    },
)
def start_instance(request, path: Path[WorkflowPath], body: StartIn):
    """Start an instance: 201; the same `id` again: 200 with that instance.

    409 when the workflow has no runnable version (none, or one held for review).
    413 when the payload is over the tenant's payload size; 429 over the running
    instances or instance starts per minute quota, with `detail` naming it.
    """
    require_write(request)
    workflow = workflows.workflow_for_start(tenant_of(request), path.name)
    if workflow is None:
        raise Http404(f"no workflow named {path.name!r}")
    if body.id:
        existing = Instance.objects.for_tenant(workflow.tenant).filter(key=body.id).first()
        if existing:
            return start_answer(request, workflow, existing, created=False)
    payload = body.payload or {}
    check_size(payload, workflow.tenant.quota.payload_bytes, "the payload")
    try:
        instance, created = workflows.start_instance(
            workflow, payload=payload, key=body.id, version_sha=body.version, rate=True, fresh=True
        )
    except quotas.QuotaExceeded:
        raise
    except workflows.StartError as exc:
        return Status(409, {"detail": str(exc)})
    return start_answer(request, workflow, instance, created=created)


def start_answer(request, workflow: Workflow, instance: Instance, *, created: bool) -> Status:
    if instance.workflow_id != workflow.pk:
        taken = f"instance id {instance.key!r} is taken by workflow {instance.workflow.name!r}"
        return Status(409, {"detail": taken})
    if created:
        # As it was made, from the objects in hand: no step has been recorded in it yet.
        return Status(201, new_instance_out(instance))
    return Status(200, instance_out(get_instance(request, instance.key)))


@router.get("/instances", response={200: InstancePageOut, **AUTH_ERRORS})
def list_instances(request, filters: Query[ListFilters]):
    """The tenant's instances, newest first, `limit` (at most 200) per page.

    Filter by `workflow` (name) and `status`; pass `next_cursor` as `cursor` for the
    next page. The cursor stays valid while instances are added.
    """
    return instance_page(request, filters)


@router.get("/instances/{id}", response={200: InstanceOut, **AUTH_ERRORS, **NOT_FOUND})
def get_instance_detail(request, path: Path[InstancePath]):
    """The instance with its steps, in order."""
    return instance_out(get_instance(request, path.id))


@router.get("/instances/{id}/events", response={200: EventPageOut, **AUTH_ERRORS, **NOT_FOUND})
def list_events(request, path: Path[InstancePath], page: Query[PageIn]):
    """The events sent to the instance, oldest first, each with the index of the step
    that received it (`consumed_by`, null while none has). Pass `next_cursor` as
    `cursor` for the next page."""
    return events_page(get_instance(request, path.id), page)


@router.post(
    "/instances/{id}/events",
    response={202: EventAcceptedOut, **WRITE_ERRORS, **NOT_FOUND, **QUOTA},
)
def send_event(request, path: Path[InstancePath], body: EventIn):
    """Send an event; a step waiting for its `type` receives its `payload`.

    `matched` says whether a step was waiting for that type; an event sent before the
    wait is stored, and the first wait for its type receives it. To an ended instance
    the event is stored, `matched` false and `detail` says that it has ended. 413 when
    the payload is over the tenant's payload size; 429 over the events per minute quota.
    """
    require_write(request)
    instance = get_instance(request, path.id)
    check_size(body.payload, instance.tenant.quota.payload_bytes, "the event payload")
    sent = workflows.send_event(instance, body.type, body.payload, rate=True)
    return Status(202, {"detail": sent.detail(), "id": sent.event.pk, "matched": sent.matched})


def control(request, key: str, action) -> Status:
    require_write(request)
    instance = get_instance(request, key)
    try:
        action(instance)
    except workflows.StateConflict as exc:
        return Status(409, {"detail": str(exc)})
    return Status(200, instance_out(get_instance(request, key)))


CONTROL_RESPONSES = {200: InstanceOut, **AUTH_ERRORS, 403: Detail, **NOT_FOUND, 409: Detail}


@router.post("/instances/{id}/pause", response=CONTROL_RESPONSES)
def pause_instance(request, path: Path[InstancePath]):
    """Pause an active instance: 409 when it is paused or finished."""
    return control(request, path.id, workflows.pause)


@router.post("/instances/{id}/resume", response=CONTROL_RESPONSES)
def resume_instance(request, path: Path[InstancePath]):
    """Resume a paused instance where it stopped.

    409 when it is not paused, or while a staff decision holds it (its version awaiting
    review, rejected or quarantined, or the tenant suspended), with `detail` saying which.
    """
    return control(request, path.id, workflows.resume)


@router.post("/instances/{id}/terminate", response=CONTROL_RESPONSES)
def terminate_instance(request, path: Path[InstancePath]):
    """Stop an instance for good, its unfinished step `cancelled`: 409 when it has ended."""
    return control(request, path.id, workflows.terminate)


@router.post("/instances/{id}/restart", response={**CONTROL_RESPONSES, **QUOTA})
def restart_instance(request, path: Path[InstancePath]):
    """Run again from the start, on the same version with the same payload.

    409 when that version is not approved, with `detail` saying why; 429 when a
    finished instance would go over the running instances quota.
    """
    return control(request, path.id, workflows.restart)
