"""The JSON shapes of API.md, and how model rows become them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Schema
from pydantic import Field, field_validator

from execution.models import MAX_KEY_LENGTH, NAME_PATTERN, CodeVersion, Instance, Step, Workflow
from execution.progress import step_summary
from execution.retention import expires_at
from lib import pages
from lib.api_errors import FieldErrorOut


class ProblemOut(Schema):
    line: int
    column: int
    message: str


class CodeErrorsOut(Schema):
    """Code that is not valid (each problem with its line and column), or a bad request."""

    detail: list[ProblemOut] | list[FieldErrorOut]


KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


class WorkflowPath(Schema):
    name: str = Field(pattern=NAME_PATTERN, max_length=100)


class InstancePath(Schema):
    # Clients choose ids of up to 100 characters; the ids of schedules' and events'
    # instances, made from names, may be longer.
    id: str = Field(pattern=KEY_PATTERN, max_length=MAX_KEY_LENGTH, description="the instance id")


class VersionOut(Schema):
    id: int
    sha256: str
    status: str
    status_reason: str = ""
    created_at: datetime
    flags: list[ProblemOut]


class WorkflowOut(Schema):
    name: str
    description: str
    current_version: VersionOut | None
    created_at: datetime
    updated_at: datetime


class WorkflowUploadOut(WorkflowOut):
    version: VersionOut


class WorkflowDetailOut(WorkflowOut):
    versions: list[VersionOut]


class WorkflowIn(Schema):
    code: str
    description: str | None = Field(default=None, max_length=10_000)


class ValidateIn(Schema):
    code: str


class ValidateOut(Schema):
    ok: bool
    errors: list[ProblemOut]
    flags: list[ProblemOut]


class StartIn(Schema):
    payload: dict[str, Any] | None = None
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=KEY_PATTERN,
        description="a client-chosen id: starting the same id again returns that instance",
    )
    version: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="the sha256 of the version to run; the current version when absent",
    )


class EventIn(Schema):
    type: str = Field(min_length=1, max_length=200)
    payload: Any = None


class AttemptOut(Schema):
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    status: str = Field(description="running, complete or failed (cancelled: terminated)")
    error: dict | None = None
    logs: str = ""


class StepOut(Schema):
    index: int
    name: str
    kind: str
    status: str
    attempts: int
    output: Any = None
    error: dict | None = None
    logs: str = ""
    started_at: datetime | None
    finished_at: datetime | None
    wake_at: datetime | None = None
    attempts_detail: list[AttemptOut] = Field(
        default_factory=list, description="every attempt, oldest first"
    )
    waiting_for: dict[str, str | None] | None = Field(
        default=None,
        description='a waiting step\'s {"event_type"} (an event) or {"instance"} (a child)',
    )


class InstanceOut(Schema):
    id: str
    workflow: str
    version: str
    status: str
    payload: Any
    output: Any = None
    error: dict | None = None
    parent: str | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    expires_at: datetime | None = Field(
        None,
        description=(
            "When the retention sweep deletes the instance with its steps and events: "
            "finished_at plus the tenant's retention period; null while it runs or if the "
            "tenant keeps every instance. Once deleted, its id may be used again by a new start."
        ),
    )
    steps: list[StepOut]


class InstanceSummaryOut(Schema):
    id: str
    workflow: str
    version: str
    status: str
    created_at: datetime
    updated_at: datetime


class InstancePageOut(Schema):
    items: list[InstanceSummaryOut]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )


class ListFilters(Schema):
    workflow: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=100)
    status: Instance.Status | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(
        default=None, pattern=r"^[0-9]{1,16}\.[0-9]{1,19}$", description="a next_cursor"
    )

    @field_validator("cursor")
    @classmethod
    def cursor_is_a_position(cls, value: str | None) -> str | None:
        if value is not None:
            decode_cursor(value)  # raises ValueError, which is a 422 naming the field
        return value


def encode_cursor(instance: Instance) -> str:
    """Where a page ended: the last instance's creation time (in µs) and id."""
    return pages.encode(instance.created_at, instance.pk)


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    return pages.decode(cursor)


class AcceptedOut(Schema):
    detail: str
    id: int


class EventAcceptedOut(AcceptedOut):
    matched: bool = Field(
        description="whether a step of the instance was waiting for an event of this type"
    )


class VersionPath(WorkflowPath):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the version's sha256")


class VersionCodeOut(VersionOut):
    code: str


class EventOut(Schema):
    id: int
    type: str
    payload: Any = None
    sent_at: datetime
    consumed_by: int | None = Field(description="the index of the step that received it")


class EventPageOut(Schema):
    items: list[EventOut]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )


class PageIn(Schema):
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, pattern=r"^[0-9]{1,18}$", description="a next_cursor")


def version_out(version: CodeVersion | None) -> dict | None:
    if version is None:
        return None
    return {
        "id": version.pk,
        "sha256": version.sha256,
        "status": version.status,
        "status_reason": version.status_reason,
        "created_at": version.created_at,
        "flags": version.flags,
    }


def workflow_out(workflow: Workflow) -> dict:
    return {
        "name": workflow.name,
        "description": workflow.description,
        "current_version": version_out(workflow.current_version),
        "created_at": workflow.created_at,
        "updated_at": workflow.updated_at,
    }


def step_out(step: Step) -> dict:
    return {
        **step_summary(step),
        "output": step.output,
        "error": step.error,
        "logs": step.logs,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "wake_at": step.wake_at,
        "attempts_detail": step.attempts_detail(),
        "waiting_for": step.waiting_for(),
    }


def instance_summary(instance: Instance) -> dict:
    return {
        "id": instance.key,
        "workflow": instance.workflow.name,
        "version": instance.version.sha256,
        "status": instance.status,
        "created_at": instance.created_at,
        "updated_at": instance.updated_at,
    }


def instance_fields(instance: Instance) -> dict:
    """The instance's JSON without its steps (what a webhook delivery carries)."""
    return {
        **instance_summary(instance),
        "payload": instance.payload,
        "output": instance.output,
        "error": instance.error,
        "parent": instance.parent.key if instance.parent_id else None,
        "finished_at": instance.finished_at,
        "expires_at": expires_at(instance),
    }


def instance_out(instance: Instance) -> dict:
    return {
        **instance_fields(instance),
        "steps": [step_out(s) for s in instance.steps.order_by("index")],
    }


def new_instance_out(instance: Instance) -> dict:
    """instance_out of an instance just made, from the objects in hand (no query)."""
    return {
        **instance_summary(instance),
        "payload": instance.payload,
        "output": None,
        "error": None,
        "parent": instance.parent.key if instance.parent_id else None,
        "finished_at": None,
        "expires_at": None,
        "steps": [],
    }


class HistoryStepOut(StepOut):
    shape: dict = Field(
        description="what the non-determinism check compares besides name and kind "
        "(docs/history.md); {} when nothing"
    )


class HistoryVersionOut(Schema):
    sha256: str
    code: str


class HistoryOut(Schema):
    """One run of an instance, with all a replay needs (docs/history.md)."""

    format: str = Field(description='"stepwell.history/1"')
    workflow: str
    instance: str
    run: int
    created_at: str = Field(description="when the instance was created: event.timestamp")
    started_at: datetime
    ended_at: datetime | None
    restarted_from_step: int | None
    version: HistoryVersionOut
    payload: Any
    status: str
    output: Any = None
    error: dict | None = None
    steps: list[HistoryStepOut]


class RunOut(Schema):
    run: int
    started_at: datetime
    ended_at: datetime | None
    status: str
    version: str
    restarted_from_step: int | None


class RunPageOut(Schema):
    items: list[RunOut]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )


class RunFilters(Schema):
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, pattern=r"^[0-9]{1,9}$", description="a next_cursor")


class HistoryQuery(Schema):
    run: int | None = Field(default=None, ge=1, le=2**31 - 1, description="an earlier run")


class RestartIn(Schema):
    from_step: int = Field(
        default=0, ge=0, le=2**31 - 1, description="the first step to discard and run again"
    )
    version: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="the sha256 of an approved version of the workflow to run on",
    )


class RerunIn(StartIn):
    payload: dict[str, Any] | None = Field(
        default=None, description="the new instance's payload; the same as this one's if absent"
    )
