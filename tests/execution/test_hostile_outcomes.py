"""What the host makes of outcomes a tampered runtime could send, on PostgreSQL.

Each test hands the engine a crafted SandboxResult instead of running a jail, and
checks that what cannot be recorded becomes a clear step or instance error (or is
clamped or escaped), never an exception that leaves the activation to be retried.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from execution import engine, workflows
from execution.kinds import history_size
from execution.models import Instance, Step
from execution.outcomes import SANDBOX_FAILURE_LIMIT
from execution.sandbox import SandboxResult, Status
from tests.driver import activate_once
from tests.factories import set_quota, upload

CODE = """
def run(event, step):
    return step.do("only", lambda: 1)
"""


# The engine runs here, in this process (tests/driver.py), for every test.
pytestmark = pytest.mark.usefixtures("driver")


@pytest.fixture
def instance(acme):
    wf = upload(acme, "flow", CODE).workflow
    instance, _ = workflows.start_instance(wf, payload={})
    return instance


def result(outcome=None, *, status=Status.OK, error=None, stdout="", progress=()):
    return SandboxResult(
        status=status,
        result=outcome,
        error=error,
        stdout=stdout,
        stderr="",
        stdout_truncated=False,
        stderr_truncated=False,
        wall_seconds=0.01,
        cpu_seconds=0.0,
        peak_memory_bytes=None,
        progress=progress,
    )


def activate(monkeypatch, instance, answer) -> Instance:
    """One activation of `instance` whose sandbox answers `answer` (a result or exception)."""

    def sandbox(activation, keep=False):
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(engine, "run_sandbox", sandbox)
    Instance.objects.filter(pk=instance.pk).update(next_run_at=timezone.now())
    assert activate_once(instance.pk)
    instance.refresh_from_db()
    return instance


def step_outcome(**fields):
    return {
        "kind": "step",
        "index": 0,
        "name": "only",
        "step_kind": "do",
        "status": "complete",
        "output": 1,
        "retries": {"limit": 3, "delay_seconds": 1.0, "backoff": "exponential"},
        "timeout_seconds": 30.0,
        "logs": "",
        "duration_ms": 5.0,
        **fields,
    }


def only_step(instance) -> Step:
    return Step.objects.get(instance=instance, index=0)


# Clamped: merely large


def test_a_huge_retry_limit_and_a_negative_delay_are_clamped(monkeypatch, instance):
    retries = {"limit": 10**12, "delay_seconds": -5, "backoff": "linear"}
    failed = step_outcome(status="failed", error={"type": "E", "message": "no"}, retryable=True)

    activate(monkeypatch, instance, result({**failed, "retries": retries}))

    step = only_step(instance)
    assert step.status == "failed"
    assert step.config["retries"] == {"limit": 100, "delay_seconds": 0.0, "backoff": "linear"}
    assert step.wake_at <= timezone.now()


def test_a_delay_over_a_day_is_clamped_to_a_day(monkeypatch, instance):
    retries = {"limit": 3, "delay_seconds": 1e12, "backoff": "constant"}
    failed = step_outcome(status="failed", error={"type": "E", "message": "no"}, retryable=True)

    activate(monkeypatch, instance, result({**failed, "retries": retries}))

    step = only_step(instance)
    assert step.config["retries"]["delay_seconds"] == 86400.0
    assert step.wake_at - step.finished_at == timedelta(days=1)


def test_a_duration_that_overflows_a_timedelta_is_clamped(monkeypatch, instance):
    activate(monkeypatch, instance, result(step_outcome(duration_ms=1e300)))

    step = only_step(instance)
    assert step.status == "complete"
    assert step.finished_at - step.started_at <= timedelta(days=7)


# Refused: malformed


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"index": 2**31}, "step index is not an integer from 0 to 2147483647"),
        ({"index": 10**30}, "step index is not an integer"),
        ({"retries": {"limit": 3, "delay_seconds": float("nan")}}, "retry delay is not a finite"),
        ({"retries": {"limit": float("inf")}}, "retry limit is not a finite"),
        ({"retries": {"limit": "3"}}, "retry limit is not a number"),
        ({"timeout_seconds": float("nan")}, "timeout is not a finite"),
        ({"name": "a\x00b"}, "step name holds a NUL character"),
    ],
)
def test_a_malformed_step_outcome_errors_the_instance_clearly(monkeypatch, instance, fields, words):
    instance = activate(monkeypatch, instance, result(step_outcome(**fields)))

    assert instance.status == "errored"
    assert instance.error["type"] == "InvalidOutcome"
    assert words in instance.error["message"]
    assert instance.lease_owner == ""


@pytest.mark.parametrize(
    ("outcome", "words"),
    [
        ({"kind": "sleep", "until": "0001-01-01T00:00:00+01:00"}, "wake time is out of range"),
        ({"kind": "sleep", "until": "soon"}, "not an ISO 8601 time"),
        (
            {"kind": "sleep", "until": "2030-01-01T00:00:00+00:00", "duration_seconds": "1"},
            "sleep's duration is not a number",
        ),
        (
            {"kind": "sleep", "until": "2030-01-01T00:00:00+00:00", "duration_seconds": 1e400},
            "sleep's duration is not a finite number",
        ),
        ({"kind": "wait", "event_type": "paid\x00", "timeout_seconds": 5}, "holds a NUL"),
        ({"kind": "wait", "event_type": "paid", "timeout_seconds": -1}, "out of range"),
        ({"kind": "wait_workflow", "instance_id": "\ud800", "timeout_seconds": 5}, "surrogate"),
    ],
)
def test_a_malformed_suspension_errors_the_instance_clearly(monkeypatch, instance, outcome, words):
    outcome = {"index": 0, "name": "only", **outcome}

    instance = activate(monkeypatch, instance, result(outcome))

    assert instance.status == "errored"
    assert words in instance.error["message"]


# Refused: what PostgreSQL cannot store


@pytest.mark.parametrize(
    ("output", "words"),
    [
        ("a\x00b", "a NUL character"),
        ({"key\x00": 1}, "a NUL character"),
        (["\udc80"], "a lone surrogate ('\\udc80')"),
        ({"x": float("inf")}, "a number that is not finite"),
        ([float("nan")], "a number that is not finite"),
    ],
)
@pytest.mark.parametrize("logs", ["", "forces the path that reads the row\n"])
def test_a_step_result_that_cannot_be_stored_is_a_step_error(
    monkeypatch, instance, output, words, logs
):
    instance = activate(monkeypatch, instance, result(step_outcome(output=output, logs=logs)))

    step = only_step(instance)
    assert step.status == "errored"  # not retried: the same result would come back
    assert step.error["type"] == "ResultNotStorable"
    assert f"the result of step 'only' holds {words}" in step.error["message"]
    assert instance.status == "running"


def test_a_workflow_output_that_cannot_be_stored_errors_the_instance(monkeypatch, instance):
    instance = activate(monkeypatch, instance, result({"kind": "complete", "output": "\x00"}))

    assert instance.status == "errored"
    assert instance.error["type"] == "ResultNotStorable"
    assert "the workflow's output holds a NUL character" in instance.error["message"]


@pytest.mark.parametrize(
    "error",
    [
        {"type": "E", "message": "bad \x00 byte"},
        {"type": "E\ud800", "message": "m"},
        {"type": "E", "message": "m", "traceback": "line\x00"},
    ],
)
def test_a_step_error_that_cannot_be_stored_is_replaced_by_one_that_says_so(
    monkeypatch, instance, error
):
    failed = step_outcome(status="failed", error=error, retryable=True)

    activate(monkeypatch, instance, result(failed))

    step = only_step(instance)
    assert step.status == "failed"
    assert step.error["type"] == "ErrorNotStorable"
    assert "cannot be stored" in step.error["message"]


def test_an_instance_error_that_cannot_be_stored_is_replaced_by_one_that_says_so(
    monkeypatch, instance
):
    outcome = {"kind": "error", "error": {"type": "KeyError", "message": "\ud800"}}

    instance = activate(monkeypatch, instance, result(outcome))

    assert instance.status == "errored"
    assert instance.error["type"] == "ErrorNotStorable"
    assert "a lone surrogate" in instance.error["message"]


@pytest.mark.parametrize("logs", ["one\x00two\n", "three \ud800 four\n"])
@pytest.mark.parametrize("status", ["complete", "failed"])
def test_logs_that_cannot_be_stored_are_escaped(monkeypatch, instance, logs, status):
    error = {"type": "E", "message": "m"}
    outcome = step_outcome(status=status, error=error, retryable=True, logs=logs)

    activate(monkeypatch, instance, result(outcome))

    step = only_step(instance)
    assert step.status == status
    assert step.logs in ("one\\u0000two\n", "three \\ud800 four\n")
    lines = [e.data["line"] for e in instance.progress.filter(type="step.log")]
    assert lines == [step.logs.strip()]


def test_a_killed_jail_s_output_is_escaped_in_the_step_s_logs(monkeypatch, instance):
    intent = {"kind": "intent", "index": 0, "name": "only", "step_kind": "do"}
    killed = result(
        status=Status.KILLED,
        error={"type": "Killed", "message": "killed by signal 9"},
        stdout="before\x00after \udc80\n",
        progress=(intent,),
    )

    instance = activate(monkeypatch, instance, killed)

    step = only_step(instance)
    assert step.status == "failed"
    assert step.logs == "before\\u0000after \\udc80\n"
    assert instance.history_bytes == history_size(step) > len(step.logs)


# Child starts


def start_child(**fields):
    return {
        "kind": "start_workflow",
        "index": 0,
        "name": "child",
        "workflow": "flow",
        "payload": {},
        "instance_id": None,
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"payload": {"a": "\x00"}}, "the payload holds a NUL character"),
        ({"payload": ["\ud800"]}, "the payload holds a lone surrogate"),
        ({"instance_id": "x" * 150}, "instance_id is 150 characters; the limit is 100"),
    ],
)
def test_a_child_start_that_cannot_be_stored_is_a_step_error(monkeypatch, instance, fields, words):
    activate(monkeypatch, instance, result(start_child(**fields)))

    step = only_step(instance)
    assert step.status == "errored"
    assert step.error["type"] == "StartWorkflowError"
    assert words in step.error["message"]
    assert Instance.objects.count() == 1


def test_a_child_of_a_parent_with_a_100_character_id_gets_an_id_that_fits(
    monkeypatch, acme, instance
):
    Instance.objects.filter(pk=instance.pk).update(key="k" * 100)

    activate(monkeypatch, instance, result(start_child()))

    step = only_step(instance)
    assert step.status == "complete"
    assert len(step.output) <= 100
    assert Instance.objects.get(tenant=acme, key=step.output).parent_id == instance.pk


def test_a_child_start_is_held_to_the_payload_size_quota(monkeypatch, acme, instance):
    set_quota(acme, payload_bytes=100)

    activate(monkeypatch, instance, result(start_child(payload={"big": "x" * 200})))

    step = only_step(instance)
    assert step.status == "errored"
    assert step.error["message"].endswith("bytes; the limit is 100 bytes")
    assert Instance.objects.count() == 1


def test_a_child_start_is_held_to_the_starts_per_minute_quota(monkeypatch, acme):
    set_quota(acme, instance_starts_per_minute=1)
    instance, _ = workflows.start_instance(upload(acme, "flow", CODE).workflow)

    activate(monkeypatch, instance, result(start_child()))

    step = only_step(instance)
    assert step.status == "errored"
    assert "instance starts per minute quota" in step.error["message"]
    assert "the limit is 1 per minute" in step.error["message"]
    assert Instance.objects.count() == 1


# Sandbox failures


def sandbox_failure(message="the warm jail died"):
    return result(status=Status.SANDBOX_FAILURE, error={"type": "SandboxError", "message": message})


def test_a_sandbox_failure_is_retried_shortly_and_counted(monkeypatch, instance):
    instance = activate(monkeypatch, instance, sandbox_failure())

    assert instance.status == "running"
    assert instance.sandbox_failures == 1
    assert instance.lease_owner == ""
    assert instance.next_run_at > timezone.now()


def test_sandbox_failures_in_a_row_error_the_instance_with_the_last_message(monkeypatch, instance):
    for n in range(SANDBOX_FAILURE_LIMIT):
        instance = activate(monkeypatch, instance, sandbox_failure(f"jail died ({n})"))

    assert instance.status == "errored"
    assert instance.error["type"] == "SandboxFailure"
    assert instance.error["message"] == (
        f"the sandbox kept failing: {SANDBOX_FAILURE_LIMIT} activations in a row failed; "
        f"the last: jail died ({SANDBOX_FAILURE_LIMIT - 1})"
    )
    assert not activate_once(instance.pk)


def test_a_machine_without_a_free_slot_is_retried_without_counting_against_the_instance(
    monkeypatch, instance
):
    busy = result(status=Status.BUSY, error={"type": "SandboxBusy", "message": "no slot"})
    for _ in range(SANDBOX_FAILURE_LIMIT + 1):
        instance = activate(monkeypatch, instance, busy)

    assert instance.status == "running"
    assert instance.sandbox_failures == 0
    assert instance.lease_owner == ""
    assert instance.next_run_at > timezone.now()


def test_engine_errors_count_as_sandbox_failures(monkeypatch, instance):
    for _ in range(SANDBOX_FAILURE_LIMIT):
        with pytest.raises(RuntimeError):
            activate(monkeypatch, instance, RuntimeError("boom"))

    instance.refresh_from_db()
    assert instance.status == "errored"
    assert "the sandbox kept failing" in instance.error["message"]
    assert "RuntimeError in the engine" in instance.error["message"]


@pytest.mark.parametrize(
    "success",
    [
        step_outcome(),  # recorded by the one-statement path
        step_outcome(
            status="failed",
            error={"type": "E", "message": "m"},
            retryable=True,
            retries={"limit": 3, "delay_seconds": 0, "backoff": "constant"},
        ),
    ],
)
def test_a_success_ends_a_run_of_sandbox_failures(monkeypatch, instance, success):
    for _ in range(SANDBOX_FAILURE_LIMIT - 1):
        activate(monkeypatch, instance, sandbox_failure())

    instance = activate(monkeypatch, instance, result(success))
    assert instance.sandbox_failures == 0
    instance = activate(monkeypatch, instance, sandbox_failure())

    assert instance.status == "running"
    assert instance.sandbox_failures == 1
