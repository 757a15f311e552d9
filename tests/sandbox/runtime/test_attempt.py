"""stepwell/_attempt.py: one attempt of a do step, its log, its time limit and its result."""

import time

import pytest

from tests.sandbox.runtime.activations import FLAKY, run, tenant


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


def test_a_non_retryable_error_fails_the_step_at_once():
    outcome = run(tenant(FLAKY), payload={"refuse": True})

    assert outcome["status"] == "failed"
    assert outcome["error"]["type"] == "NonRetryableError"
    assert outcome["error"]["message"] == "over the limit"
    assert outcome["retryable"] is False


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
