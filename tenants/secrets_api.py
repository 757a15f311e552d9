"""The secret endpoints (`/api/v1/secrets`): set, list (names and dates), delete.

A value goes in and never comes out: no answer, log line or audit entry holds it.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.http import Http404
from ninja import Path, Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import Field, field_validator

from lib.api_errors import AUTH_ERRORS, WRITE_ERRORS, Detail
from tenants.audit import request_actor
from tenants.auth import require_write
from tenants.models import Secret
from tenants.secrets import (
    MIN_VALUE_CHARS,
    SecretQuotaExceeded,
    SecretsNotConfigured,
    delete_secret,
    set_secret,
)

router = Router(tags=["secrets"])


class SecretPath(Schema):
    name: str = Field(pattern=Secret.NAME_PATTERN, description="[A-Z_][A-Z0-9_]{0,63}")


class SecretIn(Schema):
    value: str = Field(
        min_length=MIN_VALUE_CHARS,
        description="at least 8 characters, at most STEPWELL_MAX_SECRET_BYTES (4 KiB) of "
        "UTF-8; write-only: never shown again",
    )

    @field_validator("value")
    @classmethod
    def within_the_size_limit(cls, value: str) -> str:
        limit = settings.STEPWELL_MAX_SECRET_BYTES
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise ValueError(f"the value is {size} bytes; the limit is {limit} bytes")
        return value


class SecretOut(Schema):
    name: str
    created_at: datetime
    updated_at: datetime


class SecretPageOut(Schema):
    items: list[SecretOut]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )


class SecretFilters(Schema):
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(
        default=None, pattern=Secret.NAME_PATTERN, description="a next_cursor"
    )


def secret_out(secret: Secret) -> dict:
    return {"name": secret.name, "created_at": secret.created_at, "updated_at": secret.updated_at}


@router.put(
    "/secrets/{name}",
    response={200: SecretOut, 201: SecretOut, **WRITE_ERRORS, 429: Detail, 503: Detail},
)
def put_secret(request, path: Path[SecretPath], body: SecretIn):
    """Create (201) or replace (200) the secret `name`. The answer never holds the value.

    Workflow code reads it as `event.secrets["NAME"]`; whatever a step returns, logs or
    raises that holds it is stored as `[secret:NAME]`. 429 when the tenant already holds
    the most secrets allowed; 503 when the deployment has no STEPWELL_SECRET_KEYS.
    """
    require_write(request)
    try:
        secret, created = set_secret(
            request.auth.tenant, path.name, body.value, **request_actor(request)
        )
    except SecretQuotaExceeded as exc:
        raise HttpError(429, str(exc)) from None
    except SecretsNotConfigured as exc:
        raise HttpError(503, str(exc)) from None
    return Status(201 if created else 200, secret_out(secret))


@router.get("/secrets", response={200: SecretPageOut, **AUTH_ERRORS})
def list_secrets(request, filters: Query[SecretFilters]):
    """The tenant's secrets by name, `limit` per page: names and dates, never values.
    Pass `next_cursor` as `cursor` for the next page."""
    rows = Secret.objects.for_tenant(request.auth.tenant).only("name", "created_at", "updated_at")
    if filters.cursor:
        rows = rows.filter(name__gt=filters.cursor)
    page = list(rows.order_by("name")[: filters.limit + 1])
    more = len(page) > filters.limit
    page = page[: filters.limit]
    return {
        "items": [secret_out(s) for s in page],
        "next_cursor": page[-1].name if more else None,
    }


@router.delete("/secrets/{name}", response={204: None, **WRITE_ERRORS, 404: Detail})
def delete_secret_route(request, path: Path[SecretPath]):
    """Delete the secret `name`: activations that start after this no longer see it."""
    require_write(request)
    if not delete_secret(request.auth.tenant, path.name, **request_actor(request)):
        raise Http404(f"no secret named {path.name!r}")
    return Status(204, None)
