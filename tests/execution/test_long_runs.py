"""A long run's per-step work on the host does not grow with its history: a claim reads
only the steps after those its process already knows (lifecycle.known_steps), and a kept
lease hands its history on instead of copying it (Activation.then)."""

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from execution import dispatch, engine, workflows
from execution.activation import Activation
from execution.lifecycle import known_steps, leases
from execution.models import Instance, Step
from tenants.models import Quota
from tests.factories import make_tenant, upload

TWO_STEPS_AND_A_NAP = """
def run(event, step):
    step.do("a", lambda: {"n": 7})
    step.do("b", lambda: [1, 2])
    return step.sleep("nap", "1 hour")
"""


def by_orm(pk):
    return leases.take_lease(pk, "t") and leases.load_claimed(pk, "t")


def by_sql(pk):
    now = timezone.now()
    return leases.claim_in_three_statements(pk, "t", now, now + leases.lease_duration())


def claimed_steps(claim, pk) -> list[Step]:
    """The steps a claim reads, the claim itself rolled back."""
    with transaction.atomic():
        _, steps = claim(pk)
        transaction.set_rollback(True)
    return steps


@pytest.fixture
def sleeping(monkeypatch, transactional_db, in_process):
    """An instance asleep after two do steps, and nothing known of it."""
    sent: list[int] = []
    monkeypatch.setattr(dispatch, "enqueue", sent.append)
    acme = make_tenant("acme", "alice")
    instance, _ = workflows.start_instance(upload(acme, "wf", TWO_STEPS_AND_A_NAP).workflow)
    engine.advance(sent.pop(0))
    known_steps.forget_all()
    yield instance
    known_steps.forget_all()


@pytest.mark.parametrize("claim", [by_orm, by_sql], ids=["orm", "sql"])
def test_a_claim_reads_only_the_steps_after_those_its_process_knows(sleeping, claim):
    if claim is by_sql and connection.vendor != "postgresql":
        pytest.skip("the SQL twin is PostgreSQL's")
    first = claimed_steps(claim, sleeping.pk)
    assert [s.status for s in first] == ["complete", "complete", "sleeping"]
    # A write the engine never makes (a final step changed): the next claim does not
    # read that row again, so it still gives what it knew; the last step is read anew.
    Step.objects.filter(instance=sleeping, index=0).update(output={"n": 99})
    again = claimed_steps(claim, sleeping.pk)
    assert [s.as_history() for s in again] == [s.as_history() for s in first]
    assert again[0] is first[0] and again[2] is not first[2]
    # A restart begins another run: nothing known of the instance counts any more.
    Instance.objects.filter(pk=sleeping.pk).update(run=F("run") + 1)
    assert claimed_steps(claim, sleeping.pk)[0].output == {"n": 99}


def test_only_final_steps_before_the_last_are_kept_for_a_few_instances():
    known_steps.forget_all()
    now = timezone.now()
    instance = Instance(pk=1, run=1, created_at=now)
    done, failed, last = (
        Step(index=i, status=s) for i, s in enumerate(("complete", "failed", "sleeping"))
    )
    known_steps.remember(instance, [done, failed, last])
    assert known_steps.known(instance) == [done]  # a failed attempt may be retried
    assert known_steps.known(Instance(pk=1, run=2, created_at=now)) == []  # a restart
    known_steps.forget_all()
    known_steps.remember(instance, [done])  # the last step may be settled or retried
    assert known_steps.known(instance) == []
    for pk in range(known_steps.KEPT_INSTANCES + 1):
        other = Instance(pk=10_000 + pk, run=1, created_at=now)
        known_steps.remember(other, [done, last])
    assert known_steps.known(Instance(pk=10_000, run=1, created_at=now)) == []
    assert known_steps.known(other) == [done]
    known_steps.forget_all()


def test_the_history_of_known_steps_is_made_once():
    known_steps.forget_all()
    instance = Instance(pk=1, run=1, created_at=timezone.now())
    steps = [Step(index=i, name=f"s{i}", kind="do", status="complete") for i in range(3)]
    known_steps.remember(instance, steps)
    first = known_steps.history_of(instance, steps)
    assert first == [s.as_history() for s in steps]
    steps[0].name = "changed"  # a final step's entry is not made again
    again = known_steps.history_of(instance, steps)
    assert again == first and again[0] is first[0] and again[2] is not first[2]
    known_steps.forget_all()


def test_a_kept_lease_hands_its_history_on_without_copying_it():
    history = [{"index": i} for i in range(3)]
    activation = Activation(
        instance_pk=1,
        instance_key="k",
        tenant_id=1,
        token="t",
        generation=0,
        tenant_slug="acme",
        code="",
        code_sha256="",
        input={"history": history, "now": ""},
        quota=Quota(),
        pending=None,
    )
    following = activation.then(Step(index=3, name="d", kind="do", status="complete"))
    assert following.input["history"] is history and len(history) == 4
    assert following.next_index() == 4
    # A retried step replaces its own entry.
    retried = following.then(Step(index=1, name="b", kind="do", status="complete"))
    assert [e["index"] for e in retried.input["history"]] == [0, 1]
