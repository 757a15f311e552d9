"""The claim of an instance and the reading of what its activation needs, on PostgreSQL.

leases.take_lease and leases.load_claimed through the ORM cost about ten statements
and 5 ms of a worker's CPU per instance, more than a warm step itself. Here the same
is three statements written once and prepared on the server (lib.rows): the
tenant locked and read with its quota, the lease counted and taken with the instance
and its code version read back, and the steps. A test checks that both ways claim
and read the same.
"""

from __future__ import annotations

import functools
from datetime import datetime

from django.db import connection

from execution.lifecycle import states
from execution.models import CodeVersion, Instance, Step
from lib import rows
from tenants.models import Quota, Tenant

TENANT_FIELDS = ("id", "slug", "suspended_at")
VERSION_FIELDS = ("id", "code", "sha256")
# Every step column but the logs, which an activation never reads and may be large; a
# step that is saved again sets them (a deferred field is not written back unless set).
HISTORY_FIELDS = tuple(f.attname for f in Step._meta.concrete_fields if f.attname not in ("logs",))


@functools.cache
def quota_fields() -> tuple[str, ...]:
    return tuple(f.attname for f in Quota._meta.concrete_fields)


@functools.cache
def instance_fields() -> tuple[str, ...]:
    return tuple(f.attname for f in Instance._meta.concrete_fields)


@functools.cache
def lock_statement() -> str:
    """The instance's tenant, locked FOR NO KEY UPDATE (see leases.take_lease), with its quota.

    It also makes the transaction's commit asynchronous (leases.relaxed_commit), one
    round trip fewer than a SET of its own.
    """
    qn = connection.ops.quote_name
    tenant, quota, instance = (qn(m._meta.db_table) for m in (Tenant, Quota, Instance))
    select = [
        "set_config('synchronous_commit', 'off', true)",
        *rows.columns(Tenant, "t", TENANT_FIELDS),
        *rows.columns(Quota, "q", quota_fields()),
    ]
    return (
        f"SELECT {', '.join(select)} FROM {tenant} t "
        f"LEFT JOIN {quota} q ON q.tenant_id = t.id "
        f"WHERE t.id = (SELECT tenant_id FROM {instance} WHERE id = %(pk)s) "
        "FOR NO KEY UPDATE OF t"
    )


@functools.cache
def claim_statement() -> str:
    """Count the tenant's other held leases and take this one if a place is free and its
    version is approved, in one snapshot taken after the tenant's lock; over the cap, the
    instance is made due again instead. Returns the status of the instance's version and
    the claimed instance with its code version, those NULL if it was not claimed; no row
    if the instance is gone."""
    qn = connection.ops.quote_name
    instance, version = (qn(m._meta.db_table) for m in (Instance, CodeVersion))
    held = (
        f"SELECT count(*) AS n FROM {instance} WHERE tenant_id = %(tenant)s "
        "AND lease_expires_at >= %(now)s AND lease_owner <> '' AND id <> %(pk)s"
    )
    verdict = (
        f"SELECT status FROM {version} "
        f"WHERE id = (SELECT version_id FROM {instance} WHERE id = %(pk)s)"
    )
    # The two UPDATEs exclude each other (below or at the cap), so no row is written twice.
    claimed = (
        f"UPDATE {instance} SET lease_owner = %(token)s, lease_expires_at = %(until)s, "
        "dispatched_at = NULL, activations = activations + 1 "
        "WHERE id = %(pk)s AND status = ANY(%(active)s) "
        "AND (lease_expires_at IS NULL OR lease_expires_at < %(now)s) "
        "AND (SELECT n FROM held) < %(cap)s "
        "AND (SELECT status FROM verdict) = %(approved)s "
        f"RETURNING {', '.join(rows.columns(Instance, instance, instance_fields()))}"
    )
    refused = (
        f"UPDATE {instance} SET dispatched_at = NULL "
        "WHERE id = %(pk)s AND (SELECT n FROM held) >= %(cap)s"
    )
    select = [
        "verdict.status",
        *(f"claimed.{qn(Instance._meta.get_field(n).column)}" for n in instance_fields()),
        *rows.columns(CodeVersion, "v", VERSION_FIELDS),
    ]
    return (
        f"WITH held AS ({held}), verdict AS ({verdict}), claimed AS ({claimed}), "
        f"refused AS ({refused}) "
        f"SELECT {', '.join(select)} FROM verdict LEFT JOIN claimed ON true "
        f"LEFT JOIN {version} v ON v.id = claimed.version_id"
    )


@functools.cache
def steps_statement() -> str:
    qn = connection.ops.quote_name
    return (
        f"SELECT {', '.join(rows.columns(Step, 's', HISTORY_FIELDS))} "
        f"FROM {qn(Step._meta.db_table)} s WHERE s.instance_id = %s ORDER BY s.{qn('index')}"
    )


def claim(
    instance_pk: int, token: str, now: datetime, until: datetime
) -> tuple[Instance, list[Step]] | None:
    """leases.take_lease and leases.load_claimed, in the caller's transaction.

    Returns the claimed instance, with its tenant (and quota) and version, and its
    steps; None if it is gone, taken, ended, at its tenant's cap of concurrent
    activations, or held by staff: its tenant suspended or its version not approved.
    Then an active instance is paused for that (states.hold), so that it waits for
    staff without being sent again.
    """
    with rows.cursor() as cursor:
        tenant = locked_tenant(cursor, instance_pk)
        if tenant is None or tenant.suspended_at is not None:
            if tenant is not None:
                states.hold(instance_pk)
            return None
        cursor.execute(
            claim_statement(),
            {
                "pk": instance_pk,
                "tenant": tenant.pk,
                "token": token,
                "now": now,
                "until": until,
                "active": [str(status) for status in Instance.ACTIVE_STATUSES],
                "cap": tenant.quota.concurrent_activations,
                "approved": CodeVersion.Status.APPROVED.value,
            },
        )
        row = cursor.fetchone()
        if row is None:
            return None
        verdict, claimed_pk = row[0], row[1]  # id is the first instance field
        if claimed_pk is None:
            if verdict != CodeVersion.Status.APPROVED:
                states.hold(instance_pk)
            return None
        values = iter(row[1:])
        instance = rows.loaded(Instance, instance_fields(), values)
        instance.version = rows.loaded(CodeVersion, VERSION_FIELDS, values)
        instance.tenant = tenant
        cursor.execute(steps_statement(), [instance_pk])
        steps = [rows.loaded(Step, HISTORY_FIELDS, iter(r)) for r in cursor.fetchall()]
    return instance, steps


def locked_tenant(cursor, instance_pk: int) -> Tenant | None:
    """The instance's tenant with its quota, locked (lock_statement); None if it is gone."""
    cursor.execute(lock_statement(), {"pk": instance_pk})
    row = cursor.fetchone()
    if row is None:
        return None
    values = iter(row[1:])
    tenant = rows.loaded(Tenant, TENANT_FIELDS, values)
    quota = rows.loaded(Quota, quota_fields(), values)
    if quota.pk is not None:  # else Tenant.quota makes the row with the plan defaults
        tenant.quota_row = quota
    return tenant
