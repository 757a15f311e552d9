"""Each hand-written PostgreSQL statement and its portable (ORM) twin leave the same rows.

Every test runs one path with the switch on (execution.twins: the hand-written
statement) and the same on another instance with it off (twins.portable()), then
compares what each left in the database, ids and clocks aside. Claim and dispatch pick
have theirs in test_dispatch.py (both ways of claiming, both ways of filling).
"""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from execution import dispatch, engine, outcomes, twins, workflows
from execution.fast_records import plain_completion_growth, record_completed_step
from execution.lifecycle import due, leases, states
from execution.models import Instance, ProgressEvent, Step
from execution.progress import record_event, reserve_and_store, store_events
from tenants.models import ApiToken, AuditLog, QuotaUsage
from tests.execution.inprocess import run_in_process
from tests.factories import make_tenant, upload

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the hand-written twins run on PostgreSQL only"
)

TWO_STEPS = """
def run(event, step):
    a = step.do("a", lambda: {"n": event.payload["n"]})
    return step.do("b", lambda: [a, "b"])
"""
NO_STEPS = """
def run(event, step):
    return {"done": event.payload["n"]}
"""
CLOCKS = {"id", "key", "created_at", "updated_at", "finished_at", "started_at", "next_run_at"}
CLOCKS |= {"lease_expires_at", "lease_owner", "instance_id", "wake_at", "dispatched_at"}


def rows_of(instance: Instance) -> dict:
    """What the instance's rows hold, ids and times aside (they differ by instance)."""
    row = Instance.objects.values().get(pk=instance.pk)
    return {
        "instance": {k: v for k, v in row.items() if k not in CLOCKS},
        "leased": row["lease_owner"] != "",
        "due": row["next_run_at"] is not None,
        "steps": [
            {k: v for k, v in step.items() if k not in CLOCKS}
            for step in instance.steps.order_by("index").values()
        ],
        "events": list(
            ProgressEvent.objects.filter(instance=instance)
            .order_by("seq")
            .values_list("seq", "type", "data")
        ),
    }


def both_ways(make, act) -> tuple[dict, dict]:
    """`act` on a fresh instance from `make`, hand-written, then portable."""
    hand = make()
    act(hand)
    with twins.portable():
        orm = make()
        act(orm)
    return rows_of(hand), rows_of(orm)


@pytest.fixture
def workflow(transactional_db):
    acme = make_tenant("acme", "alice")
    return lambda code: upload(acme, "wf", code).workflow


def make_token_row(tenant) -> ApiToken:
    return ApiToken.objects.create(tenant=tenant, name="ci", prefix="sw_ci", token_hash="ci")


def started(wf):
    return lambda: workflows.start_instance(wf, payload={"n": 7})[0]


def claimed(instance: Instance):
    activation = engine.begin(instance.pk)
    assert activation is not None
    return activation


def test_both_ways_of_recording_a_completed_step_leave_the_same_rows(workflow):
    wf = workflow(TWO_STEPS)

    def record_first_step(instance):
        activation = claimed(instance)
        outcome = outcomes.checked(run_in_process(activation))
        grown = plain_completion_growth(activation, outcome)
        assert grown is not None  # the fast path's case
        record_completed_step(activation, outcome, grown, keep=False)

    hand, orm = both_ways(started(wf), record_first_step)
    assert hand == orm
    assert [s["output"] for s in hand["steps"]] == [{"n": 7}]
    assert not hand["leased"] and hand["due"]


def test_both_ways_of_recording_the_end_leave_the_same_rows(workflow):
    wf = workflow(NO_STEPS)

    def record_end(instance):
        activation = claimed(instance)
        outcomes.record(activation, run_in_process(activation))

    hand, orm = both_ways(started(wf), record_end)
    assert hand == orm
    assert hand["instance"]["status"] == "complete" and hand["instance"]["output"] == {"done": 7}
    assert not hand["leased"] and not hand["due"]


def test_both_ways_of_recording_the_end_wake_the_same_waiting_parents(workflow, monkeypatch):
    # The hand-written end asks for waiting parents within its own statement.
    wf = workflow(NO_STEPS)
    woken: list[int] = []
    monkeypatch.setattr(due, "make_due", lambda instance: woken.append(instance.pk))

    def ended_with_parents() -> tuple[list[int], list[int]]:
        child = started(wf)()
        waiting, ended = started(wf)(), started(wf)()
        Instance.objects.filter(pk=ended.pk).update(status=Instance.Status.COMPLETE)
        for index, parent in enumerate([waiting, waiting, ended]):
            Step.objects.create(
                instance=parent,
                index=index,
                name=f"join{index}",
                kind=Step.Kind.WAIT_FOR_WORKFLOW,
                status=Step.Status.WAITING,
                target=child,
            )
        woken.clear()
        activation = claimed(child)
        outcomes.record(activation, run_in_process(activation))
        assert Instance.objects.get(pk=child.pk).status == Instance.Status.COMPLETE
        return sorted(woken), [waiting.pk]

    found, expected = ended_with_parents()
    assert found == expected
    with twins.portable():
        found, expected = ended_with_parents()
    assert found == expected


def test_both_ways_of_starting_leave_the_same_rows_and_take_the_same_allowance(workflow):
    wf = workflow(NO_STEPS)
    workflows.start_instance(wf)  # the first start counts and shares out the allowance

    def left():
        return sum(QuotaUsage.objects.values_list("starts_left", flat=True))

    before = left()
    hand, orm = both_ways(started(wf), lambda instance: None)
    assert hand == orm
    assert hand["events"] == [(1, "instance.status", {"status": "queued"})] and hand["due"]
    assert left() == before - 2


def test_both_ways_of_an_audited_start_leave_the_same_audit_entry(workflow):
    wf = workflow(NO_STEPS)
    token = make_token_row(wf.tenant)

    def audited_start():
        return workflows.start_instance(wf, key=None, actor={"actor": None, "actor_token": token})[
            0
        ]

    def entry_of(instance):
        entry = AuditLog.objects.values().get(target_id=str(instance.pk))
        assert entry["created_at"] == instance.created_at
        return {k: v for k, v in entry.items() if k not in ("id", "created_at", "target_id")}

    hand = audited_start()
    with twins.portable():
        orm = audited_start()
    assert rows_of(hand) == rows_of(orm)
    hand_entry, orm_entry = entry_of(hand), entry_of(orm)
    assert hand_entry["details"].pop("instance") == hand.key
    assert orm_entry["details"].pop("instance") == orm.key
    assert hand_entry == orm_entry
    assert hand_entry["action"] == "instance.started" and hand_entry["actor_token_id"] == token.pk
    assert hand_entry["target_type"] == "instance" and hand_entry["details"] == {"workflow": "wf"}


def unsent(instance: Instance, **columns) -> None:
    Instance.objects.filter(pk=instance.pk).update(dispatched_at=None, **columns)


# The tenant's cap, what is done to an instance started before, and whether the start
# then sends the new instance itself (else the fill after its commit has the say).
STARTS = {
    "a free place": (2, lambda older: None, True),
    "the tenant full": (1, lambda older: None, False),  # the older one was sent
    "an older one due": (3, unsent, False),
    "an older one asleep": (
        3,
        lambda older: unsent(older, next_run_at=timezone.now() + timedelta(hours=1)),
        True,
    ),
    "an older one with a lapsed lease": (
        3,
        lambda older: unsent(
            older,
            next_run_at=timezone.now() + timedelta(hours=1),
            lease_owner="gone",
            lease_expires_at=timezone.now() - timedelta(seconds=1),
        ),
        False,
    ),
}


@pytest.mark.parametrize("case", STARTS)
def test_both_ways_of_starting_send_the_new_instance_when_a_fill_would(
    case, transactional_db, monkeypatch
):
    cap, before, sendable = STARTS[case]
    monkeypatch.setattr(workflows, "full_tenants", workflows.FullTenants())

    def start(slug):
        tenant = make_tenant(slug, f"{slug}-user", concurrent_activations=cap)
        wf = upload(tenant, "wf", NO_STEPS).workflow
        sent, filled = [], []
        monkeypatch.setattr(dispatch, "enqueue", sent.append)
        monkeypatch.setattr(workflows, "send_due", filled.append)
        before(workflows.start_instance(wf)[0])
        sent.clear()
        new = workflows.start_instance(wf)[0]
        marked = Instance.objects.filter(pk=new.pk, dispatched_at__isnull=False).exists()
        assert marked == (new.dispatched_at is not None)
        return {"sent": sent == [new.pk], "filled": filled == [tenant.pk], "marked": marked}

    hand = start("hand")
    with twins.portable():
        orm = start("orm")
    assert hand == orm == {"sent": sendable, "filled": not sendable, "marked": sendable}


def test_a_start_in_a_callers_transaction_is_left_to_the_fill_after_its_commit(
    transactional_db, monkeypatch
):
    # The caller's commit may come after the clock's resend delay: no mark before it.
    def start(slug):
        wf = upload(make_tenant(slug, f"{slug}-user"), "wf", NO_STEPS).workflow
        filled = []
        monkeypatch.setattr(dispatch, "enqueue", pytest.fail)
        monkeypatch.setattr(workflows, "send_due", filled.append)
        with transaction.atomic():
            new = workflows.start_instance(wf)[0]
        assert filled == [wf.tenant_id]
        return Instance.objects.get(pk=new.pk).dispatched_at

    assert start("hand") is None
    with twins.portable():
        assert start("orm") is None


def test_both_ways_of_storing_events_leave_the_same_rows(workflow):
    wf = workflow(NO_STEPS)

    def store(instance):
        record_event(instance, "instance.resumed")
        reserve_and_store(instance, [("a", {"x": 1}), ("b", {"y": [2]})], paused_reason="user")
        last = instance.last_seq + 2
        Instance.objects.filter(pk=instance.pk).update(last_seq=last)
        store_events(instance.pk, instance.key, instance.tenant_id, last, [("c", {}), ("d", {})])

    hand, orm = both_ways(started(wf), store)
    assert hand == orm
    assert [seq for seq, _, _ in hand["events"]] == [1, 2, 3, 4, 5, 6]
    assert hand["instance"]["paused_reason"] == "user"


def test_the_switch_picks_the_portable_claim_on_postgresql_too(workflow, monkeypatch):
    calls = []
    monkeypatch.setattr(leases, "claim_in_three_statements", lambda *a: calls.append(a))
    instance = started(workflow(NO_STEPS))()
    with twins.portable():
        assert leases.claim_alone(instance.pk, "t")
    assert calls == []


def test_both_ways_of_finding_waiting_parents_find_the_same(workflow, monkeypatch):
    wf = workflow(NO_STEPS)
    child, other = started(wf)(), started(wf)()
    waiting, twice, ended, done_waiting, elsewhere = (started(wf)() for _ in range(5))
    Instance.objects.filter(pk=ended.pk).update(status=Instance.Status.COMPLETE)
    for index, (parent, target, status) in enumerate(
        [
            (waiting, child, Step.Status.WAITING),
            (twice, child, Step.Status.WAITING),
            (twice, child, Step.Status.WAITING),  # two waits on one child: woken once
            (ended, child, Step.Status.WAITING),  # an ended parent is not woken
            (done_waiting, child, Step.Status.COMPLETE),  # its wait is over
            (elsewhere, other, Step.Status.WAITING),  # it waits for another instance
        ]
    ):
        Step.objects.create(
            instance=parent,
            index=index,
            name=f"join{index}",
            kind=Step.Kind.WAIT_FOR_WORKFLOW,
            status=status,
            target=target,
        )
    woken: list[list[int]] = []

    def wake() -> list[int]:
        found: list[int] = []
        monkeypatch.setattr(due, "make_due", lambda instance: found.append(instance.pk))
        states.wake_waiting_parents(child)
        return sorted(found)

    woken.append(wake())
    with twins.portable():
        woken.append(wake())
    assert woken == [sorted([waiting.pk, twice.pk])] * 2
