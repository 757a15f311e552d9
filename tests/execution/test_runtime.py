"""The in-sandbox workflow SDK: replay, the activation outcomes, and tenant-facing errors.

The runtime is pure stdlib and is imported here as the jail imports it: the
package `stepwell` from `execution/sandbox/runtime`.
"""

import ast
import json
import subprocess
import sys
import textwrap
import time
import types
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from execution import outcome_checks

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "execution" / "sandbox" / "runtime"
sys.path.insert(0, str(RUNTIME_DIR))

from stepwell import NonRetryableError, StepError, WaitTimeout, _arguments  # noqa: E402
from stepwell._durations import parse_duration, parse_instant  # noqa: E402
from stepwell._engine import activate  # noqa: E402

NOW = "2025-03-01T12:00:00+00:00"
TENANT_FILE = "/code/tenant.py"
LIMITS = {"result_bytes": 10_000, "log_bytes": 2_000, "step_timeout_seconds": 30.0}


def tenant(source: str) -> types.ModuleType:
    """A tenant module built from source, with a file name outside the runtime."""
    module = types.ModuleType("tenant")
    module.__file__ = TENANT_FILE
    exec(compile(textwrap.dedent(source), TENANT_FILE, "exec"), module.__dict__)
    return module


def run(module: types.ModuleType, history: Any = (), payload: Any = None, **limits: Any) -> dict:
    """Activate `module` once and prove the outcome is plain JSON."""
    data = {
        "instance_id": "inst-1",
        "payload": payload if payload is not None else {},
        "timestamp": "2025-03-01T11:00:00+00:00",
        "now": NOW,
        "history": [dict(entry, index=index) for index, entry in enumerate(history)],
        "limits": {**LIMITS, **limits},
    }
    outcome = activate(module, data)
    assert json.loads(json.dumps(outcome, allow_nan=False)) == outcome
    return outcome


def rec(name: str, kind: str = "do", status: str = "complete", output: Any = None, **error: str):
    """One recorded step; `index` is set from its position by `run`."""
    return {
        "name": name,
        "kind": kind,
        "status": status,
        "attempts": 1,
        "output": output,
        "error": error or None,
    }


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


# Replay and new steps


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


# Failures, retries and StepError

FLAKY = """
    from stepwell import NonRetryableError

    def fail():
        print("trying")
        raise ConnectionError("card service down")

    def refuse():
        raise NonRetryableError("over the limit")

    def run(event, step):
        fn = refuse if event.payload.get("refuse") else fail
        return step.do("charge", fn, **event.payload.get("options", {}))
"""


def test_a_failed_attempt_reports_its_error_and_the_default_retry_policy():
    outcome = run(tenant(FLAKY))

    assert outcome["kind"] == "step"
    assert outcome["status"] == "failed"
    assert outcome["error"]["type"] == "ConnectionError"
    assert outcome["error"]["message"] == "card service down"
    assert 'File "/code/tenant.py", line 6, in fail' in outcome["error"]["traceback"]
    assert outcome["retryable"] is True
    assert outcome["retries"] == {"limit": 3, "delay_seconds": 1.0, "backoff": "exponential"}
    assert outcome["timeout_seconds"] == 30.0
    assert outcome["logs"] == "trying\n"


def test_a_custom_retry_policy_and_timeout_are_reported_capped_at_the_quota():
    options = {"retries": {"limit": 5, "delay": "2 minutes", "backoff": "linear"}, "timeout": 45}

    outcome = run(tenant(FLAKY), payload={"options": options}, step_timeout_seconds=40)

    assert outcome["retries"] == {"limit": 5, "delay_seconds": 120.0, "backoff": "linear"}
    assert outcome["timeout_seconds"] == 40.0


@pytest.mark.parametrize(
    ("options", "error_type", "words"),
    [
        ({"retries": {"limit": 3, "tries": 2}}, "ValueError", "unknown key(s) 'tries'"),
        ({"retries": {"backoff": "random"}}, "ValueError", "backoff must be one of"),
        ({"retries": {"limit": -1}}, "ValueError", "limit must be zero or more"),
        ({"retries": {"limit": "3"}}, "TypeError", "limit must be a whole number"),
        ({"retries": [3]}, "TypeError", "retries must be a dict"),
        ({"retries": {"delay": "soon"}}, "ValueError", "retries delay 'soon' is not a duration"),
        ({"retries": {"delay": -5}}, "ValueError", "retries delay must be a finite number"),
        ({"retries": {"delay": float("nan")}}, "ValueError", "retries delay must be a finite"),
        ({"retries": {"delay": "9" * 400 + " s"}}, "ValueError", "retries delay must be a finite"),
        ({"timeout": 0}, "ValueError", "step timeout must be more than zero"),
    ],
)
def test_a_bad_retry_policy_or_timeout_errors_the_instance_at_the_call_site(
    options, error_type, words
):
    outcome = run(tenant(FLAKY), payload={"options": options})

    assert outcome["kind"] == "error"
    assert outcome["error"]["type"] == error_type
    assert words in outcome["error"]["message"]
    assert 'File "/code/tenant.py", line 13, in run' in outcome["error"]["traceback"]


def test_a_retry_policy_beyond_the_limits_is_clamped_not_refused():
    # Refusing would break the replay of instances recorded before the limits existed.
    options = {"retries": {"limit": 10**12, "delay": "30 days", "backoff": "constant"}}

    outcome = run(tenant(FLAKY), payload={"options": options})

    assert outcome["retries"] == {"limit": 100, "delay_seconds": 86400.0, "backoff": "constant"}


def test_a_non_retryable_error_fails_the_step_at_once():
    outcome = run(tenant(FLAKY), payload={"refuse": True})

    assert outcome["status"] == "failed"
    assert outcome["error"]["type"] == "NonRetryableError"
    assert outcome["error"]["message"] == "over the limit"
    assert outcome["retryable"] is False


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


# Sleeps


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


# Waits and child workflows

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


# Non-determinism


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
        "error": {
            "type": "NonDeterminismError",
            "message": "step 3 was 'charge' (do) when recorded but is 'refund' (do) now: "
            "the workflow must call steps in the same order on every replay",
        },
    }


def test_a_different_kind_under_the_same_name_is_non_determinism():
    module = tenant("""
        def run(event, step):
            step.sleep("pause", 5)
    """)

    outcome = run(module, [rec("pause", "do", output=1)])

    assert outcome["kind"] == "nondeterminism"
    assert outcome["new"] == {"name": "pause", "kind": "sleep"}
    assert "'pause' (do) when recorded but is 'pause' (sleep) now" in outcome["error"]["message"]


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


# Logs, timeouts and results


def test_what_a_step_prints_is_its_log():
    module = tenant("""
        import sys

        def chatty():
            print("é" * 100)
            sys.stderr.write("warning\\n")
            print("line", 0)
            return "ok"

        def run(event, step):
            print("replayed code prints into the void")
            return step.do("chatty", chatty)
    """)

    outcome = run(module, log_bytes=500)

    assert outcome["logs"] == "é" * 100 + "\nwarning\nline 0\n"
    assert outcome["output"] == "ok"


def test_prints_outside_steps_do_not_reach_the_process_output(capfd):
    module = tenant("""
        import sys

        def run(event, step):
            print("noise")
            sys.stderr.write("more noise")
            return step.do("quiet", lambda: print("logged") or 1)
    """)

    outcome = run(module)

    assert outcome["logs"] == "logged\n"
    assert capfd.readouterr() == ("", "")


def test_a_step_that_runs_past_its_timeout_fails_with_step_timeout_promptly():
    module = tenant("""
        import time

        def slow():
            time.sleep(5)

        def run(event, step):
            step.do("slow", slow, timeout=0.2)
    """)

    started = time.monotonic()
    outcome = run(module)

    assert time.monotonic() - started < 1
    assert outcome["status"] == "failed"
    assert outcome["error"]["type"] == "StepTimeout"
    assert outcome["error"]["message"] == "timed out after 0.2 s"
    assert outcome["retryable"] is True
    assert outcome["timeout_seconds"] == 0.2
    assert "in slow" in outcome["error"]["traceback"]


def test_a_step_that_swallows_its_timeout_still_times_out():
    module = tenant("""
        import time

        def stubborn():
            try:
                time.sleep(5)
            except BaseException:
                return "I ignore timeouts"

        def run(event, step):
            step.do("stubborn", stubborn, timeout="250 milliseconds")
    """)

    outcome = run(module)

    assert outcome["error"]["type"] == "StepTimeout"
    assert outcome["error"]["message"] == "timed out after 0.25 s"


@pytest.mark.parametrize(
    ("value", "error_type", "words"),
    [
        ("{1, 2}", "ResultNotSerializable", "Object of type set is not JSON serializable"),
        ("float('nan')", "ResultNotSerializable", "not JSON compliant"),
        ("'x' * 200", "ResultTooLarge", "202 bytes of JSON, over the limit of 100 bytes"),
    ],
)
def test_a_step_result_must_be_json_within_the_limit(value, error_type, words):
    module = tenant(f"""
        def run(event, step):
            step.do("result", lambda: {value})
    """)

    outcome = run(module, result_bytes=100)

    assert outcome["status"] == "failed"
    assert outcome["error"]["type"] == error_type
    assert words in outcome["error"]["message"]
    assert outcome["error"]["message"].startswith("the result of step 'result' ")
    assert outcome["retryable"] is False


def test_a_step_result_is_recorded_as_it_will_replay():
    module = tenant("""
        def run(event, step):
            step.do("shape", lambda: {"pair": (1, 2), 3: "three"})
    """)

    assert run(module)["output"] == {"pair": [1, 2], "3": "three"}


def test_the_return_value_of_run_is_the_output_and_must_be_json_within_the_limit():
    returns = tenant("""
        def run(event, step):
            return event.payload["answer"]
    """)

    complete = run(returns, payload={"answer": {"total": 42}})
    too_large = run(returns, payload={"answer": "x" * 200}, result_bytes=100)
    not_json = tenant("def run(event, step):\n    return object()\n")

    assert complete == {"kind": "complete", "output": {"total": 42}}
    assert too_large["error"] == {
        "type": "ResultTooLarge",
        "message": "the return value of run() is 202 bytes of JSON, over the limit of 100 bytes",
        "traceback": "",
    }
    assert run(not_json)["error"]["type"] == "ResultNotSerializable"


def test_an_exception_escaping_run_reports_only_tenant_frames():
    module = tenant("""
        def check(order):
            if order["qty"] < 1:
                raise ValueError(f"bad quantity {order['qty']}")

        def run(event, step):
            total = step.do("price", lambda: 10)
            check(event.payload)
    """)

    outcome = run(module, [rec("price", output=10)], payload={"qty": 0})

    error = outcome["error"]
    assert outcome["kind"] == "error"
    assert (error["type"], error["message"]) == ("ValueError", "bad quantity 0")
    assert error["traceback"].startswith("Traceback (most recent call last):\n")
    assert 'File "/code/tenant.py", line 8, in run' in error["traceback"]
    assert 'File "/code/tenant.py", line 4, in check' in error["traceback"]
    assert "stepwell" not in error["traceback"]
    assert error["traceback"].endswith("ValueError: bad quantity 0\n")


def test_system_exit_in_run_errors_the_instance():
    module = tenant("""
        import sys

        def run(event, step):
            sys.exit(3)
    """)

    assert run(module)["error"]["type"] == "SystemExit"


# Tampering and misuse


def test_tenant_code_that_catches_base_exception_still_yields_the_new_step():
    module = tenant("""
        def run(event, step):
            try:
                step.do("charge", lambda: "charged")
            except BaseException:
                pass
            try:
                step.do("second", lambda: "never runs")
            except BaseException:
                pass
            return "pretend I finished"
    """)

    outcome = run(module)

    assert (outcome["kind"], outcome["name"], outcome["output"]) == ("step", "charge", "charged")


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


@pytest.mark.parametrize(
    ("name", "error_type", "words"),
    [
        ("''", "ValueError", "step name must not be empty"),
        ("'x' * 201", "ValueError", "step name is 201 characters long; the limit is 200"),
        ("42", "TypeError", "step name must be a string, not 42"),
    ],
)
def test_step_names_are_checked(name, error_type, words):
    module = tenant(f"""
        def run(event, step):
            step.do({name}, lambda: 1)
    """)

    outcome = run(module)

    assert (outcome["error"]["type"], outcome["error"]["message"]) == (error_type, words)


def test_a_broken_input_or_module_still_gets_an_outcome():
    no_run = tenant("x = 1")

    broken = activate(no_run, {"instance_id": "i"})
    missing = run(no_run)

    assert broken["kind"] == "error"
    assert broken["error"]["type"] == "ProtocolError"
    assert missing["error"]["message"] == "the workflow module defines no run(event, step) function"


# Durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
        (timedelta(minutes=2), 120.0),
        ("1 second", 1.0),
        ("30 seconds", 30.0),
        ("5 minutes", 300.0),
        ("1 minute", 60.0),
        ("2 hours", 7200.0),
        ("1.5 hours", 5400.0),
        ("1 day", 86400.0),
        ("2 days", 172800.0),
        ("1 week", 604800.0),
        ("250 milliseconds", 0.25),
        ("10s", 10.0),
        ("5m", 300.0),
        ("  3 Hours ", 10800.0),
    ],
)
def test_durations_are_parsed(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("soon", ValueError),
        ("5", ValueError),
        ("5 fortnights", ValueError),
        ("-5 seconds", ValueError),
        (-1, ValueError),
        (float("inf"), ValueError),
        (timedelta(seconds=-1), ValueError),
        (None, TypeError),
        (True, TypeError),
        ([5], TypeError),
    ],
)
def test_bad_durations_are_refused_naming_the_value(value, error):
    with pytest.raises(error, match="sleep duration"):
        parse_duration(value, "sleep duration")


def test_an_absurd_sleep_errors_the_instance_clearly():
    module = tenant("""
        def run(event, step):
            step.sleep("forever", 10 ** 20)
    """)

    assert "reaches past the year 9999" in run(module)["error"]["message"]


def test_instants_are_converted_to_utc():
    moment = datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5)))

    assert parse_instant(moment) == datetime(2025, 1, 1, 17, tzinfo=UTC)
    assert parse_instant("2025-01-01T17:00:00Z").tzinfo is UTC


# The sandbox interpreter

SMOKE = """
import json, sys, types
sys.path.insert(0, sys.argv[1])
from stepwell._engine import activate
module = types.ModuleType("tenant")
module.__file__ = "/code/tenant.py"
exec(compile(sys.argv[2], "/code/tenant.py", "exec"), module.__dict__)
print(json.dumps([sys.version_info[:2], activate(module, json.loads(sys.argv[3]))]))
"""


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no system Python")
def test_the_runtime_works_on_the_sandbox_interpreter():
    source = textwrap.dedent("""
        from stepwell import NonRetryableError, StepError, WaitTimeout

        def run(event, step):
            a = step.do("a", lambda: 1)
            step.do("b", lambda: print("hello") or a + 1, timeout="5 seconds")
    """)
    data = {
        "instance_id": "i",
        "payload": {},
        "timestamp": NOW,
        "now": NOW,
        "history": [{"index": 0, **rec("a", output=1)}],
        "limits": LIMITS,
    }

    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", SMOKE, str(RUNTIME_DIR), source, json.dumps(data)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    version, outcome = json.loads(result.stdout)

    assert version[0] == 3 and version[1] >= 11
    assert (outcome["name"], outcome["output"], outcome["logs"]) == ("b", 2, "hello\n")


# Every step starts a fresh interpreter, so what the runtime imports is paid on every step.

COLD_START = """
import sys
sys.path.insert(0, sys.argv[1])
import stepwell._engine
print(sorted(sys.modules))
import json  # as boot.py does, before it activates
module = type(sys)("tenant")
exec("def run(event, step):\\n    return step.do('one', lambda: 1)\\n", module.__dict__)
outcome = stepwell._engine.activate(module, json.loads(sys.argv[2]))
assert (outcome["kind"], outcome["output"]) == ("step", 1), outcome
print(sorted(sys.modules))
"""
HEAVY_MODULES = {"dataclasses", "inspect", "ast", "traceback", "re", "typing", "threading"}


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no system Python")
def test_the_runtime_imports_no_heavy_modules_on_the_happy_path():
    data = {
        "instance_id": "i",
        "payload": None,
        "timestamp": NOW,
        "now": NOW,
        "history": [],
        "limits": LIMITS,
    }

    command = ["/usr/bin/python3", "-I", "-S", "-B", "-c", COLD_START, str(RUNTIME_DIR)]

    result = subprocess.run(
        [*command, json.dumps(data)], capture_output=True, text=True, timeout=30, check=True
    )
    after_import, after_step = (set(ast.literal_eval(line)) for line in result.stdout.splitlines())

    assert after_import & HEAVY_MODULES == set()
    # json brings re; a one-step activation adds none of the others, nor their cousins.
    assert after_step & (HEAVY_MODULES | {"contextlib", "datetime", "signal"}) == {"re"}


def test_the_zygotes_warm_up_runs_only_its_own_workflow_and_leaves_nothing_behind(capsys):
    import boot
    import zygote
    from stepwell import _progress

    modules = set(sys.modules)
    ran = []
    original = boot.outcome

    def outcome(job_bytes, channel=None, tenant=None):
        doc = original(job_bytes, channel, tenant)
        ran.append((tenant.__name__, json.loads(doc)))
        return doc

    boot.outcome = outcome
    try:
        zygote.warm_up(boot)
    finally:
        boot.outcome = original
    assert len(ran) == zygote.WARM_UP_RUNS
    assert {name for name, _ in ran} == {"stepwell_warm_up"}
    # Its second step ran for real: the runtime's whole path, result encoding included.
    assert ran[0][1]["ok"] and ran[0][1]["result"]["output"] == [1, {"x": 1}]
    assert _progress._sink is None
    assert set(sys.modules) - modules <= {"zygote", "json_codec"}  # the zygote imports both
    assert capsys.readouterr() == ("", "")


# Values the database cannot store

RETURNS = """
    def run(event, step):
        return step.do("value", lambda: event.payload["value"])
"""


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("a\x00b", "holds a NUL character"),
        ({"k\x00": 1}, "holds a NUL character"),
        (["\ud800"], "holds a lone surrogate ('\\ud800')"),
    ],
)
def test_a_result_the_database_cannot_store_fails_the_step_without_retries(value, words):
    outcome = run(tenant(RETURNS), payload={"value": value})

    assert outcome["status"] == "failed"
    assert outcome["retryable"] is False
    assert outcome["error"]["type"] == "ResultNotStorable"
    assert words in outcome["error"]["message"]
    assert "the result of step 'value'" in outcome["error"]["message"]


@pytest.mark.parametrize("value", ["\\u0000", "\\\\u0000", "\u00e9\U0001f600", "\\"])
def test_backslashes_and_other_characters_are_stored_as_they_are(value):
    outcome = run(tenant(RETURNS), payload={"value": value})

    assert outcome["status"] == "complete"
    assert outcome["output"] == value


def test_an_output_the_database_cannot_store_errors_the_instance_clearly():
    module = tenant("""
        def run(event, step):
            return {"text": "\\x00"}
    """)

    outcome = run(module)

    assert outcome["kind"] == "error"
    assert outcome["error"]["type"] == "ResultNotStorable"
    assert "the return value of run() holds a NUL character" in outcome["error"]["message"]


def test_a_child_payload_the_database_cannot_store_is_refused_at_the_call_site():
    module = tenant("""
        def run(event, step):
            step.start_workflow("child", "other", {"text": "\\ud800"})
    """)

    outcome = run(module)

    assert outcome["kind"] == "error"
    assert outcome["error"]["type"] == "ValueError"
    assert "the workflow payload holds a lone surrogate" in outcome["error"]["message"]


@pytest.mark.parametrize("name", ["a\x00b", "\udfff"])
def test_a_step_name_the_database_cannot_store_is_refused_at_the_call_site(name):
    module = tenant("""
        def run(event, step):
            step.do(event.payload["name"], lambda: 1)
    """)

    outcome = run(module, payload={"name": name})

    assert outcome["kind"] == "error"
    assert "step name" in outcome["error"]["message"]
    assert "cannot be stored" in outcome["error"]["message"]


def test_an_error_message_holding_nul_or_a_lone_surrogate_is_escaped():
    module = tenant("""
        def fail():
            print("logged")
            raise ValueError("bad\\x00byte \\ud800 here")

        def run(event, step):
            step.do("fails", fail)
    """)

    outcome = run(module)

    assert outcome["error"]["message"] == "bad\\x00byte \\ud800 here"
    assert "\x00" not in outcome["error"]["traceback"]
    assert "\\ud800" in outcome["error"]["traceback"]


@pytest.mark.parametrize(
    ("call", "words"),
    [
        ('step.wait_for_event("w", "paid", timeout="400 days")', "longer than 366 days"),
        ('step.wait_for_workflow("w", "child-1", timeout=10**9)', "longer than 366 days"),
        ('step.sleep("nap", float("nan"))', "must be a finite number"),
        ('step.sleep("nap", "a while")', "is not a duration"),
        ('step.sleep_until("nap", "0001-01-01T00:00:00+01:00")', "out of range"),
    ],
)
def test_a_malformed_or_absurd_wait_is_refused_at_the_call_site(call, words):
    module = tenant(f"""
        def run(event, step):
            {call}
    """)

    outcome = run(module)

    assert outcome["kind"] == "error"
    assert outcome["error"]["type"] == "ValueError"
    assert words in outcome["error"]["message"]
    assert 'File "/code/tenant.py", line 3, in run' in outcome["error"]["traceback"]


def test_the_runtime_and_the_host_clamp_retry_policies_at_the_same_limits():
    assert _arguments.MAX_RETRY_LIMIT == outcome_checks.MAX_RETRY_LIMIT == 100
    assert _arguments.MAX_RETRY_DELAY_SECONDS == outcome_checks.MAX_RETRY_DELAY_SECONDS == 86400
    assert _arguments.MAX_WAIT_SECONDS == outcome_checks.MAX_WAIT_SECONDS
