"""API tokens: made once, shown once, stored as a hash, looked up by that hash."""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from lib import rows
from lib.rows import columns, loaded
from tenants.models import ApiToken, Quota, Tenant

TOKEN_PREFIX = "sw_"
# Touching last_used_at on every request would write on every read; once a minute is enough.
LAST_USED_RESOLUTION_SECONDS = 60


class TokenQuotaExceeded(Exception):
    """The tenant already has the most active tokens allowed; the message names the limit."""


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
    """Create a token; returns the row and the raw token, which is never stored.

    Every way of making a token (API, console, command) comes here, so the per-tenant
    cap holds for all of them.
    """
    check_token_room(tenant)
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


def check_token_room(tenant: Tenant) -> None:
    """Raise TokenQuotaExceeded if the tenant cannot have one more active token.

    Locking the tenant makes counting its tokens and adding one a single step.
    """
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
    live = ApiToken.objects.filter(tenant=tenant).active().count()
    limit = settings.STEPWELL_MAX_TOKENS_PER_TENANT
    if live >= limit:
        raise TokenQuotaExceeded(
            f"tokens quota: {live} active tokens; the limit is {limit}; revoke one first"
        )


def authenticate_token(raw: str) -> ApiToken | None:
    """The active token for a raw bearer value, with its tenant and quota, or None.

    The lookup is by the SHA-256 of the value on a unique index, so timing reveals
    nothing about how close a guess was. Every API request makes it, so it is one
    statement written once (the ORM spends longer composing the join than the
    database answering it), and it reads no date column: the dates are compared in
    SQL, and the token's are loaded only if something asks for them.
    """
    if not raw or len(raw) > 200 or not raw.startswith(TOKEN_PREFIX):
        return None
    now = timezone.now()
    stale_before = now - timedelta(seconds=LAST_USED_RESOLUTION_SECONDS)
    when = connection.ops.adapt_datetimefield_value
    with rows.cursor() as cursor:
        cursor.execute(token_query(), [when(stale_before), hash_token(raw), when(now)])
        row = cursor.fetchone()
    if row is None:
        return None
    values = iter(row)
    token = loaded(ApiToken, TOKEN_FIELDS, values)
    stale = next(values)
    token.tenant = loaded(Tenant, TENANT_FIELDS, values, suspended_at=None)
    quota = loaded(Quota, quota_fields(), values)
    if quota.pk is not None:  # a tenant without a quota row gets one on first use (Tenant.quota)
        token.tenant.quota_row = quota
    if stale:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


TOKEN_FIELDS = ("id", "tenant_id", "name", "prefix", "read_only")
# Only active tenants match: suspended_at is None.
TENANT_FIELDS = ("id", "slug", "name", "review_policy")


@functools.cache
def quota_fields() -> tuple[str, ...]:
    return tuple(f.attname for f in Quota._meta.concrete_fields)


@functools.cache
def token_query() -> str:
    qn = connection.ops.quote_name
    select = [
        *columns(ApiToken, "k", TOKEN_FIELDS),
        "(k.last_used_at IS NULL OR k.last_used_at < %s)",
        *columns(Tenant, "t", TENANT_FIELDS),
        *columns(Quota, "q", quota_fields()),
    ]
    token, tenant, quota = (qn(m._meta.db_table) for m in (ApiToken, Tenant, Quota))
    return (
        f"SELECT {', '.join(select)} FROM {token} k "
        f"JOIN {tenant} t ON t.id = k.tenant_id "
        f"LEFT JOIN {quota} q ON q.tenant_id = t.id "
        "WHERE k.token_hash = %s AND k.revoked_at IS NULL "
        "AND (k.expires_at IS NULL OR k.expires_at > %s) AND t.suspended_at IS NULL"
    )


def revoke_token(token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
