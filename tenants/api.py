"""The API token endpoints (`/api/v1/tokens`): list, create (shown once), revoke.

A token is the tenant's, not a person's, so the rule is about the token at hand:
any token that is not read-only may create and revoke the tenant's tokens, as a
developer or owner may in the console; a read-only token may only list them. A new
token cannot outlive the token that made it, so an expiring token cannot mint a
permanent one. Every creation and revocation is written to the audit log.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.http import Http404, HttpRequest
from django.utils import timezone
from ninja import Path, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import AwareDatetime, Field, field_validator

from lib.api_errors import AUTH_ERRORS, WRITE_ERRORS, Detail
from tenants.audit import audit_token
from tenants.auth import require_write
from tenants.models import ApiToken
from tenants.tokens import TokenQuotaExceeded, create_token

router = Router(tags=["tokens"])


class TokenIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    expires_at: AwareDatetime | None = Field(
        default=None,
        description="with a time zone; at most the expiry of the token making the request",
    )
    read_only: bool = Field(default=False, description="may read and validate, never change")

    @field_validator("expires_at")
    @classmethod
    def expires_in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= timezone.now():
            raise ValueError("expires_at must be in the future")
        return value


class TokenOut(Schema):
    id: int
    name: str
    prefix: str = Field(description="the first characters of the token, to recognise it")
    read_only: bool
    active: bool = Field(description="neither revoked nor expired")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="to the minute")
    revoked_at: datetime | None


class TokenCreatedOut(TokenOut):
    token: str = Field(description="the token itself: shown this once, stored only as a hash")


class TokenPath(Schema):
    id: int = Field(ge=1, lt=2**63)


def token_out(token: ApiToken) -> dict:
    return {
        "id": token.pk,
        "name": token.name,
        "prefix": token.prefix,
        "read_only": token.read_only,
        "active": token.is_active,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "last_used_at": token.last_used_at,
        "revoked_at": token.revoked_at,
    }


def capped_expiry(actor: ApiToken, wanted: datetime | None) -> datetime | None:
    if actor.expires_at is None:
        return wanted
    return min(wanted or actor.expires_at, actor.expires_at)


@transaction.atomic
def issue_token(actor: ApiToken, data: TokenIn) -> tuple[ApiToken, str]:
    """A new token of the actor's tenant, and its raw value (to show once)."""
    try:
        token, raw = create_token(
            actor.tenant,
            data.name,
            expires_at=capped_expiry(actor, data.expires_at),
            read_only=data.read_only,
        )
    except TokenQuotaExceeded as exc:
        raise HttpError(429, str(exc)) from exc
    audit_token("token.created", token, actor_token=actor)
    return token, raw


@transaction.atomic
def revoke(actor: ApiToken, token: ApiToken) -> ApiToken:
    """Revoke at once (the next request with it is 401); revoking again changes nothing."""
    revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if revoked == 1:
        audit_token("token.revoked", token, actor_token=actor)
    token.refresh_from_db()
    return token


def get_token(request: HttpRequest, pk: int) -> ApiToken:
    token = ApiToken.objects.filter(tenant=request.auth.tenant, pk=pk).first()
    if token is None:
        raise Http404(f"no token {pk}")
    return token


@router.get("/tokens", response={200: list[TokenOut], **AUTH_ERRORS})
def list_tokens(request):
    """The tenant's tokens, newest first, revoked and expired ones included; never the
    tokens themselves."""
    return [token_out(t) for t in ApiToken.objects.filter(tenant=request.auth.tenant)]


@router.post("/tokens", response={201: TokenCreatedOut, **WRITE_ERRORS, 429: Detail})
def create_token_route(request, body: TokenIn):
    """Create a token; the answer holds it in `token`, the only time it is shown.

    Needs a token that is not read-only. `expires_at` is capped at the expiry of the
    token making the request. 429 when the tenant already has the most active tokens
    allowed.
    """
    require_write(request)
    token, raw = issue_token(request.auth, body)
    return Status(201, {**token_out(token), "token": raw})


@router.delete("/tokens/{id}", response={200: TokenOut, **AUTH_ERRORS, 403: Detail, 404: Detail})
def revoke_token_route(request, path: Path[TokenPath]):
    """Revoke a token of the tenant, this one included; it fails (401) from the next
    request on. Revoking a revoked token answers 200 and changes nothing."""
    require_write(request)
    return token_out(revoke(request.auth, get_token(request, path.id)))
