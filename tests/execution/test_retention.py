"""Retention: expired finished instances are deleted in short batches, with their rows."""

import importlib
import threading
import time
from datetime import datetime, timedelta

import pytest
from django.apps import apps
from django.db import close_old_connections, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from execution import retention, twins, workflows
from execution.lifecycle import states
from execution.models import Event, Instance, ProgressEvent, Step
from tenants.models import Quota, Tenant
from tests.factories import insert_finished_instances, make_tenant, make_token, set_quota, upload
from webhooks.models import Delivery, Webhook

CODE = """
def run(event, step):
    return step.do("one", lambda: 1)
"""
DAY = timedelta(days=1)


def start(tenant, key=None, **kwargs) -> Instance:
    workflow = upload(tenant, "wf", CODE).workflow
    instance, _ = workflows.start_instance(workflow, payload={}, key=key, **kwargs)
    return instance


def finish(instance: Instance, days_ago: float) -> Instance:
    states.finish(instance, Instance.Status.COMPLETE, output=1)
    finished = timezone.now() - timedelta(days=days_ago)
    Instance.objects.filter(pk=instance.pk).update(finished_at=finished)
    instance.refresh_from_db()
    return instance


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    monkeypatch.setattr("execution.dispatch.enqueue", lambda pk: None)


def test_a_new_tenant_keeps_finished_instances_30_days(db):
    tenant = Tenant.objects.create(slug="new", name="New")
    assert tenant.quota.retention_days == 30


def test_the_migration_leaves_existing_tenants_keeping_everything(db):
    old = Tenant.objects.create(slug="old", name="Old")  # no quota row yet
    migration = importlib.import_module("tenants.migrations.0007_quota_retention_days")
    migration.keep_existing_tenants_history(apps, None)
    assert Quota.objects.get(tenant=old).retention_days is None


def test_instance_json_says_when_it_expires(acme):
    set_quota(acme, retention_days=7)
    running = start(acme, "running")
    done = finish(start(acme, "done"), days_ago=1)
    api = Client(headers={"Authorization": f"Bearer {make_token(acme)}"})
    assert api.get(f"/api/v1/instances/{running.key}").json()["expires_at"] is None
    body = api.get(f"/api/v1/instances/{done.key}").json()
    expires = datetime.fromisoformat(body["expires_at"])
    assert abs(expires - (done.finished_at + 7 * DAY)) < timedelta(milliseconds=1)
    set_quota(acme, retention_days=None)
    assert api.get(f"/api/v1/instances/{done.key}").json()["expires_at"] is None


def test_expired_instances_go_with_their_steps_events_and_progress(acme, globex):
    set_quota(acme, retention_days=30)
    set_quota(globex, retention_days=None)
    old = finish(start(acme, "old"), days_ago=31)
    Step.objects.create(instance=old, index=0, name="one", kind="do", status="complete")
    Event.objects.create(instance=old, type="go")
    child = start(acme, "child", parent=old)  # still running: it only loses its parent
    recent = finish(start(acme, "recent"), days_ago=29)
    kept = finish(start(globex, "kept"), days_ago=3650)
    webhook = Webhook.objects.create(tenant=acme, url="http://127.0.0.1:9/", events=[])
    for instance in (old, recent):
        Delivery.objects.create(
            webhook=webhook, event="x", instance_id=instance.pk, instance_key=instance.key
        )

    swept = retention.sweep()

    assert swept.deleted == 1
    assert list(Delivery.objects.values_list("instance_id", flat=True)) == [recent.pk]
    assert not Instance.objects.filter(pk=old.pk).exists()
    for model in (Step, Event, ProgressEvent):
        assert not model.objects.filter(instance_id=old.pk).exists()
    assert Instance.objects.get(pk=child.pk).parent_id is None
    assert Instance.objects.filter(pk__in=[recent.pk, kept.pk]).count() == 2


def family(tenant, prefix: str) -> dict[str, Instance]:
    """A finished parent with a step that consumed an event, a progress event, a running
    child and a running instance waiting on the parent."""
    parent = start(tenant, f"{prefix}-parent")
    step = Step.objects.create(
        instance=parent, index=0, name="w", kind="wait_for_event", status="complete"
    )
    Event.objects.create(instance=parent, type="go", consumed_by=step)
    child = start(tenant, f"{prefix}-child", parent=parent)
    waiter = start(tenant, f"{prefix}-waiter")
    Step.objects.create(
        instance=waiter,
        index=0,
        name="c",
        kind="wait_for_workflow",
        status="waiting",
        target=parent,
    )
    finish(parent, days_ago=60)
    return {"parent": parent, "child": child, "waiter": waiter}


def left_of(rows: dict[str, Instance]) -> dict:
    return {
        "instances": sorted(
            (i.key.split("-", 1)[1], i.parent_id is None)
            for i in Instance.objects.filter(pk__in=[r.pk for r in rows.values()])
        ),
        "steps": sorted(
            (s.name, s.target_id is None) for s in Step.objects.filter(instance__in=rows.values())
        ),
        "events": Event.objects.filter(instance__in=rows.values()).count(),
    }


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the statements are PostgreSQL's")
def test_the_statements_and_the_collector_delete_and_clear_the_same_rows(acme):
    set_quota(acme, retention_days=30)
    by_statements = family(acme, "a")
    assert retention.sweep().deleted == 1
    with twins.portable():
        by_collector = family(acme, "b")
        assert retention.sweep().deleted == 1
    assert left_of(by_statements) == left_of(by_collector)
    assert left_of(by_statements) == {
        "instances": [("child", True), ("waiter", True)],
        "steps": [("c", True)],
        "events": 0,
    }


def test_a_deleted_instance_id_may_be_started_again(acme):
    set_quota(acme, retention_days=1)
    first = finish(start(acme, "nightly-2026-01-01"), days_ago=2)
    retention.sweep()
    again = start(acme, "nightly-2026-01-01")
    assert again.pk != first.pk
    assert again.status == Instance.Status.QUEUED


def test_the_clock_sweeps_every_interval_and_at_once_while_work_is_left(acme, monkeypatch):
    calls = []
    results = [retention.Swept(more=True), retention.Swept(), retention.Swept()]
    monkeypatch.setattr(retention, "sweep", lambda **kw: calls.append(kw) or results.pop(0))
    pace = retention.Pace(interval=3600, budget=0.25)
    assert pace.run_if_due().more  # a backlog: the next tick sweeps again
    assert pace.run_if_due() is not None
    assert pace.run_if_due() is None  # then it waits for the interval
    assert calls == [{"budget_seconds": 0.25, "after": 0}] * 2


def test_a_round_over_more_tenants_than_a_budget_reaches_goes_on_where_it_stopped(acme, globex):
    third = make_tenant("initech", "ivan")
    tenants = sorted([acme, globex, third], key=lambda t: t.pk)
    for tenant in tenants:
        set_quota(tenant, retention_days=1)
        finish(start(tenant, f"old-{tenant.pk}"), days_ago=2)
    pace = retention.Pace(interval=3600, budget=0.0)  # each sweep: one batch, then stops
    places = []
    for _ in tenants:
        swept = pace.run_if_due()
        places.append((swept.deleted, swept.more, pace.after))
    # From the first tenant every time, the last would never be reached.
    assert places == [(1, True, tenants[0].pk), (1, True, tenants[1].pk), (1, False, 0)]
    assert not Instance.objects.filter(key__startswith="old-").exists()
    assert pace.run_if_due() is None  # the round is over: the interval then


def test_the_budget_stops_a_sweep_with_work_left(acme):
    set_quota(acme, retention_days=1)
    for n in range(3):
        finish(start(acme, f"old-{n}"), days_ago=2)
    swept = retention.sweep(batch=1, budget_seconds=0.0)  # one batch, whatever the budget
    assert (swept.deleted, swept.more) == (1, True)
    swept = retention.sweep(batch=1)
    assert swept.batches == [1, 1]


ROWS = 100_000
BATCH = 5_000


class Writer(threading.Thread):
    """Writes to the tables the sweep deletes from (a running instance's row, its events)
    while the sweep runs, timing each write: a long lock would show as a slow write."""

    def __init__(self, instance: Instance):
        super().__init__(daemon=True)
        self.instance = instance
        self.stop = threading.Event()
        self.latencies: list[float] = []

    def run(self):
        try:
            n = 0
            while not self.stop.is_set():
                started = time.monotonic()
                Instance.objects.filter(pk=self.instance.pk).update(history_bytes=n)
                Event.objects.create(instance=self.instance, type=f"during-{n}")
                self.latencies.append(time.monotonic() - started)
                n += 1
                time.sleep(0.01)
        finally:
            close_old_connections()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="bulk insert in PostgreSQL SQL")
def test_100k_expired_instances_are_deleted_in_short_batches_while_writes_go_on(
    transactional_db, acme
):
    set_quota(acme, retention_days=30)
    insert_finished_instances(acme, ROWS, timezone.now() - 40 * DAY, with_history=1000)
    busy = start(acme, "busy")
    writer = Writer(busy)
    writer.start()
    try:
        time.sleep(0.2)
        swept = retention.sweep(batch=BATCH)
    finally:
        writer.stop.set()
        writer.join(10)

    assert swept.deleted == ROWS
    assert swept.batches == [BATCH] * (ROWS // BATCH)
    # Each batch is its own transaction of a few seconds at most (on two loaded cores).
    assert max(swept.seconds) < 5, swept.seconds
    assert not Instance.objects.filter(key__startswith="bulk-").exists()
    assert Step.objects.count() == 0
    assert not Event.objects.exclude(instance=busy).exists()
    # The other writes went on between and during the batches, none held for long.
    assert len(writer.latencies) >= len(swept.batches)
    assert max(writer.latencies) < 2, max(writer.latencies)
    assert Event.objects.filter(instance=busy).count() == len(writer.latencies)


def test_a_sweep_asks_once_per_retention_period_not_once_per_tenant(acme, globex):
    tenants = [make_tenant(f"quiet-{n}", f"quiet-user-{n}") for n in range(30)]
    for tenant in tenants[:20]:
        set_quota(tenant, retention_days=30)
    for tenant in tenants[20:]:
        set_quota(tenant, retention_days=7)
    set_quota(acme, retention_days=1)
    old = finish(start(acme, "old"), days_ago=2)
    recent = finish(start(globex, "recent"), days_ago=2)  # globex keeps 30 days
    assert retention.with_expired(timezone.now()) == [(acme.pk, 1)]
    with CaptureQueriesContext(connection) as queries:
        assert retention.sweep().deleted == 1
    reads = [q["sql"] for q in queries if q["sql"].startswith("SELECT")]
    # The periods in use, one query for each (1, 7, 30 days), then acme's batch.
    assert len(reads) == 1 + 3 + 1
    assert not Instance.objects.filter(pk=old.pk).exists()
    assert Instance.objects.filter(pk=recent.pk).exists()
