"""API tokens: made once, shown once, stored as a hash, looked up by that hash."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from tenants.models import ApiToken, Tenant

TOKEN_PREFIX = "sw_"
# Touching last_used_at on every request would write on every read; once a minute is enough.
LAST_USED_RESOLUTION_SECONDS = 60


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def create_token(
    tenant: Tenant,
    name: str,
    *,
    created_by=None,
    expires_at: datetime | None = None,
    read_only: bool = False,
) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the raw token, which is never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        tenant=tenant,
        name=name,
        prefix=raw[:10],
        token_hash=hash_token(raw),
        created_by=created_by,
        expires_at=expires_at,
        read_only=read_only,
    )
    return token, raw


def authenticate_token(raw: str) -> ApiToken | None:
    """The active token for a raw bearer value, or None.

    The lookup is by the SHA-256 of the value on a unique index, so timing reveals
    nothing about how close a guess was.
    """
    if not raw or len(raw) > 200 or not raw.startswith(TOKEN_PREFIX):
        return None
    token = (
        ApiToken.objects.active()
        .select_related("tenant")
        .filter(token_hash=hash_token(raw), tenant__suspended_at__isnull=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if (
        token.last_used_at is None
        or (now - token.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS
    ):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def revoke_token(token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
