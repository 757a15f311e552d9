"""The lease: who may run an instance now, taken at a claim, renewed, given back.

The claim exists twice. take_lease and load_claimed through the ORM cost about ten
statements and 5 ms of a worker's CPU per instance, more than a warm step itself; on
PostgreSQL claim_in_three_statements does the same in three statements written once and
prepared on the server (lib.rows): the tenant locked and read with its quota, the lease
counted and taken with the instance and its code version read back, and the steps.
tests/execution/test_dispatch.py checks that both ways claim, read and refuse the same.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from execution import twins
from execution.lifecycle import due, known_steps, notices, states
from execution.models import CodeVersion, Instance, Step
from lib import metrics, rows
from tenants import secrets
from tenants.models import Quota, Tenant
from webhooks import deliveries


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.STEPWELL_LEASE_SECONDS)


def claim(instance_pk: int, token: str) -> tuple[Instance, list[Step]] | None:
    """Take the lease of an active instance nobody else holds, and read the instance and
    its steps, in the caller's transaction; None if it is not this worker's to run.
    Never check-then-act. On PostgreSQL three prepared statements
    (claim_in_three_statements); else take_lease and load_claimed, their portable twin."""
    if twins.hand_written():
        now = timezone.now()
        return claim_in_three_statements(instance_pk, token, now, now + lease_duration())
    relaxed_commit()
    return load_claimed(instance_pk, token) if take_lease(instance_pk, token) else None


def take_lease(instance_pk: int, token: str) -> bool:
    """Take the lease, in the caller's transaction. An instance whose version is not
    approved is never claimed: it is paused for that instead (states.hold), as
    claim_in_three_statements does.

    The tenant's row is locked while its activations are counted, so two workers
    can never both take the last free place under the tenant's concurrency cap. The
    lock is FOR NO KEY UPDATE: it must not wait for the tenant's starts, whose new rows'
    foreign keys hold a KEY SHARE lock on the same row until they commit.
    """
    now = timezone.now()
    tenant = (
        Tenant.objects.select_related("quota_row")
        .select_for_update(of=("self",), no_key=True)
        .filter(instances__pk=instance_pk)
        .first()
    )
    if tenant is None:
        return False
    if tenant.suspended_at is not None:
        states.hold(instance_pk)
        return False
    held = (
        Instance.objects.filter(tenant_id=tenant.pk, lease_expires_at__gte=now)
        .exclude(lease_owner="")
        .exclude(pk=instance_pk)
        .count()
    )
    if held >= tenant.quota.concurrent_activations:
        # Over the cap (a message sent before others took the places): due again.
        due.unsend(instance_pk)
        states.hold(instance_pk)  # if its version is not approved
        return False
    free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    lapsed = Instance.objects.filter(pk=instance_pk, lease_expires_at__lt=now).exists()
    claimed = (
        Instance.objects.filter(pk=instance_pk, status__in=Instance.ACTIVE_STATUSES)
        .filter(free, version__status=CodeVersion.Status.APPROVED)
        .update(
            lease_owner=token,
            lease_expires_at=now + lease_duration(),
            dispatched_at=None,
            activations=F("activations") + 1,
        )
    )
    if not claimed:
        states.hold(instance_pk)  # if its version is not approved
    elif lapsed:
        metrics.LEASE_RECOVERIES.inc()
    return claimed == 1


def load_claimed(instance_pk: int, token: str) -> tuple[Instance, list[Step]] | None:
    """The claimed instance, with its tenant, quota and version, and its steps (what
    claim_in_three_statements reads on PostgreSQL); None if the lease is not this activation's."""
    instance = Instance.objects.select_related("version", "tenant__quota_row").get(pk=instance_pk)
    if not holds(instance, token) or instance.status not in Instance.ACTIVE_STATUSES:
        return None
    known = known_steps.known(instance)
    later = instance.steps.filter(index__gte=len(known)).order_by("index")
    return instance, with_known(instance, known, list(later))


def with_known(instance: Instance, known: list[Step], later: list[Step]) -> list[Step]:
    """All the claimed instance's steps: those this process knew, then the rows read
    after them; what will not change is remembered for its next claim (known_steps)."""
    steps = [*known, *later]
    known_steps.remember(instance, steps)
    return steps


# --- the claim as three PostgreSQL statements, the twin of take_lease and load_claimed ---

TENANT_FIELDS = ("id", "slug", "suspended_at")
VERSION_FIELDS = ("id", "code", "sha256")
# Every step column but the logs and earlier attempts, which an activation never reads
# and may be large; a step that is saved again sets them (Step.begin_attempt reads them
# first: a deferred field is loaded when read).
HISTORY_FIELDS = tuple(
    f.attname for f in Step._meta.concrete_fields if f.attname not in ("logs", "earlier_attempts")
)


@functools.cache
def quota_fields() -> tuple[str, ...]:
    return tuple(f.attname for f in Quota._meta.concrete_fields)


@functools.cache
def instance_fields() -> tuple[str, ...]:
    return tuple(f.attname for f in Instance._meta.concrete_fields)


@functools.cache
def lock_statement() -> str:
    """The instance's tenant, locked FOR NO KEY UPDATE (see take_lease), with its quota.

    It also makes the transaction's commit asynchronous (relaxed_commit), one
    round trip fewer than a SET of its own, and reads what the activation would ask of
    the tenant next (TenantReads): two round trips fewer per claim.
    """
    qn = connection.ops.quote_name
    tenant, quota, instance = (qn(m._meta.db_table) for m in (Tenant, Quota, Instance))
    running = notices.event_of(Instance.Status.RUNNING)
    select = [
        "set_config('synchronous_commit', 'off', true)",
        *rows.columns(Tenant, "t", TENANT_FIELDS),
        *rows.columns(Quota, "q", quota_fields()),
        secrets.pairs_subquery("t.id"),
        deliveries.listening_condition("t.id", f"'{running}'"),
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
    if the instance is gone; its last column says whether the lease it took had lapsed
    (every statement of a WITH reads the rows as they were before the UPDATE)."""
    qn = connection.ops.quote_name
    instance, version = (qn(m._meta.db_table) for m in (Instance, CodeVersion))
    prior = f"SELECT lease_expires_at IS NOT NULL AS lapsed FROM {instance} WHERE id = %(pk)s"
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
        "prior.lapsed",
    ]
    return (
        f"WITH held AS ({held}), verdict AS ({verdict}), claimed AS ({claimed}), "
        f"refused AS ({refused}), prior AS ({prior}) "
        f"SELECT {', '.join(select)} FROM verdict LEFT JOIN claimed ON true "
        f"LEFT JOIN {version} v ON v.id = claimed.version_id LEFT JOIN prior ON true"
    )


@functools.cache
def steps_statement() -> str:
    qn = connection.ops.quote_name
    return (
        f"SELECT {', '.join(rows.columns(Step, 's', HISTORY_FIELDS))} "
        f"FROM {qn(Step._meta.db_table)} s WHERE s.instance_id = %s AND s.{qn('index')} >= %s "
        f"ORDER BY s.{qn('index')}"
    )


def claim_in_three_statements(
    instance_pk: int, token: str, now: datetime, until: datetime
) -> tuple[Instance, list[Step]] | None:
    """take_lease and load_claimed as three statements, in the caller's transaction.

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
        if row[-1]:
            metrics.LEASE_RECOVERIES.inc()
        values = iter(row[1:-1])
        instance = rows.loaded(Instance, instance_fields(), values)
        instance.version = rows.loaded(CodeVersion, VERSION_FIELDS, values)
        instance.tenant = tenant
        known = known_steps.known(instance)
        cursor.execute(steps_statement(), [instance_pk, len(known)])
        later = [rows.loaded(Step, HISTORY_FIELDS, iter(r)) for r in cursor.fetchall()]
    return instance, with_known(instance, known, later)


def locked_tenant(cursor, instance_pk: int) -> Tenant | None:
    """The instance's tenant with its quota, locked (lock_statement); None if it is gone."""
    cursor.execute(lock_statement(), {"pk": instance_pk})
    row = cursor.fetchone()
    if row is None:
        return None
    values = iter(row[1:-2])
    tenant = rows.loaded(Tenant, TENANT_FIELDS, values)
    quota = rows.loaded(Quota, quota_fields(), values)
    if quota.pk is not None:  # else Tenant.quota makes the row with the plan defaults
        tenant.quota_row = quota
    tenant.claim_reads = TenantReads(secret_pairs=row[-2], running_listened=row[-1])
    return tenant


@dataclass(frozen=True)
class TenantReads:
    """What the claim's lock statement read of the tenant beside its row, set on the
    claimed instance's tenant as `claim_reads`, so that the activation asks no more: its
    secrets, still encrypted (tenants.secrets.pairs_subquery), and whether a webhook
    wants `instance.running` (webhooks.deliveries.listening_condition). The portable
    claim reads neither: then the engine asks, as before."""

    secret_pairs: list[tuple[str, str]]
    running_listened: bool


def reads_of(instance: Instance) -> TenantReads | None:
    """The claim's TenantReads of the claimed instance, if the claim made them."""
    return getattr(instance.tenant, "claim_reads", None)


def holds(instance: Instance, token: str) -> bool:
    return instance.lease_owner == token


def renew(instance_pk: int, token: str) -> None:
    """Extend the lease while the activation runs (the watch's thread calls it)."""
    Instance.objects.filter(pk=instance_pk, lease_owner=token).update(
        lease_expires_at=timezone.now() + lease_duration()
    )


def release(instance_pk: int, token: str, *, retry_in: timedelta | None = None) -> None:
    """Give the lease back; with `retry_in`, the instance is due again after it."""
    # dispatched_at is left alone: the claim cleared it, and an instance this worker
    # keeps running (due.kept) has it set so that nobody else is sent it.
    fields = {"lease_owner": "", "lease_expires_at": None}
    if retry_in is not None:
        fields.update(next_run_at=timezone.now() + retry_in, dispatched_at=None)
    Instance.objects.filter(pk=instance_pk, lease_owner=token).update(**fields)


def retry_later(instance: Instance, token: str, delay: timedelta) -> None:
    """Give the lease of the locked instance back; it is due again after `delay`."""
    release(instance.pk, token, retry_in=delay)
    instance.lease_owner, instance.lease_expires_at = "", None


def relaxed_commit() -> None:
    """Let this transaction commit without waiting for the disk.

    Only for bookkeeping that may be lost in an operating-system crash without harm:
    a lease (it lapses and is claimed again), a step shown as running (it runs
    again), a wait settled at a claim (it is settled again the same way). PostgreSQL
    still writes it in order, and the next full commit writes it to disk too; a
    database restart loses nothing. Outcomes are always committed in full.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def claim_alone(instance_pk: int, token: str) -> bool:
    """claim() in a transaction of its own; True if the lease was taken."""
    with transaction.atomic():
        return claim(instance_pk, token) is not None
