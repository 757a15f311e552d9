"""stepwell/_arguments.py: what tenant code passes to `step.*`, checked at the call site
(retry policies, timeouts, waits, step names), and clamped where merely large."""

import pytest
from stepwell import _arguments

from execution import outcome_checks
from tests.sandbox.runtime.activations import FLAKY, run, tenant


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


def test_the_runtime_and_the_host_clamp_retry_policies_at_the_same_limits():
    assert _arguments.MAX_RETRY_LIMIT == outcome_checks.MAX_RETRY_LIMIT == 100
    assert _arguments.MAX_RETRY_DELAY_SECONDS == outcome_checks.MAX_RETRY_DELAY_SECONDS == 86400
    assert _arguments.MAX_WAIT_SECONDS == outcome_checks.MAX_WAIT_SECONDS


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
