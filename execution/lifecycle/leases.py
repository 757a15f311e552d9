"""The lease: who may run an instance now, taken at a claim, renewed, given back."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from execution import twins
from execution.lifecycle import claims, due, states
from execution.models import CodeVersion, Instance, Step
from tenants.models import Tenant


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.STEPWELL_LEASE_SECONDS)


def claim(instance_pk: int, token: str) -> tuple[Instance, list[Step]] | None:
    """Take the lease of an active instance nobody else holds, and read the instance and
    its steps, in the caller's transaction; None if it is not this worker's to run.
    Never check-then-act. On PostgreSQL three prepared statements (claims); else
    take_lease and load_claimed, their portable twin."""
    if twins.hand_written():
        now = timezone.now()
        return claims.claim(instance_pk, token, now, now + lease_duration())
    relaxed_commit()
    return load_claimed(instance_pk, token) if take_lease(instance_pk, token) else None


def take_lease(instance_pk: int, token: str) -> bool:
    """Take the lease, in the caller's transaction. An instance whose version is not
    approved is never claimed: it is paused for that instead (states.hold), as
    claims.claim does.

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
    return claimed == 1


def load_claimed(instance_pk: int, token: str) -> tuple[Instance, list[Step]] | None:
    """The claimed instance, with its tenant, quota and version, and its steps (what
    claims.claim reads on PostgreSQL); None if the lease is not this activation's."""
    instance = Instance.objects.select_related("version", "tenant__quota_row").get(pk=instance_pk)
    if not holds(instance, token) or instance.status not in Instance.ACTIVE_STATUSES:
        return None
    return instance, list(instance.steps.order_by("index"))


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
