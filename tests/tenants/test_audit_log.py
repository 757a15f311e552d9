"""The audit log cannot be edited (a PostgreSQL trigger) and keeps entries for a retention
of its own, swept by the clock in bounded batches."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from execution import clock
from tenants.audit import audit, sweep_old_entries
from tenants.models import AuditLog

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the trigger exists on PostgreSQL only"
)


def aged(tenant, days: float, action: str = "instance.started") -> AuditLog:
    return AuditLog.objects.create(
        tenant=tenant, action=action, created_at=timezone.now() - timedelta(days=days)
    )


@postgresql_only
def test_an_entry_cannot_be_updated_or_deleted(acme):
    entry = audit("tenant.suspended", actor=None, tenant=acme, target=acme, reason="unpaid")
    for change in (
        lambda: AuditLog.objects.filter(pk=entry.pk).update(reason="nothing happened"),
        lambda: AuditLog.objects.filter(pk=entry.pk).update(actor_token=None, action="x"),
        lambda: AuditLog.objects.filter(pk=entry.pk).delete(),
    ):
        with (
            pytest.raises(DatabaseError, match="audit log cannot be changed"),
            transaction.atomic(),
        ):
            change()
    entry.refresh_from_db()
    assert entry.reason == "unpaid"


@postgresql_only
def test_deleting_a_user_forgets_only_the_reference(acme):
    alice = get_user_model().objects.get(username="alice")
    entry = audit("instance.started", actor=alice, tenant=acme, target=acme, workflow="w")
    alice.delete()
    entry.refresh_from_db()
    assert (entry.actor, entry.action, entry.details) == (
        None,
        "instance.started",
        {"workflow": "w"},
    )


def test_the_sweep_deletes_what_is_past_the_retention_in_batches(acme, settings):
    settings.STEPWELL_AUDIT_RETENTION_DAYS = 30
    old = [aged(acme, 31) for _ in range(5)]
    kept = [aged(acme, 29), aged(acme, 0)]
    assert sweep_old_entries(batch=2) == 5
    assert set(AuditLog.objects.values_list("pk", flat=True)) == {e.pk for e in kept}
    assert not AuditLog.objects.filter(pk__in=[e.pk for e in old]).exists()
    assert sweep_old_entries(batch=2) == 0


def test_the_sweep_stops_after_its_time_and_the_clock_comes_back(acme, settings):
    settings.STEPWELL_AUDIT_RETENTION_DAYS = 1
    for _ in range(4):
        aged(acme, 2)
    assert sweep_old_entries(batch=1, seconds=0) == 1  # one batch, then out of time
    clock.sweep_audit_log()  # the clock's turn: the rest, within its half second
    assert not AuditLog.objects.exists()


@postgresql_only
def test_outside_the_sweep_the_same_delete_is_refused(acme, settings):
    aged(acme, 400)
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditLog.objects.all().delete()
    assert sweep_old_entries() == 1
