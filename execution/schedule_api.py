"""The schedule endpoints of API.md ("Schedules")."""

from __future__ import annotations

from django.http import Http404, HttpRequest
from ninja import Path, Query, Router, Status

from execution import schedules
from execution.api import NOT_FOUND, QUOTA, check_size, get_workflow, tenant_of
from execution.models import Schedule, ScheduleFire
from execution.schedule_schemas import (
    FireFilters,
    FirePageOut,
    ScheduleFilters,
    ScheduleIn,
    ScheduleNamePath,
    ScheduleOut,
    SchedulePageOut,
    SchedulePath,
    encode_position,
    fire_out,
    schedule_out,
)
from execution.schemas import decode_cursor
from lib.api_errors import AUTH_ERRORS, WRITE_ERRORS, Detail
from tenants.audit import request_actor
from tenants.auth import require_write

router = Router(tags=["schedules"])


def field_error(name: str, message: str) -> Status:
    """422 naming the field, in the shape of every other field error."""
    error = {"type": "value_error", "loc": ["body", name], "field": name, "msg": message}
    return Status(422, {"detail": [error]})


def get_schedule(request: HttpRequest, name: str) -> Schedule:
    schedule = (
        Schedule.objects.for_tenant(tenant_of(request))
        .select_related("workflow")
        .filter(name=name)
        .first()
    )
    if schedule is None:
        raise Http404(f"no schedule named {name!r}")
    return schedule


@router.put(
    "/workflows/{name}/schedules/{schedule}",
    response={
        200: ScheduleOut,
        201: ScheduleOut,
        **WRITE_ERRORS,
        **NOT_FOUND,
        409: Detail,
        **QUOTA,
    },
)
def put_schedule(request, path: Path[SchedulePath], body: ScheduleIn):
    """Create (201) or replace (200) the schedule; exactly one of `cron` and `every`.

    422 names the bad field (an `every` or a cron more frequent than the tenant's
    shortest interval among them); 409 when the tenant has a schedule of that name on
    another workflow; 429 over the tenant's schedules quota. A replaced schedule whose
    times are unchanged keeps a fire it owes; otherwise it next fires after now.
    """
    require_write(request)
    workflow = get_workflow(request, path.name)
    payload = body.payload or {}
    check_size(payload, workflow.tenant.quota.payload_bytes, "the payload")
    spec = schedules.Spec(
        cron=body.cron,
        every=body.every,
        timezone=body.timezone,
        payload=payload,
        overlap=body.overlap,
        paused=body.paused,
    )
    try:
        schedule, created = schedules.save_schedule(
            workflow, path.schedule, spec, actor=request_actor(request)
        )
    except schedules.BadField as exc:
        return field_error(exc.field, str(exc))
    except schedules.NameTaken as exc:
        return Status(409, {"detail": str(exc)})
    return Status(201 if created else 200, schedule_out(schedule))


@router.delete(
    "/workflows/{name}/schedules/{schedule}",
    response={204: None, **WRITE_ERRORS, **NOT_FOUND},
)
def delete_schedule(request, path: Path[SchedulePath]):
    """Delete the schedule and its fires; instances it started are kept."""
    require_write(request)
    schedule = get_schedule(request, path.schedule)
    if schedule.workflow.name != path.name:
        raise Http404(f"workflow {path.name!r} has no schedule named {path.schedule!r}")
    schedules.delete_schedule(schedule, actor=request_actor(request))
    return Status(204, None)


@router.get("/schedules", response={200: SchedulePageOut, **AUTH_ERRORS})
def list_schedules(request, filters: Query[ScheduleFilters]):
    """The tenant's schedules by name, `limit` per page; filter by `workflow`."""
    rows = Schedule.objects.for_tenant(tenant_of(request)).select_related("workflow")
    if filters.workflow:
        rows = rows.filter(workflow__name=filters.workflow)
    if filters.cursor:
        rows = rows.filter(name__gt=filters.cursor)
    page = list(rows.order_by("name")[: filters.limit + 1])
    more = len(page) > filters.limit
    page = page[: filters.limit]
    return {
        "items": [schedule_out(s) for s in page],
        "next_cursor": page[-1].name if more else None,
    }


@router.get("/schedules/{schedule}/fires", response={200: FirePageOut, **AUTH_ERRORS, **NOT_FOUND})
def list_fires(request, path: Path[ScheduleNamePath], filters: Query[FireFilters]):
    """The schedule's fires, newest first: the instance each started, or why none
    (`skipped`). Each schedule keeps its newest 1000 fires."""
    schedule = get_schedule(request, path.schedule)
    rows = ScheduleFire.objects.filter(schedule=schedule)
    if filters.cursor:
        fire_at, pk = decode_cursor(filters.cursor)
        rows = rows.filter(fire_at__lte=fire_at).exclude(fire_at=fire_at, pk__gte=pk)
    page = list(rows.order_by("-fire_at", "-id")[: filters.limit + 1])
    more = len(page) > filters.limit
    page = page[: filters.limit]
    last = page[-1] if page else None
    return {
        "items": [fire_out(f) for f in page],
        "next_cursor": encode_position(last.fire_at, last.pk) if more else None,
    }
