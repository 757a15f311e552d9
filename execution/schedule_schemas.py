"""The JSON shapes of schedules, triggers and tenant-wide events (API.md, second release)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import Schema
from pydantic import Field, field_validator

from execution.models import NAME_PATTERN, Schedule, ScheduleFire, TenantEvent, Trigger
from execution.schemas import KEY_PATTERN, decode_cursor
from lib import pages

POSITION_PATTERN = pages.CURSOR_PATTERN


class SchedulePath(Schema):
    name: str = Field(pattern=NAME_PATTERN, max_length=100, description="the workflow")
    schedule: str = Field(pattern=NAME_PATTERN, max_length=100)


class ScheduleNamePath(Schema):
    schedule: str = Field(pattern=NAME_PATTERN, max_length=100)


class ScheduleIn(Schema):
    cron: str | None = Field(
        default=None,
        max_length=200,
        description="5 fields: minute hour day-of-month month day-of-week, in `timezone`",
    )
    every: int | str | None = Field(
        default=None,
        description="seconds, or a duration such as '5 minutes'; fires at whole multiples "
        "of it since the Unix epoch",
    )
    timezone: str = Field(default="UTC", max_length=64, description="an IANA name, for cron")
    payload: dict[str, Any] | None = Field(default=None, description="each instance's payload")
    overlap: Literal["skip", "allow"] = Field(
        default="skip", description="skip: no new instance while the previous has not ended"
    )
    paused: bool = False

    @field_validator("every", mode="before")
    @classmethod
    def every_is_not_a_bool(cls, value):
        if isinstance(value, bool):
            raise ValueError("every must be a number of seconds or a duration string")
        return value


class ScheduleOut(Schema):
    name: str
    workflow: str
    cron: str | None
    every: int | None = Field(description="seconds")
    timezone: str
    payload: dict[str, Any]
    overlap: str
    paused: bool
    next_fire_at: datetime | None = Field(description="null while paused")
    last_fire_at: datetime | None
    created_at: datetime
    updated_at: datetime


class PageFilters(Schema):
    limit: int = Field(default=50, ge=1, le=200)


class NamePageFilters(PageFilters):
    """A page of things listed by name: the cursor is the last name of the page before."""

    cursor: str | None = Field(
        default=None, pattern=NAME_PATTERN, max_length=100, description="a next_cursor"
    )


class ScheduleFilters(NamePageFilters):
    workflow: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=100)


class SchedulePageOut(Schema):
    items: list[ScheduleOut]
    next_cursor: str | None


class FireFilters(PageFilters):
    cursor: str | None = Field(default=None, pattern=POSITION_PATTERN, description="a next_cursor")

    @field_validator("cursor")
    @classmethod
    def cursor_is_a_position(cls, value: str | None) -> str | None:
        if value is not None:
            decode_cursor(value)  # raises ValueError, which is a 422 naming the field
        return value


class FireOut(Schema):
    fire_at: datetime
    instance: str | None = Field(description="the instance it started")
    skipped: str | None = Field(
        description="why it started none: overlap, quota, not_approved, suspended, id_taken"
    )
    detail: str = Field(description="the reason in words")
    missed: int = Field(description="earlier fires given up for this one while no clock ran")


class FirePageOut(Schema):
    items: list[FireOut]
    next_cursor: str | None


class TriggerPath(Schema):
    name: str = Field(pattern=NAME_PATTERN, max_length=100, description="the workflow")
    event_type: str = Field(pattern=NAME_PATTERN, max_length=100)


class TriggerOut(Schema):
    workflow: str
    event_type: str
    created_at: datetime


class TriggerPageOut(Schema):
    items: list[TriggerOut]
    next_cursor: str | None


class TenantEventIn(Schema):
    type: str = Field(pattern=NAME_PATTERN, max_length=100)
    payload: dict[str, Any] | None = None
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=KEY_PATTERN,
        description="sending the same id again starts nothing new; made up when absent",
    )


class SkippedOut(Schema):
    workflow: str
    reason: str = Field(description="not_approved, suspended or id_taken")
    detail: str


class TenantEventOut(Schema):
    id: str
    type: str
    started: list[str] = Field(description="the ids of the instances it started")
    skipped: list[SkippedOut]
    created_at: datetime


def encode_position(moment: datetime, pk: int) -> str:
    return pages.encode(moment, pk)


def schedule_out(schedule: Schedule) -> dict:
    return {
        "name": schedule.name,
        "workflow": schedule.workflow.name,
        "cron": schedule.cron or None,
        "every": schedule.every,
        "timezone": schedule.time_zone,
        "payload": schedule.payload,
        "overlap": schedule.overlap,
        "paused": schedule.paused,
        "next_fire_at": schedule.next_fire_at,
        "last_fire_at": schedule.last_fire_at,
        "created_at": schedule.created_at,
        "updated_at": schedule.updated_at,
    }


def fire_out(fire: ScheduleFire) -> dict:
    return {
        "fire_at": fire.fire_at,
        "instance": fire.instance_key or None,
        "skipped": fire.skipped or None,
        "detail": fire.detail,
        "missed": fire.missed,
    }


def trigger_out(trigger: Trigger) -> dict:
    return {
        "workflow": trigger.workflow.name,
        "event_type": trigger.event_type,
        "created_at": trigger.created_at,
    }


def tenant_event_out(event: TenantEvent) -> dict:
    return {
        "id": event.key,
        "type": event.type,
        "started": event.started,
        "skipped": event.skipped,
        "created_at": event.created_at,
    }
