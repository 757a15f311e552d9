"""Engine logic, called directly, with the runtime run in this process instead of a jail."""

from datetime import timedelta

import pytest
from django.utils import timezone

from execution import engine, runs, watch, workflows
from execution.kinds import retry_delay
from execution.models import Instance, ProgressEvent, Step
from tests.factories import upload

THREE_STEPS = """
def run(event, step):
    a = step.do("first", lambda: event.payload["n"] + 1)
    b = step.do("second", lambda: a * 10)
    c = step.do("third", lambda: {"sum": a + b})
    return {"a": a, "b": b, "c": c}
"""


def make_due(instance):
    """Pretend the time the instance is suspended until has come."""
    Step.objects.filter(instance=instance).exclude(status__in=Step.RESOLVED_STATUSES).update(
        wake_at=timezone.now()
    )
    Instance.objects.filter(pk=instance.pk).update(next_run_at=timezone.now())


def start(tenant, name, code, payload=None, **kwargs):
    wf = upload(tenant, name, code).workflow
    instance, _ = workflows.start_instance(wf, payload=payload or {}, **kwargs)
    return instance


def test_it_runs_a_multi_step_workflow_to_its_output(driver, acme):
    instance = driver.run(start(acme, "three", THREE_STEPS, {"n": 1}))
    assert instance.status == "complete"
    assert instance.output == {"a": 2, "b": 20, "c": {"sum": 22}}
    steps = list(instance.steps.values_list("index", "name", "status", "attempts"))
    assert steps == [
        (0, "first", "complete", 1),
        (1, "second", "complete", 1),
        (2, "third", "complete", 1),
    ]


def test_progress_events_have_no_gap_and_end_with_the_terminal_status(driver, acme):
    instance = driver.run(start(acme, "three", THREE_STEPS, {"n": 1}))
    seqs = list(ProgressEvent.objects.filter(instance=instance).values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    last = ProgressEvent.objects.filter(instance=instance).last()
    assert (last.type, last.data) == ("instance.status", {"status": "complete"})
    types = [e.type for e in ProgressEvent.objects.filter(instance=instance)]
    assert types.count("step.completed") == 3


def test_a_failing_step_is_retried_until_it_succeeds(driver, acme):
    code = """
    def run(event, step):
        def flaky():
            print("trying")
            raise ValueError("not yet")
        try:
            step.do("flaky", flaky, retries={"limit": 2, "delay": 0, "backoff": "constant"})
        except Exception as e:
            return {"gave_up": str(e)}
    """
    instance = driver.run(start(acme, "flaky", code))
    step = instance.steps.get(index=0)
    assert (step.status, step.attempts) == ("errored", 3)
    assert step.error["type"] == "ValueError"
    assert "trying" in step.logs
    assert instance.status == "complete"
    assert "not yet" in instance.output["gave_up"]


def test_a_step_that_succeeds_on_a_retry_is_followed_by_the_next_steps(driver, acme, tmp_path):
    # Regression: the worker goes on with the instance after the retried step completes,
    # and the history it carries must hold that step once, not its failure and its success.
    # The runtime runs in this process here, so a file can tell the first attempt apart.
    code = """
    import os

    def run(event, step):
        def flaky():
            mark = event.payload["mark"]
            if not os.path.exists(mark):
                open(mark, "w").close()
                raise ValueError("first attempt")
            return 2

        a = step.do("one", lambda: 1)
        b = step.do("flaky", flaky, retries={"limit": 2, "delay": 0, "backoff": "constant"})
        c = step.do("three", lambda: a + b)
        return [a, b, c]
    """
    instance = driver.run(start(acme, "retried", code, {"mark": str(tmp_path / "tried")}))
    assert instance.status == "complete", instance.error
    assert instance.output == [1, 2, 3]
    assert list(instance.steps.values_list("index", "attempts")) == [(0, 1), (1, 2), (2, 1)]


def test_retry_delays_follow_the_backoff():
    def seconds(backoff, attempt):
        return retry_delay({"delay_seconds": 2, "backoff": backoff}, attempt).total_seconds()

    assert [seconds("constant", n) for n in (1, 2, 3)] == [2, 2, 2]
    assert [seconds("linear", n) for n in (1, 2, 3)] == [2, 4, 6]
    assert [seconds("exponential", n) for n in (1, 2, 3)] == [2, 4, 8]


def test_a_retry_waits_for_its_backoff_without_holding_anything(driver, acme):
    code = """
    def run(event, step):
        step.do("boom", lambda: 1 / 0, retries={"limit": 1, "delay": "1 hour"})
    """
    instance = driver.run(start(acme, "slow-retry", code))
    step = instance.steps.get()
    assert (instance.status, step.status, step.attempts) == ("running", "failed", 1)
    assert step.wake_at - timezone.now() > timedelta(minutes=59)
    assert instance.next_run_at == step.wake_at
    assert instance.lease_owner == ""
    driver.tick()
    assert instance.steps.get().attempts == 1
    make_due(instance)
    driver.tick()
    instance.refresh_from_db()
    assert instance.status == "errored"
    assert instance.error["type"] == "StepError"
    assert instance.steps.get().attempts == 2


def test_a_non_retryable_error_fails_the_step_at_once(driver, acme):
    code = """
    from stepwell import NonRetryableError

    def run(event, step):
        def charge():
            raise NonRetryableError("over the limit")
        step.do("charge", charge)
    """
    instance = driver.run(start(acme, "nonretry", code))
    step = instance.steps.get()
    assert (step.status, step.attempts) == ("errored", 1)
    assert instance.status == "errored"
    assert "over the limit" in instance.error["message"]


def test_a_caught_step_error_lets_the_workflow_compensate(driver, acme):
    code = """
    from stepwell import NonRetryableError, StepError

    def run(event, step):
        def charge():
            raise NonRetryableError("card declined")
        try:
            step.do("charge", charge)
        except StepError as e:
            step.do("refund", lambda: {"refunded": True})
            return {"compensated": e.step, "why": e.message}
    """
    instance = driver.run(start(acme, "saga", code))
    assert instance.status == "complete"
    assert instance.output == {"compensated": "charge", "why": "card declined"}
    assert list(instance.steps.values_list("name", "status")) == [
        ("charge", "errored"),
        ("refund", "complete"),
    ]


def test_a_sleeping_instance_holds_no_lease_and_wakes_when_due(driver, acme):
    code = """
    def run(event, step):
        step.do("before", lambda: 1)
        step.sleep("nap", "1 hour")
        return step.do("after", lambda: 2)
    """
    instance = driver.run(start(acme, "napper", code))
    assert instance.status == "sleeping"
    assert instance.lease_owner == "" and instance.lease_expires_at is None
    nap = instance.steps.get(name="nap")
    assert nap.status == "sleeping"
    driver.tick()
    assert Instance.objects.get(pk=instance.pk).status == "sleeping"
    make_due(instance)
    driver.tick()
    instance.refresh_from_db()
    assert (instance.status, instance.output) == ("complete", 2)


WAITER = """
from stepwell import WaitTimeout


def run(event, step):
    try:
        got = step.wait_for_event("approval", "approved", timeout="1 hour")
    except WaitTimeout:
        return {"expired": True}
    return {"by": got["by"]}
"""


def test_an_event_sent_after_the_wait_resumes_the_instance(driver, acme):
    instance = driver.run(start(acme, "waiter", WAITER))
    assert instance.status == "waiting"
    workflows.send_event(instance, "other", {"by": "nobody"})
    assert driver.run(instance).status == "waiting"
    workflows.send_event(instance, "approved", {"by": "carol"})
    instance = driver.run(instance)
    assert (instance.status, instance.output) == ("complete", {"by": "carol"})


def test_an_event_sent_before_the_wait_counts(driver, acme):
    code = """
    def run(event, step):
        step.do("first", lambda: 1)
        return step.wait_for_event("approval", "approved")
    """
    instance = start(acme, "early", code)
    workflows.send_event(instance, "approved", {"ok": 1})
    instance = driver.run(instance)
    assert (instance.status, instance.output) == ("complete", {"ok": 1})


def test_a_wait_that_times_out_raises_wait_timeout(driver, acme):
    instance = driver.run(start(acme, "waiter", WAITER))
    make_due(instance)
    driver.tick()
    instance.refresh_from_db()
    assert (instance.status, instance.output) == ("complete", {"expired": True})
    assert instance.steps.get().status == "timed_out"


def test_a_changed_step_order_is_reported_as_nondeterminism(driver, acme):
    code = """
    def run(event, step):
        step.do("one", lambda: 1)
        step.sleep("nap", 3600)
        return step.do("two", lambda: 2)
    """
    instance = driver.run(start(acme, "nd", code))
    Step.objects.filter(instance=instance, index=0).update(name="uno")
    make_due(instance)
    driver.tick()
    instance.refresh_from_db()
    assert instance.status == "errored"
    assert instance.error["type"] == "NonDeterminismError"
    assert "'uno'" in instance.error["message"] and "'one'" in instance.error["message"]


def test_an_edit_while_sleeping_resumes_on_the_pinned_version(driver, acme):
    v1 = """
    def run(event, step):
        step.sleep("nap", 3600)
        return step.do("which", lambda: "v1")
    """
    v2 = v1.replace('"v1"', '"v2"')
    old = driver.run(start(acme, "pinned", v1))
    upload(acme, "pinned", v2)
    new, _ = workflows.start_instance(old.workflow)
    make_due(old)
    driver.tick()
    make_due(new)
    driver.tick()
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.output, new.output) == ("v1", "v2")
    assert old.version_id != new.version_id


def test_a_child_workflow_runs_and_its_output_returns_to_the_parent(driver, acme):
    upload(
        acme,
        "child",
        """
    def run(event, step):
        return step.do("double", lambda: event.payload["x"] * 2)
    """,
    )
    parent_code = """
    def run(event, step):
        child = step.start_workflow("spawn", "child", {"x": 21})
        return step.wait_for_workflow("join", child)
    """
    parent = driver.run(start(acme, "parent", parent_code))
    assert (parent.status, parent.output) == ("complete", 42)
    child = Instance.objects.get(parent=parent)
    assert child.status == "complete"


def test_a_failing_child_raises_step_error_in_the_parent(driver, acme):
    upload(
        acme,
        "bad-child",
        """
    def run(event, step):
        raise RuntimeError("child broke")
    """,
    )
    parent_code = """
    from stepwell import StepError

    def run(event, step):
        child = step.start_workflow("spawn", "bad-child", {})
        try:
            step.wait_for_workflow("join", child)
        except StepError as e:
            return {"child_failed": e.message}
    """
    parent = driver.run(start(acme, "parent", parent_code))
    assert parent.status == "complete"
    assert "child broke" in parent.output["child_failed"]


def test_starting_a_missing_child_workflow_is_a_step_error(driver, acme):
    code = """
    def run(event, step):
        step.start_workflow("spawn", "nope", {})
    """
    instance = driver.run(start(acme, "lonely", code))
    assert instance.status == "errored"
    assert "nope" in instance.error["message"]


def test_an_idempotent_start_returns_the_same_instance(driver, acme):
    wf = upload(acme, "three", THREE_STEPS).workflow
    a, created_a = workflows.start_instance(wf, payload={"n": 1}, key="order-1")
    b, created_b = workflows.start_instance(wf, payload={"n": 99}, key="order-1")
    assert (created_a, created_b) == (True, False)
    assert a.pk == b.pk


def test_pause_resume_terminate_and_restart(driver, acme):
    code = """
    def run(event, step):
        step.do("one", lambda: 1)
        step.sleep("nap", 3600)
        return step.do("two", lambda: 2)
    """
    instance = driver.run(start(acme, "ctl", code))
    assert instance.status == "sleeping"
    workflows.pause(instance)
    instance.refresh_from_db()
    assert instance.status == "paused"
    with pytest.raises(workflows.StateConflict):
        workflows.pause(instance)
    workflows.resume(instance)
    instance = driver.run(instance)
    assert instance.status == "sleeping"
    workflows.terminate(instance)
    instance = driver.run(instance)
    assert instance.status == "terminated"
    with pytest.raises(workflows.StateConflict):
        workflows.terminate(instance)
    runs.restart(instance)
    instance = driver.run(instance)
    assert instance.status == "sleeping"
    assert list(instance.steps.values_list("name", flat=True)) == ["one", "nap"]


def test_an_outcome_from_a_lost_lease_is_dropped(driver, acme, monkeypatch):
    from execution import engine
    from tests.execution.inprocess import run_in_process

    instance = start(acme, "three", THREE_STEPS, {"n": 1})
    driver.queue.clear()

    def steal_then_run(activation, keep=False):
        Instance.objects.filter(pk=activation.instance_pk).update(lease_owner="someone-else")
        return run_in_process(activation)

    monkeypatch.setattr(engine, "run_sandbox", steal_then_run)
    engine.advance(instance.pk)
    assert not Step.objects.filter(instance=instance).exists()


def test_an_uncaught_exception_errors_the_instance_with_the_tenant_traceback(driver, acme):
    code = """
    def helper():
        raise KeyError("missing")

    def run(event, step):
        step.do("ok", lambda: 1)
        helper()
    """
    instance = driver.run(start(acme, "crash", code))
    assert instance.status == "errored"
    assert instance.error["type"] == "KeyError"
    assert "helper" in instance.error["traceback"]
    assert "stepwell" not in instance.error["traceback"]


def test_a_running_mark_the_database_refuses_costs_no_lease_renewal(driver, acme, settings):
    settings.STEPWELL_LEASE_SECONDS = 60
    instance = start(acme, "three", THREE_STEPS, {"n": 1})
    activation = engine.begin(instance.pk)
    watching = engine.watch(activation)
    watching.renew_at = watching.intent_at = 0.0  # both due
    # PostgreSQL refuses NUL in text: the mark's transaction fails.
    watching.intent = {"index": 0, "name": "first\x00", "retries": 3, "timeout_seconds": None}
    Instance.objects.filter(pk=instance.pk).update(lease_expires_at=timezone.now())

    watch.look_after([watching])

    instance.refresh_from_db()
    assert instance.lease_owner == activation.token
    assert instance.lease_expires_at > timezone.now() + timedelta(seconds=30)
    assert not Step.objects.filter(instance=instance).exists()
