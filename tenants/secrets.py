"""Tenants' secrets: encrypted at rest with STEPWELL_SECRET_KEYS, set, deleted and read here.

The keys are Fernet keys (the `cryptography` package): the first encrypts, every one
decrypts (MultiFernet), so a new key goes first and the old ones stay listed until
`manage.py rotate_secret_keys` has re-encrypted everything with the new one. A value is
decrypted only by the worker that hands it to one activation (values_for); the API
and the console see names and dates alone.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tenants.audit import audit
from tenants.models import Secret, Tenant

log = logging.getLogger(__name__)

NAME_RE = re.compile(Secret.NAME_PATTERN)
MIN_VALUE_CHARS = 8
ROTATE_BATCH = 500


class SecretsNotConfigured(Exception):
    """No STEPWELL_SECRET_KEYS: secrets cannot be stored."""


class SecretQuotaExceeded(Exception):
    """The tenant holds the most secrets allowed; the message names the limit."""


@functools.cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def fernet() -> MultiFernet:
    keys = tuple(settings.STEPWELL_SECRET_KEYS)
    if not keys:
        raise SecretsNotConfigured(
            "secrets are not configured on this deployment: set STEPWELL_SECRET_KEYS"
        )
    return _fernet(keys)


def encrypt(value: str) -> str:
    return fernet().encrypt(value.encode("utf-8")).decode("ascii")


def decrypt(ciphertext: str) -> str:
    return fernet().decrypt(ciphertext.encode("ascii")).decode("utf-8")


@transaction.atomic
def set_secret(
    tenant: Tenant, name: str, value: str, *, actor=None, actor_token=None
) -> tuple[Secret, bool]:
    """Create or replace the tenant's secret `name`; (row, created). Audited by name only,
    for `actor` or `actor_token` (tenants.audit.request_actor gives them)."""
    ciphertext = encrypt(value)
    # Locking the tenant makes counting its secrets and adding one a single step.
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
    secret = Secret.objects.for_tenant(tenant).filter(name=name).first()
    created = secret is None
    if created:
        check_secret_room(tenant)
        secret = Secret.objects.create(tenant=tenant, name=name, ciphertext=ciphertext)
    else:
        secret.ciphertext, secret.updated_at = ciphertext, timezone.now()
        secret.save(update_fields=["ciphertext", "updated_at"])
    action = "secret.created" if created else "secret.updated"
    audit(action, tenant=tenant, target=secret, actor=actor, actor_token=actor_token, name=name)
    return secret, created


def check_secret_room(tenant: Tenant) -> None:
    held = Secret.objects.for_tenant(tenant).count()
    limit = settings.STEPWELL_MAX_SECRETS_PER_TENANT
    if held >= limit:
        raise SecretQuotaExceeded(
            f"secrets quota: the tenant holds {held} secrets; the limit is {limit}; "
            f"delete one first"
        )


@transaction.atomic
def delete_secret(tenant: Tenant, name: str, *, actor=None, actor_token=None) -> bool:
    """Delete the tenant's secret `name`; False if it had none. Audited by name."""
    secret = Secret.objects.for_tenant(tenant).select_for_update().filter(name=name).first()
    if secret is None:
        return False
    audit(
        "secret.deleted",
        tenant=tenant,
        target=secret,
        actor=actor,
        actor_token=actor_token,
        name=name,
    )
    secret.delete()
    return True


def values_for(tenant_id: int) -> dict[str, str]:
    """The tenant's secrets, decrypted, for one activation. A secret that none of the
    keys decrypts (its key was removed too early) is left out and logged by name: the
    workflow then meets a KeyError naming it."""
    rows = Secret.objects.filter(tenant_id=tenant_id).values_list("name", "ciphertext")
    return decrypted(tenant_id, rows)


@functools.cache
def pairs_subquery(tenant_column: str) -> str:
    """values_for's rows as a PostgreSQL subquery, a JSON array of [name, ciphertext]
    (empty, not NULL, for a tenant without secrets), for a statement that reads the
    tenant anyway: the claim reads them with the tenant's lock (execution.lifecycle.
    leases), one round trip fewer per activation. `tenant_column` is SQL naming the
    tenant's id in that statement; tests/tenants/test_secrets.py checks both read alike."""
    return (
        "(SELECT COALESCE(json_agg(json_build_array(name, ciphertext) ORDER BY name), "
        f"'[]'::json) FROM {connection.ops.quote_name(Secret._meta.db_table)} "
        f"WHERE tenant_id = {tenant_column})"
    )


def decrypted(tenant_id: int, pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """{name: value} of (name, ciphertext) pairs, from values_for or pairs_subquery."""
    values = {}
    for name, ciphertext in pairs:
        try:
            values[name] = decrypt(ciphertext)
        except (InvalidToken, SecretsNotConfigured):
            log.error(
                "secret %s of tenant %s cannot be decrypted with STEPWELL_SECRET_KEYS",
                name,
                tenant_id,
            )
    return values


def rotate_all(batch: int = ROTATE_BATCH) -> tuple[int, list[Secret]]:
    """Re-encrypt every secret with the first key, `batch` rows per transaction, in
    primary-key order: (how many were re-encrypted, the rows no key decrypts, left as
    they are). Rows are locked while their batch is rewritten, so a secret set meanwhile
    is never overwritten with its old value."""
    keys = fernet()
    done, unreadable, after = 0, [], 0
    while True:
        with transaction.atomic():
            rows = list(
                Secret.objects.select_for_update().filter(pk__gt=after).order_by("pk")[:batch]
            )
            if not rows:
                return done, unreadable
            rotated = []
            for row in rows:
                try:
                    row.ciphertext = keys.rotate(row.ciphertext.encode("ascii")).decode("ascii")
                except InvalidToken:
                    unreadable.append(row)
                else:
                    rotated.append(row)
            Secret.objects.bulk_update(rotated, ["ciphertext"])
        done += len(rotated)
        after = rows[-1].pk
