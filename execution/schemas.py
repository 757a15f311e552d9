"""The JSON shapes of API.md, and how model rows become them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Schema
from pydantic import Field

from execution.models import CodeVersion, Instance, Step, Workflow
from execution.progress import step_summary


class ProblemOut(Schema):
    line: int
    column: int
    message: str


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
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
    )
    version: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class EventIn(Schema):
    type: str = Field(min_length=1, max_length=200)
    payload: Any = None


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
    next_cursor: str | None


class AcceptedOut(Schema):
    detail: str
    id: int


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


def instance_out(instance: Instance) -> dict:
    return {
        **instance_summary(instance),
        "payload": instance.payload,
        "output": instance.output,
        "error": instance.error,
        "parent": instance.parent.key if instance.parent_id else None,
        "finished_at": instance.finished_at,
        "steps": [step_out(s) for s in instance.steps.order_by("index")],
    }
