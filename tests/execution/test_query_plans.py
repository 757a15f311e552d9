"""Every hot query uses an index, on tables big enough that PostgreSQL would rather not.

The module fills one tenant's tables once (tens of thousands of finished instances, their
steps, events and progress events, sleepers, schedules and webhook deliveries, then
ANALYZE), in a transaction rolled back at its end. Each test runs the real code path of
one hot query (the claim and the step reads of an activation, its record, the fill and
the clock's due and timer sweep, the list pages of the console and the API, an instance
by its id, the schedule, webhook delivery and retention sweeps), records the SQL it sent
(hand-written or the ORM's, with its values), and asks `EXPLAIN (FORMAT JSON)` for each
statement's plan: no Seq Scan may read a big table. So a change to the code that drops
a query onto a full scan fails here, however fast it is on a test's few rows.

bench/scale.py measures the same paths on a million instances.
"""

import contextlib
import uuid
from datetime import timedelta

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from execution import engine, outcomes, retention, schedules, workflows
from execution.lifecycle import due
from execution.models import Instance, Schedule
from execution.workflows import start_instance
from tests.execution.inprocess import run_in_process
from tests.factories import insert_finished_instances, make_tenant, make_token, upload
from webhooks import deliveries
from webhooks.models import Delivery, Webhook

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the plans are PostgreSQL's"
)

FINISHED = 10_000
SLEEPING = 2_000
BIG_TABLES = {
    "execution_instance",
    "execution_step",
    "execution_event",
    "execution_progressevent",
    "execution_schedule",
    "webhooks_delivery",
}
ONE_STEP = "def run(event, step):\n    return step.do('one', lambda: 1)\n"


@pytest.fixture(scope="module")
def filled(django_db_setup, django_db_blocker):
    """The big tables, filled in one transaction that the module's end rolls back."""
    with django_db_blocker.unblock(), transaction.atomic():
        tenant = make_tenant("plans", "plans-user", running_instances=10**6)
        insert_finished_instances(tenant, FINISHED, timezone.now(), with_history=FINISHED)
        expired = make_tenant("expired", "expired-user", retention_days=1)
        insert_finished_instances(expired, 20, timezone.now() - timedelta(days=3))
        workflow = upload(tenant, "one-step", ONE_STEP).workflow
        webhook = Webhook.objects.create(tenant=tenant, url="https://example.com/hook")
        with connection.cursor() as cursor:
            fill_sleepers(cursor, tenant, workflow)
            fill_schedules(cursor, tenant, workflow)
            fill_deliveries(cursor, webhook)
            # Made a day ago: the quotas count the instances started in the last minute.
            cursor.execute(
                "UPDATE execution_instance SET created_at = created_at - interval '1 day'"
            )
            for table in BIG_TABLES:
                cursor.execute(f"ANALYZE {table}")
            # The foreign keys of the rows made here are checked now, once: else every
            # test's end (Django checks deferred constraints there) checks them again.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        yield {"tenant": tenant, "workflow": workflow, "token": make_token(tenant)}
        transaction.set_rollback(True)


def fill_sleepers(cursor, tenant, workflow) -> None:
    """Sleeping instances, each on a sleep step that wakes in a day."""
    version = workflow.current_version
    cursor.execute(
        "INSERT INTO execution_instance (tenant_id, key, workflow_id, version_id, status, "
        "status_before_pause, paused_reason, payload, lease_owner, generation, last_seq, "
        "activations, history_bytes, sandbox_failures, run, created_at, updated_at, "
        "next_run_at) SELECT %s, 'nap-' || g, %s, %s, 'sleeping', '', '', '{}'::jsonb, '', 0, "
        "2, 1, 0, 0, 1, now(), now(), now() + interval '1 day' "
        "FROM generate_series(1, %s) g",
        [tenant.pk, workflow.pk, version.pk, SLEEPING],
    )
    cursor.execute(
        "INSERT INTO execution_step (instance_id, index, name, kind, status, attempts, logs, "
        "event_type, config, earlier_attempts, started_at, wake_at) SELECT id, 0, 'nap', "
        "'sleep', 'sleeping', 1, '', '', '{}'::jsonb, '[]'::jsonb, now(), next_run_at "
        "FROM execution_instance WHERE key LIKE 'nap-%%'"
    )


def fill_schedules(cursor, tenant, workflow) -> None:
    cursor.execute(
        "INSERT INTO execution_schedule (tenant_id, workflow_id, name, cron, every, time_zone, "
        "payload, overlap, paused, next_fire_at, created_at, updated_at) SELECT %s, %s, "
        "'s' || g, '', 3600, 'UTC', '{}'::jsonb, 'skip', false, now() + interval '1 hour', "
        "now(), now() FROM generate_series(1, 2000) g",
        [tenant.pk, workflow.pk],
    )


def fill_deliveries(cursor, webhook) -> None:
    """Deliveries sent long ago (next_attempt_at null), as most are."""
    cursor.execute(
        "INSERT INTO webhooks_delivery (webhook_id, event, instance_id, instance_key, body, "
        "attempts, max_attempts, error, next_attempt_at, created_at) SELECT %s, "
        "'instance.completed', g, 'k' || g, '{}', 1, 5, '', NULL, now() "
        "FROM generate_series(1, %s) g",
        [webhook.pk, FINISHED],
    )


@contextlib.contextmanager
def statements():
    """The SQL this process sends while the block runs, values rendered in (the ORM's and
    lib.rows's hand-written statements alike)."""
    sent: list[str] = []
    execute = psycopg.Cursor.execute

    def recording(cursor, query, params=None, **kwargs):
        sent.append(psycopg.ClientCursor(cursor.connection).mogrify(query, params))
        return execute(cursor, query, params, **kwargs)

    psycopg.Cursor.execute = recording
    try:
        yield sent
    finally:
        psycopg.Cursor.execute = execute


def scans(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from scans(child)


def full_scans(sql: str) -> list[str]:
    """The big tables that the statement's plan reads with a Seq Scan."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql.replace("%", "%%"))
        plan = cursor.fetchone()[0][0]["Plan"]
    return [
        node["Relation Name"]
        for node in scans(plan)
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in BIG_TABLES
    ]


def assert_indexed(sent: list[str], expect: str) -> None:
    """Every statement sent that reads a big table uses an index for it; and at least one
    statement names `expect` (the test ran the query it is about)."""
    relevant = [
        sql
        for sql in sent
        if sql.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE", "DELETE", "INSERT"))
    ]
    assert any(expect in sql for sql in relevant), f"no statement about {expect}: {sent}"
    for sql in relevant:
        scanned = full_scans(sql)
        assert not scanned, f"Seq Scan on {scanned}:\n{sql}"


def new_instance(filled) -> Instance:
    return start_instance(filled["workflow"])[0]


def test_the_claim_and_the_step_reads_of_an_activation_use_indexes(db, filled):
    instance = new_instance(filled)
    with statements() as sent:
        activation = engine.begin(instance.pk)
    assert activation is not None
    assert_indexed(sent, "lease_owner")
    assert any("execution_step" in sql and "ORDER BY" in sql for sql in sent)


def test_recording_a_step_uses_indexes(db, filled):
    instance = new_instance(filled)
    activation = engine.begin(instance.pk)
    result = run_in_process(activation)
    with statements() as sent:
        outcomes.record(activation, result)
    assert_indexed(sent, "execution_step")


def test_a_start_that_looks_for_a_place_uses_indexes(db, filled, monkeypatch):
    """The start's statement counts the tenant's places and looks for an older one due
    (as outside a transaction: the test's own would keep it from looking)."""
    monkeypatch.setattr(workflows, "may_send_itself", lambda tenant_id: True)
    with statements() as sent:
        new_instance(filled)
    assert_indexed(sent, "sendable")


def test_the_fill_and_the_clocks_due_and_timer_sweep_use_indexes(db, filled):
    """The due sweep is also the timer sweep: a sleeper is due at its next_run_at."""
    new_instance(filled)
    Instance.objects.filter(key__in=["nap-1", "nap-2"]).update(
        next_run_at=timezone.now() - timedelta(seconds=1)
    )
    with statements() as sent:
        assert due.sweep() >= 2
        due.fill(filled["tenant"].pk)
    assert_indexed(sent, "dispatched_at")


def whole_reads(plan: dict) -> list[str]:
    """The big tables that a plan reads whole: a Seq Scan, or an index scan with no
    condition (all of the index, as a merge join with all of a table's ids does)."""
    return [
        f"{node['Node Type']} on {node['Relation Name']}"
        for node in scans(plan)
        if node.get("Relation Name") in BIG_TABLES
        and (
            node["Node Type"] == "Seq Scan"
            or (node["Node Type"].startswith("Index") and "Index Cond" not in node)
        )
    ]


def kept_plan(function, values: list) -> dict:
    """The plan that a lib.rows.SessionFunction keeps for its statement whatever the
    values (its generic plan), as PostgreSQL runs it with `values`."""
    name = f"kept_{uuid.uuid4().hex}"  # a prepared statement outlives the transaction
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute(f"PREPARE {name} ({', '.join(function.parameters)}) AS {function.body()}")
        marks = ", ".join(["%s"] * len(values))
        cursor.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {name} ({marks})", values)
        plan = cursor.fetchone()[0][0]["Plan"]
        cursor.execute(f"DEALLOCATE {name}")
    return plan


def test_the_plan_the_fill_keeps_uses_indexes_whatever_the_values(db, filled):
    """On its own, the fill keeps one plan per connection (due.FILL): its generic plan,
    made without the values, must not read a big table whole for any of them."""
    new_instance(filled)
    now = timezone.now()
    values = {"relaxed": True, **due.place_params(filled["tenant"].pk, now)}
    plan = kept_plan(due.FILL, [values[name] for name in due.FILL_VALUES])
    assert not whole_reads(plan), whole_reads(plan)
    assert any(node.get("Index Name") == "instance_dispatch" for node in scans(plan))


def api(client, filled):
    return {"HTTP_AUTHORIZATION": f"Bearer {filled['token']}"}


@pytest.mark.parametrize(
    "query", ["", "?status=sleeping", "?status=complete&workflow=bulk", "?limit=5"]
)
def test_the_api_instance_list_uses_indexes(db, filled, client, query):
    with statements() as sent:
        answer = client.get(f"/api/v1/instances{query}", **api(client, filled))
        assert answer.status_code == 200
        cursor = answer.json()["next_cursor"]
        assert cursor
        following = client.get(f"/api/v1/instances?cursor={cursor}", **api(client, filled))
        assert following.status_code == 200
    assert_indexed(sent, "execution_instance")


@pytest.mark.parametrize("query", ["", "?status=sleeping", "?workflow=bulk"])
def test_the_console_instance_list_uses_indexes(db, filled, client, query):
    client.force_login(get_user_model().objects.get(username="plans-user"))
    with statements() as sent:
        assert client.get(f"/instances/{query}").status_code == 200
    assert_indexed(sent, "execution_instance")


def test_an_instance_by_its_id_uses_indexes(db, filled, client):
    with statements() as sent:
        answer = client.get("/api/v1/instances/bulk-77", **api(client, filled))
    assert answer.status_code == 200
    assert_indexed(sent, "bulk-77")


def test_the_schedule_sweep_uses_an_index(db, filled):
    Schedule.objects.filter(name="s1").update(next_fire_at=timezone.now() - timedelta(seconds=1))
    with statements() as sent:
        assert schedules.sweep() == 1
    assert_indexed(sent, "next_fire_at")


def test_the_webhook_delivery_sweep_uses_an_index(db, filled):
    Delivery.objects.filter(instance_id__in=[1, 2]).update(next_attempt_at=timezone.now())
    with statements() as sent:
        assert deliveries.sweep() == 2
    assert_indexed(sent, "next_attempt_at")


def test_the_retention_sweep_uses_indexes(db, filled):
    with statements() as sent:
        assert retention.sweep().deleted == 20
    assert_indexed(sent, "finished_at")
    assert any(sql.startswith("DELETE FROM") and "execution_step" in sql for sql in sent)


def test_a_seq_scan_of_a_big_table_is_caught(db, filled):
    """The check itself: a query without an index to use fails it."""
    with pytest.raises(AssertionError, match="Seq Scan on"):
        assert_indexed([f"SELECT count(*) FROM execution_step WHERE name = '{uuid.uuid4()}'"], "")
