"""Fair dispatch: each tenant has at most its cap of activations sent or running."""

import contextlib
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from execution import dispatch, engine, twins, workflows
from execution.lifecycle import due, leases
from execution.models import CodeVersion, Instance
from tenants.secrets import set_secret
from tests.factories import make_tenant, upload
from webhooks.models import Delivery, Webhook

CODE = """
def run(event, step):
    return step.do("one", lambda: 1)
"""


FIVE_STEPS = """
def run(event, step):
    return [step.do(f"s{i}", lambda i=i: i) for i in range(5)]
"""
TWO_STEPS_AND_A_NAP = """
def run(event, step):
    step.do("a", lambda: {"n": event.payload["n"]})
    step.do("b", lambda: [1, 2])
    return step.sleep("nap", "1 hour")
"""


def tenant_with_workflow(code: str, **quota):
    acme = make_tenant("acme", "alice", **quota)
    return acme, upload(acme, "wf", code).workflow


@pytest.fixture
def sent(monkeypatch, transactional_db):
    sent: list[int] = []
    monkeypatch.setattr(dispatch, "enqueue", sent.append)
    return sent


def flood(tenant, n):
    wf = upload(tenant, "wf", CODE).workflow
    return [workflows.start_instance(wf)[0] for _ in range(n)]


def test_a_flooding_tenant_has_at_most_its_cap_in_flight(sent):
    acme = make_tenant("acme", "alice", concurrent_activations=3)
    flood(acme, 20)
    assert len(sent) == 3
    due.sweep()
    assert len(sent) == 3


def test_another_tenant_is_sent_at_once_during_a_flood(sent):
    acme = make_tenant("acme", "alice", concurrent_activations=3)
    globex = make_tenant("globex", "bob", concurrent_activations=3)
    flood(acme, 50)
    (bob_instance,) = flood(globex, 1)
    assert sent[-1] == bob_instance.pk
    assert sent.count(bob_instance.pk) == 1


def test_a_finished_activation_frees_its_place_for_the_next(sent, in_process):
    acme = make_tenant("acme", "alice", concurrent_activations=1)
    first, second = flood(acme, 2)
    assert sent == [first.pk]
    engine.advance(sent.pop(0))
    first.refresh_from_db()
    assert first.status == "complete"  # its steps ran on in the same task
    assert sent == [second.pk]


def test_a_claim_over_the_cap_is_refused_and_left_due(sent):
    acme = make_tenant("acme", "alice", concurrent_activations=1)
    a, b = flood(acme, 2)
    assert leases.claim_alone(a.pk, "worker-a")
    assert not leases.claim_alone(b.pk, "worker-b")
    b.refresh_from_db()
    assert b.lease_owner == "" and b.dispatched_at is None


def test_a_lost_message_is_sent_again_after_the_redispatch_delay(sent, settings):
    acme = make_tenant("acme", "alice", concurrent_activations=5)
    (instance,) = flood(acme, 1)
    assert sent == [instance.pk]
    due.sweep()
    assert sent == [instance.pk]
    later = timezone.now() + timedelta(seconds=settings.STEPWELL_REDISPATCH_SECONDS + 1)
    due.sweep(now=later)
    assert sent == [instance.pk, instance.pk]


def test_a_suspended_tenants_instances_are_not_claimed(sent):
    acme = make_tenant("acme", "alice")
    (instance,) = flood(acme, 1)
    acme.suspended_at = timezone.now()
    acme.save()
    assert not leases.claim_alone(instance.pk, "w")
    instance.refresh_from_db()
    assert instance.lease_owner == ""
    # Paused for the suspension, so that it is not sent again until staff lift it.
    assert (instance.status, instance.paused_reason) == ("paused", "suspension")


def test_running_on_inline_sends_no_duplicate_messages(sent, in_process):
    _, wf = tenant_with_workflow(FIVE_STEPS, concurrent_activations=4)
    instance, _ = workflows.start_instance(wf)
    assert sent == [instance.pk]
    engine.advance(sent.pop(0))
    instance.refresh_from_db()
    assert instance.status == "complete" and instance.activations == 6
    assert sent == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the SQL twin is PostgreSQL's")
def test_both_ways_of_filling_pick_the_same_instances(sent):
    # pick_in_one_statement serves PostgreSQL outside a transaction; pick everything else.
    acme = make_tenant("acme", "alice", concurrent_activations=3)
    flood(acme, 6)
    Instance.objects.update(dispatched_at=None)
    now = timezone.now()
    one_statement = due.pick_in_one_statement(acme.pk, now)
    Instance.objects.update(dispatched_at=None)
    orm = due.pick(acme.pk, now)
    assert len(orm) == 3
    assert sorted(one_statement) == sorted(orm)
    assert set(Instance.objects.filter(dispatched_at=now).values_list("pk", flat=True)) == set(orm)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the SQL twin is PostgreSQL's")
def test_a_fill_relaxes_only_a_commit_of_its_own(sent):
    # On its own, the fill's commit does not wait for the disk (a lost mark is sent again
    # by the clock); inside a caller's transaction, that transaction's commit is untouched.
    acme = make_tenant("acme", "alice", concurrent_activations=3)
    flood(acme, 2)
    Instance.objects.update(dispatched_at=None)
    with transaction.atomic():
        assert len(due.pick_in_one_statement(acme.pk, timezone.now())) == 2
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"
        # What the statement does when it runs on its own (then it is its own transaction).
        with connection.cursor() as cursor:
            cursor.execute(
                due.fill_statement(),
                {
                    "relaxed": True,
                    "tenant": acme.pk,
                    "default_cap": 8,
                    "active": ["queued"],
                    "now": timezone.now(),
                    "resend": timezone.now(),
                },
            )
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "off"


def filled_from_two_due():
    """A tenant with two instances due and unsent, both then sent by a fill on its own."""
    acme = make_tenant("acme", "alice", concurrent_activations=3)
    flood(acme, 2)
    Instance.objects.update(dispatched_at=None)
    assert len(due.pick_in_one_statement(acme.pk, timezone.now())) == 2
    return acme


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the SQL twin is PostgreSQL's")
def test_a_fill_on_its_own_runs_in_its_session_function_with_its_commit_relaxed(sent):
    # On its own the fill is a function of the session (due.FILL), which keeps its plan.
    acme = filled_from_two_due()
    assert connection.connection in due.FILL.made
    Instance.objects.update(dispatched_at=None)
    now = timezone.now()
    values = {"relaxed": True, **due.place_params(acme.pk, now)}
    with transaction.atomic():  # to see the setting it leaves to its own transaction
        picked = due.FILL.run([values[name] for name in due.FILL_VALUES])
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "off"
            cursor.execute("SHOW plan_cache_mode")  # forced inside the function only
            assert cursor.fetchone()[0] == "auto"
    assert len(picked) == 2
    assert Instance.objects.filter(dispatched_at=now).count() == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the SQL twin is PostgreSQL's")
def test_where_sessions_do_not_keep_the_fills_function_the_fill_is_prepared(sent, monkeypatch):
    # As behind PgBouncer's transaction pooling: the function made is gone at the next call.
    monkeypatch.setattr(due.FILL, "sessions_keep_it", True)
    acme = filled_from_two_due()
    with connection.cursor() as cursor:
        cursor.execute("DISCARD TEMP")
    for _ in range(2):
        Instance.objects.update(dispatched_at=None)
        assert len(due.pick_in_one_statement(acme.pk, timezone.now())) == 2
        assert not due.FILL.sessions_keep_it


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the SQL twin is PostgreSQL's")
def test_both_ways_of_claiming_take_and_read_the_same_and_refuse_the_same(sent, in_process):
    # claim_in_three_statements serves PostgreSQL; take_lease and load_claimed, the ORM, the rest.
    _, wf = tenant_with_workflow(TWO_STEPS_AND_A_NAP, concurrent_activations=3)
    instance, _ = workflows.start_instance(wf, payload={"n": 7})
    engine.advance(sent.pop(0))
    Instance.objects.filter(pk=instance.pk).update(next_run_at=timezone.now())

    def read(claim):
        with transaction.atomic():
            instance_row, steps = claim()
            transaction.set_rollback(True)
        return instance_row, steps

    now = timezone.now()
    by_orm = read(
        lambda: leases.take_lease(instance.pk, "t") and leases.load_claimed(instance.pk, "t")
    )
    by_sql = read(
        lambda: leases.claim_in_three_statements(
            instance.pk, "t", now, now + leases.lease_duration()
        )
    )
    # What the SQL claim read of the tenant beside it; the ORM's claim leaves it to the engine.
    assert leases.reads_of(by_sql[0]) == leases.TenantReads([], running_listened=False)
    assert leases.reads_of(by_orm[0]) is None
    for (row, _steps), how in ((by_orm, "orm"), (by_sql, "sql")):
        assert row.lease_owner == "t" and row.activations == 4, how
        assert row.payload == {"n": 7} and row.version.code == wf.current_version.code, how
        assert row.tenant.quota.concurrent_activations == 3, how
    (orm_row, orm_steps), (sql_row, sql_steps) = by_orm, by_sql
    assert [s.as_history() for s in sql_steps] == [s.as_history() for s in orm_steps]
    assert [s.as_history()["output"] for s in sql_steps] == [{"n": 7}, [1, 2], None]
    assert sql_steps[-1].wake_at == orm_steps[-1].wake_at and sql_steps[-1].status == "sleeping"
    assert sql_row.created_at == orm_row.created_at and sql_row.status == orm_row.status

    # A version quarantined meanwhile: neither way claims it; both pause it alike.
    CodeVersion.objects.filter(pk=wf.current_version_id).update(status="quarantined")
    fields = ("status", "paused_reason", "status_before_pause", "lease_owner", "activations")

    def refuse(claim):
        with transaction.atomic():
            claimed = claim()
            row = Instance.objects.values(*fields).get(pk=instance.pk)
            transaction.set_rollback(True)
        return claimed, row

    held_by_orm = refuse(lambda: leases.take_lease(instance.pk, "t"))
    held_by_sql = refuse(
        lambda: leases.claim_in_three_statements(
            instance.pk, "t", now, now + leases.lease_duration()
        )
    )
    assert not held_by_orm[0] and held_by_sql[0] is None
    assert held_by_orm[1] == held_by_sql[1]
    assert held_by_sql[1] == {
        "status": "paused",
        "paused_reason": "quarantine",
        "status_before_pause": "sleeping",
        "lease_owner": "",
        "activations": 3,
    }


def test_an_activation_gets_the_same_secrets_and_webhook_notices_by_either_claim(sent):
    acme, wf = tenant_with_workflow(CODE)
    set_secret(acme, "API_KEY", "acme-value-123")
    hook = Webhook.objects.create(
        tenant=acme, url="https://hooks.example/x", secret="s" * 32, events=["instance.running"]
    )
    got = []
    for portable in (False, True):
        instance, _ = workflows.start_instance(wf)
        with twins.portable() if portable else contextlib.nullcontext():
            activation = engine.begin(instance.pk)
        got.append(activation.secrets)
        assert Delivery.objects.filter(webhook=hook, instance_id=instance.pk).count() == 1
        leases.release(instance.pk, activation.token)
    assert got == [{"API_KEY": "acme-value-123"}] * 2
