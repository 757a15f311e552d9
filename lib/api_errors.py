"""The error answers of API.md, which both apps' routers give: one shape for each.

Here rather than in an app, so tenants' token endpoints and execution's endpoints use
the same schemas without either app importing the other.
"""

from __future__ import annotations

from ninja import Schema
from pydantic import Field


class Detail(Schema):
    """Every error: `detail` says what is wrong, in words."""

    detail: str


class FieldErrorOut(Schema):
    type: str = Field(description="what kind of problem, e.g. missing, string_type, json_invalid")
    loc: list[str | int] = Field(description='where: ["body", "payload"], ["query", "limit"]')
    field: str = Field(description="the field, dotted: payload, limit; empty for the whole body")
    msg: str


class FieldErrorsOut(Schema):
    """A request whose JSON is malformed or whose fields have the wrong type or value."""

    detail: list[FieldErrorOut]


# The error answers every authenticated route may give.
AUTH_ERRORS = {401: Detail, 422: FieldErrorsOut}
WRITE_ERRORS = {**AUTH_ERRORS, 403: Detail, 413: Detail}
