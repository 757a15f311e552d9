"""Quotas held by allowances shared out from a count (execution.quotas)."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from execution import quotas, twins, workflows
from execution.models import Instance, ProgressEvent
from execution.workflows import start_instance, terminate
from tenants.models import QuotaUsage
from tests.factories import set_quota


def left(tenant, kind: str) -> int:
    return sum(QuotaUsage.objects.filter(tenant=tenant).values_list(f"{kind}_left", flat=True))


def counts(queries) -> list[str]:
    return [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]


def test_the_first_start_counts_and_shares_out_the_room_left(acme, waiter):
    set_quota(acme, running_instances=17, instance_starts_per_minute=600)
    start_instance(waiter, rate=True)
    assert QuotaUsage.objects.filter(tenant=acme).count() == QuotaUsage.SHARDS
    assert (left(acme, "running"), left(acme, "starts")) == (16, 599)


def test_a_start_with_allowance_left_counts_no_rows(acme, waiter):
    start_instance(waiter, rate=True)
    with CaptureQueriesContext(connection) as queries:
        _, created = start_instance(waiter, rate=True)
    assert created and counts(queries) == []
    assert left(acme, "running") == acme.quota.running_instances - 2


def test_either_path_stores_the_instance_due_with_its_first_event(acme, waiter):
    first, _ = start_instance(waiter, rate=True)  # no usage rows yet: the counting path
    second, _ = start_instance(waiter, rate=True)  # an allowance: one statement
    for instance in (first, second):
        instance.refresh_from_db()
        assert (instance.status, instance.last_seq) == ("queued", 1)
        assert instance.next_run_at == instance.created_at
        event = ProgressEvent.objects.get(instance=instance)
        assert (event.seq, event.type, event.data) == (1, "instance.status", {"status": "queued"})


def test_instances_made_before_any_usage_row_are_counted(acme, waiter):
    set_quota(acme, running_instances=3)
    version = waiter.current_version
    Instance.objects.bulk_create(
        Instance(tenant=acme, workflow=waiter, version=version) for _ in range(3)
    )
    with pytest.raises(quotas.QuotaExceeded, match="3 unfinished instances; the limit is 3"):
        start_instance(waiter, rate=True)


def test_lost_usage_rows_are_rebuilt_from_the_rows_they_stand_for(acme, waiter):
    set_quota(acme, running_instances=2)
    start_instance(waiter, rate=True)
    start_instance(waiter, rate=True)
    QuotaUsage.objects.filter(tenant=acme).delete()
    with pytest.raises(quotas.QuotaExceeded, match="running instances quota"):
        start_instance(waiter, rate=True)


def test_finished_instances_make_room_at_the_next_count(acme, waiter):
    set_quota(acme, running_instances=2)
    a, _ = start_instance(waiter, rate=True)
    start_instance(waiter, rate=True)
    with pytest.raises(quotas.QuotaExceeded):
        start_instance(waiter, rate=True)
    terminate(a)
    assert start_instance(waiter, rate=True)[1]


def test_child_starts_pass_the_rate_but_api_starts_see_them(acme, waiter):
    set_quota(acme, instance_starts_per_minute=2)
    parent, _ = start_instance(waiter, rate=True)
    for n in range(2):  # the engine's child starts: held to the running quota only
        start_instance(waiter, key=f"child-{n}", parent=parent)
    with pytest.raises(quotas.QuotaExceeded, match="3 starts in the last 60 s"):
        start_instance(waiter, rate=True)


def test_a_refused_start_stores_nothing(acme, waiter):
    set_quota(acme, running_instances=1)
    start_instance(waiter, rate=True)
    with pytest.raises(quotas.QuotaExceeded):
        start_instance(waiter, key="refused", rate=True)
    assert not Instance.objects.filter(key="refused").exists()
    assert ProgressEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_starts_on_every_shard_never_pass_the_running_limit(acme, waiter):
    """Each thread takes from a usage row of its own, so this runs the allowances of
    several rows at once; however they interleave, exactly the limit get in."""
    set_quota(acme, running_instances=5)
    start_instance(waiter, rate=True)  # counts, and shares out the 4 places left
    results, barrier = [], threading.Barrier(12)

    def start_one():
        try:
            barrier.wait()
            start_instance(waiter, rate=True)
            results.append("started")
        except quotas.QuotaExceeded:
            results.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=start_one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("started") == 4 and results.count("refused") == 8
    assert Instance.objects.filter(tenant=acme).count() == 5


def test_events_take_an_allowance_and_are_refused_exactly_at_the_limit(acme, waiter):
    from execution.workflows import send_event

    set_quota(acme, events_per_minute=3)
    instance, _ = start_instance(waiter, rate=True)
    for _ in range(3):
        send_event(instance, "ping", rate=True)
    with pytest.raises(quotas.QuotaExceeded, match="3 events in the last 60 s; the limit is 3"):
        send_event(instance, "ping", rate=True)
    assert instance.events.count() == 3


def test_an_event_with_allowance_left_counts_no_rows(acme, waiter):
    from execution.workflows import send_event

    instance, _ = start_instance(waiter, rate=True)
    send_event(instance, "ping", rate=True)  # counts, and shares out the room left
    with CaptureQueriesContext(connection) as queries:
        send_event(instance, "ping", rate=True)
    assert counts(queries) == []
    assert left(acme, "events") == acme.quota.events_per_minute - 2


def test_the_room_that_does_not_divide_evenly_goes_to_this_threads_row_first(acme):
    quotas.locked_usage(acme.pk)
    quotas.share_out(acme.pk, running=quotas.SHARDS + 3, events=2)
    mine = quotas.my_shard()
    rows = {row.shard: row for row in QuotaUsage.objects.filter(tenant=acme)}
    extra = {(mine + i) % quotas.SHARDS for i in range(3)}
    assert [rows[s].running_left for s in range(quotas.SHARDS)] == [
        2 if s in extra else 1 for s in range(quotas.SHARDS)
    ]
    assert rows[mine].events_left == 1 and rows[(mine + 1) % quotas.SHARDS].events_left == 1
    assert sum(row.events_left for row in rows.values()) == 2


def test_a_count_that_finds_every_usage_row_locks_them_in_one_query(acme):
    quotas.locked_usage(acme.pk)
    with CaptureQueriesContext(connection) as queries:
        quotas.locked_usage(acme.pk)
    assert len(queries) == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the one statement is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_a_tenants_first_start_counts_ahead_then_starts_in_one_statement(acme, waiter, monkeypatch):
    set_quota(acme, running_instances=17, instance_starts_per_minute=600)
    made = []
    original = workflows.start_in_one_statement
    monkeypatch.setattr(
        workflows, "start_in_one_statement", lambda *a: made.append(original(*a)) or made[-1]
    )
    monkeypatch.setattr(workflows, "create_instance", lambda *a: pytest.fail("transaction path"))
    instance, created = start_instance(waiter, rate=True)
    assert created and made == [workflows.DRY, workflows.MADE]
    instance.refresh_from_db()
    assert (instance.status, instance.last_seq) == ("queued", 1)
    assert (left(acme, "running"), left(acme, "starts")) == (16, 599)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the one statement is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_a_count_ahead_refuses_exactly_at_the_limit_and_stores_nothing(acme, waiter):
    set_quota(acme, running_instances=3, instance_starts_per_minute=600)
    version = waiter.current_version
    Instance.objects.bulk_create(
        Instance(tenant=acme, workflow=waiter, version=version) for _ in range(2)
    )
    start_instance(waiter, rate=True)  # the third place
    QuotaUsage.objects.filter(tenant=acme).delete()  # lost: the next start counts first
    with pytest.raises(quotas.QuotaExceeded, match="3 unfinished instances; the limit is 3"):
        start_instance(waiter, key="refused", rate=True)
    assert not Instance.objects.filter(key="refused").exists()
    assert Instance.objects.filter(tenant=acme).count() == 3


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the statement is PostgreSQL's")
@pytest.mark.parametrize("made", [False, True])
@pytest.mark.parametrize("rate", [False, True])
@pytest.mark.parametrize("limits", [(13, 11), (5, 11), (6, 11), (13, 7), (13, 8), (2, 2)])
def test_the_count_statement_and_its_portable_twin_refuse_and_share_out_alike(
    acme, waiter, made, rate, limits
):
    set_quota(acme, running_instances=limits[0], instance_starts_per_minute=limits[1])
    version = waiter.current_version
    old = timezone.now() - timedelta(minutes=2)
    Instance.objects.bulk_create(
        [Instance(tenant=acme, workflow=waiter, version=version) for _ in range(5)]
        + [
            Instance(tenant=acme, workflow=waiter, version=version, status="complete")
            for _ in range(2)
        ]
    )
    for _ in range(3):  # finished, and out of the minute's window
        instance = Instance.objects.create(
            tenant=acme, workflow=waiter, version=version, status="failed"
        )
        Instance.objects.filter(pk=instance.pk).update(created_at=old)

    quotas.locked_usage(acme.pk)  # the rows, so that both ways start from the same ones

    def outcome():
        QuotaUsage.objects.filter(tenant=acme).update(running_left=99, starts_left=99)
        try:
            quotas.count(acme, rate=rate, made=made)
            refused = None
        except quotas.QuotaExceeded as exc:
            refused = str(exc)
        usage = QuotaUsage.objects.filter(tenant=acme).order_by("shard")
        return refused, list(usage.values_list("shard", "running_left", "starts_left"))

    hand_written = outcome()
    with twins.portable():
        assert outcome() == hand_written
