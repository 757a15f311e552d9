"""stepwell/_step.py: replay, new steps, sleeps, waits, child workflows and non-determinism."""

import pytest
from stepwell import NonRetryableError, StepError, WaitTimeout

from tests.sandbox.runtime.activations import rec, run, tenant

CHECKOUT = """
    from stepwell import StepError

    CALLS = []

    def track(name, value):
        def fn():
            CALLS.append(name)
            return value
        return fn

    def run(event, step):
        total = step.do("price", track("price", 40))
        receipt = step.do("charge", track("charge", {"charged": total}))
        step.do("email", track("email", "sent"))
        return {"total": total, "receipt": receipt}
"""


def test_it_replays_recorded_steps_without_running_their_functions_again():
    module = tenant(CHECKOUT)
    history = [rec("price", output=40), rec("charge", output={"charged": 40}), rec("email")]

    outcome = run(module, history)

    assert outcome == {"kind": "complete", "output": {"total": 40, "receipt": {"charged": 40}}}
    assert module.CALLS == []


def test_it_runs_the_first_new_step_once_and_stops_there():
    module = tenant(CHECKOUT)

    outcome = run(module, [rec("price", output=40)])

    assert module.CALLS == ["charge"]
    assert outcome["kind"] == "step"
    assert outcome["index"] == 1
    assert outcome["name"] == "charge"
    assert outcome["step_kind"] == "do"
    assert outcome["status"] == "complete"
    assert outcome["output"] == {"charged": 40}
    assert outcome["logs"] == ""
    assert outcome["duration_ms"] >= 0
    assert outcome["retries"] == {"limit": 3, "delay_seconds": 1.0, "backoff": "exponential"}
    assert outcome["timeout_seconds"] == 30.0


def test_the_event_carries_payload_instance_id_and_timestamp():
    module = tenant("""
        def run(event, step):
            return [event.payload, event.instance_id, event.timestamp]
    """)

    outcome = run(module, payload={"order": 7})

    assert outcome["output"] == [{"order": 7}, "inst-1", "2025-03-01T11:00:00+00:00"]


def test_the_same_name_may_be_used_in_a_loop():
    module = tenant("""
        def run(event, step):
            return [step.do("item", lambda i=i: i * 10) for i in range(3)]
    """)
    history = [rec("item", output=0), rec("item", output=10)]

    outcome = run(module, history)

    assert (outcome["index"], outcome["output"]) == (2, 20)


@pytest.mark.parametrize("status", ["failed", "running"])
def test_a_failed_or_interrupted_step_runs_again(status):
    module = tenant(CHECKOUT)

    outcome = run(module, [rec("price", output=40), rec("charge", status=status)])

    assert module.CALLS == ["charge"]
    assert (outcome["index"], outcome["status"]) == (1, "complete")


COMPENSATING = """
    from stepwell import StepError

    def run(event, step):
        step.do("reserve", lambda: "r-1")
        try:
            step.do("charge", lambda: 1 / 0)
        except StepError as e:
            step.do("release", lambda: "released")
            return {"step": e.step, "type": e.type, "message": e.message}
        return "charged"
"""


def test_an_errored_step_raises_step_error_at_the_same_point_on_replay():
    module = tenant("""
        def run(event, step):
            step.do("reserve", lambda: "r-1")
            step.do("charge", lambda: 1 / 0)
            return "unreachable"
    """)
    errored = rec("charge", status="errored", type="ZeroDivisionError", message="division by zero")

    outcome = run(module, [rec("reserve", output="r-1"), errored])

    assert outcome["kind"] == "error"
    assert outcome["error"]["type"] == "StepError"
    assert (
        outcome["error"]["message"] == "step 'charge' failed: ZeroDivisionError: division by zero"
    )
    assert 'File "/code/tenant.py", line 4, in run' in outcome["error"]["traceback"]


def test_a_caught_step_error_runs_the_compensation_step():
    module = tenant(COMPENSATING)
    errored = rec("charge", status="errored", type="ZeroDivisionError", message="division by zero")
    history = [rec("reserve", output="r-1"), errored]

    compensation = run(module, history)
    finished = run(module, [*history, rec("release", output="released")])

    assert (compensation["index"], compensation["name"]) == (2, "release")
    assert compensation["output"] == "released"
    assert finished["output"] == {
        "step": "charge",
        "type": "ZeroDivisionError",
        "message": "division by zero",
    }


def test_step_error_and_wait_timeout_are_ordinary_exceptions_for_tenant_code():
    error = StepError("charge", "ValueError", "bad card")

    assert (error.step, error.type, error.message) == ("charge", "ValueError", "bad card")
    assert isinstance(error, Exception)
    assert issubclass(WaitTimeout, Exception)
    assert issubclass(NonRetryableError, Exception)


def test_sleep_asks_to_suspend_until_now_plus_the_duration():
    module = tenant("""
        def run(event, step):
            step.do("first", lambda: 1)
            step.sleep("cool-off", "90 minutes")
    """)

    outcome = run(module, [rec("first", output=1)])

    assert outcome == {
        "kind": "sleep",
        "index": 1,
        "name": "cool-off",
        "step_kind": "sleep",
        "until": "2025-03-01T13:30:00+00:00",
        "duration_seconds": 5400.0,
    }


@pytest.mark.parametrize(
    ("when", "until"),
    [
        ("datetime(2025, 6, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))", "2025-06-01T07:30:00"),
        ("'2025-06-01T07:30:00Z'", "2025-06-01T07:30:00"),
        ("'2025-06-01T09:30:00+02:00'", "2025-06-01T07:30:00"),
        ("1748763000", "2025-06-01T07:30:00"),
        ("1748763000.5", "2025-06-01T07:30:00.500000"),
        ("'2020-01-01T00:00:00Z'", "2020-01-01T00:00:00"),  # the past still sleeps
    ],
)
def test_sleep_until_accepts_aware_datetimes_iso_strings_and_timestamps(when, until):
    module = tenant(f"""
        from datetime import datetime, timedelta, timezone

        def run(event, step):
            step.sleep_until("launch", {when})
    """)

    outcome = run(module)

    assert outcome["kind"] == "sleep"
    assert outcome["step_kind"] == "sleep"
    assert outcome["until"] == until + "+00:00"


@pytest.mark.parametrize("when", ["datetime(2025, 6, 1)", "'2025-06-01T07:30:00'"])
def test_sleep_until_rejects_naive_times(when):
    module = tenant(f"""
        from datetime import datetime

        def run(event, step):
            step.sleep_until("launch", {when})
    """)

    outcome = run(module)

    assert outcome["error"]["type"] == "ValueError"
    assert "has no time zone" in outcome["error"]["message"]


def test_a_finished_sleep_replays_as_none():
    module = tenant("""
        def run(event, step):
            return [step.sleep("a", 5), step.sleep_until("b", 0)]
    """)

    outcome = run(module, [rec("a", "sleep"), rec("b", "sleep")])

    assert outcome == {"kind": "complete", "output": [None, None]}


APPROVAL = """
    from stepwell import WaitTimeout

    def run(event, step):
        try:
            decision = step.wait_for_event("approval", "approved", timeout="1 hour")
        except WaitTimeout as e:
            return {"expired": str(e)}
        return {"approved_by": decision["by"]}
"""


def test_wait_for_event_asks_to_suspend_with_its_timeout():
    outcome = run(tenant(APPROVAL))

    assert outcome == {
        "kind": "wait",
        "index": 0,
        "name": "approval",
        "step_kind": "wait_for_event",
        "event_type": "approved",
        "timeout_seconds": 3600.0,
    }


def test_wait_for_event_returns_the_payload_or_raises_wait_timeout_on_replay():
    module = tenant(APPROVAL)

    received = run(module, [rec("approval", "wait_for_event", output={"by": "alice"})])
    expired = run(module, [rec("approval", "wait_for_event", status="timed_out")])

    assert received["output"] == {"approved_by": "alice"}
    assert expired["output"] == {"expired": "step 'approval' (wait_for_event) timed out"}


def test_wait_for_event_defaults_to_a_day():
    module = tenant("""
        def run(event, step):
            step.wait_for_event("approval", event_type="approved")
    """)

    assert run(module)["timeout_seconds"] == 86400.0


PARENT = """
    from stepwell import StepError, WaitTimeout

    def run(event, step):
        child = step.start_workflow("notify", "send-receipt", {"order": 7}, instance_id="r-7")
        try:
            return {"child": child, "result": step.wait_for_workflow("receipt", child)}
        except (StepError, WaitTimeout) as e:
            return {"child": child, "failed": str(e)}
"""


def test_start_workflow_asks_the_host_to_start_a_child():
    outcome = run(tenant(PARENT))

    assert outcome == {
        "kind": "start_workflow",
        "index": 0,
        "name": "notify",
        "step_kind": "start_workflow",
        "workflow": "send-receipt",
        "payload": {"order": 7},
        "instance_id": "r-7",
    }


def test_wait_for_workflow_asks_to_suspend_then_replays_the_childs_end():
    module = tenant(PARENT)
    started = rec("notify", "start_workflow", output="r-7")

    waiting = run(module, [started])
    done = run(module, [started, rec("receipt", "wait_for_workflow", output={"sent": True})])
    errored = run(
        module,
        [started, rec("receipt", "wait_for_workflow", "errored", type="KeyError", message="'to'")],
    )
    expired = run(module, [started, rec("receipt", "wait_for_workflow", status="timed_out")])

    assert waiting == {
        "kind": "wait_workflow",
        "index": 1,
        "name": "receipt",
        "step_kind": "wait_for_workflow",
        "instance_id": "r-7",
        "timeout_seconds": 86400.0,
    }
    assert done["output"] == {"child": "r-7", "result": {"sent": True}}
    assert errored["output"] == {"child": "r-7", "failed": "step 'receipt' failed: KeyError: 'to'"}
    assert expired["output"] == {
        "child": "r-7",
        "failed": "step 'receipt' (wait_for_workflow) timed out",
    }


def test_start_workflow_refuses_a_payload_that_is_not_json():
    module = tenant("""
        def run(event, step):
            step.start_workflow("notify", "send-receipt", {"when": object()})
    """)

    outcome = run(module)

    assert outcome["error"]["type"] == "TypeError"
    assert "the workflow payload is not JSON-serialisable" in outcome["error"]["message"]


def test_a_different_name_at_a_recorded_position_is_non_determinism():
    module = tenant("""
        def run(event, step):
            step.do("a", lambda: 1)
            step.do("b", lambda: 2)
            step.do("c", lambda: 3)
            step.do("refund", lambda: 4)
    """)
    history = [rec("a"), rec("b"), rec("c"), rec("charge")]

    outcome = run(module, history)

    assert outcome == {
        "kind": "nondeterminism",
        "index": 3,
        "recorded": {"name": "charge", "kind": "do"},
        "new": {"name": "refund", "kind": "do"},
        "line": 6,
        "error": {
            "type": "NonDeterminismError",
            "message": "step 3 was 'charge' (do) when recorded but is 'refund' (do) now "
            "(called at line 6): the workflow must call steps in the same order on every replay",
            "index": 3,
            "recorded": {"name": "charge", "kind": "do"},
            "new": {"name": "refund", "kind": "do"},
            "line": 6,
        },
    }


def test_a_different_kind_under_the_same_name_is_non_determinism():
    module = tenant("""
        def run(event, step):
            step.sleep("pause", 5)
    """)

    outcome = run(module, [rec("pause", "do", output=1)])

    assert outcome["kind"] == "nondeterminism"
    assert outcome["new"] == {"name": "pause", "kind": "sleep", "shape": {"duration_seconds": 5.0}}
    assert (
        "'pause' (do) when recorded but is 'pause' (sleep, duration_seconds 5.0) now"
        in outcome["error"]["message"]
    )


def test_returning_before_a_recorded_step_is_non_determinism():
    module = tenant("""
        def run(event, step):
            return step.do("a", lambda: 1)
    """)

    outcome = run(module, [rec("a", output=1), rec("b", output=2)])

    assert outcome["kind"] == "nondeterminism"
    assert outcome["index"] == 1
    assert outcome["recorded"] == {"name": "b", "kind": "do"}
    assert outcome["new"] == {"name": None, "kind": None}
    assert "run() returned before it was reached" in outcome["error"]["message"]


def test_raising_before_a_recorded_step_is_non_determinism():
    module = tenant("""
        def run(event, step):
            step.do("a", lambda: 1)
            raise ValueError("changed my mind")
    """)

    outcome = run(module, [rec("a", output=1), rec("b", output=2)])

    assert outcome["kind"] == "nondeterminism"
    assert "run() raised ValueError before it was reached" in outcome["error"]["message"]


def test_calling_a_step_method_inside_a_step_function_fails_the_step_without_retries():
    module = tenant("""
        def run(event, step):
            step.do("outer", lambda: step.do("inner", lambda: 1))
    """)
    swallowing = tenant("""
        def run(event, step):
            def sneaky():
                try:
                    step.sleep("inner", 1)
                except Exception:
                    return "hid it"
            step.do("outer", sneaky)
    """)

    for outcome in (run(module), run(swallowing)):
        assert outcome["status"] == "failed"
        assert outcome["error"]["type"] == "NestedStepError"
        assert "inside the function of step 'outer'" in outcome["error"]["message"]
        assert outcome["retryable"] is False
