"""stepwell/_step.py: a kept child runs ahead of its step's record (issue 18).

A warm jail's kept child (stepwell._keep) does not wait for the host after a completed do
step: run() goes on with the step's result as JSON gives it back, and the step's outcome
is sent at the next step call, before anything of that step runs, or after AHEAD_SECONDS
if run() is slow to get there; if run() returns first, the outcome says how it ended."""

import time

import pytest
from stepwell import _keep, _step

from tests.sandbox.runtime.activations import NOW, run, tenant

LATER = "2025-03-01T12:00:05+00:00"


@pytest.fixture
def pauses():
    """Each pause's outcome, with what run() had done by then; the host's answer is the
    step's output as sent and a later 'now'."""
    sent: list[dict] = []

    def pause(outcome):
        sent.append(outcome)
        return outcome["output"], LATER

    _keep.set_pause(pause)
    yield sent
    _keep.set_pause(None)


def test_run_returning_after_a_step_comes_with_the_steps_outcome(pauses):
    module = tenant("""
        def run(event, step):
            value = step.do("only", lambda: (1, 2))
            value.append(3)  # what run() does with it cannot change the outcome sent
            return value
    """)
    outcome = run(module)
    assert pauses == []  # nothing waited on the host between the step and the end
    assert (outcome["kind"], outcome["name"], outcome["output"]) == ("step", "only", [1, 2])
    assert outcome["then"] == {"kind": "complete", "output": [1, 2, 3]}


def test_the_outcome_goes_before_the_next_step_runs(pauses):
    module = tenant("""
        RAN = []
        def run(event, step):
            a = step.do("a", lambda: RAN.append("a") or 1)
            b = step.do("b", lambda: RAN.append("b") or a + 1)
            return b
    """)
    outcome = run(module)
    assert [p["name"] for p in pauses] == ["a"]
    assert module.RAN == ["a", "b"]  # b ran after a's outcome went (the pause returned)
    assert outcome["name"] == "b" and outcome["then"] == {"kind": "complete", "output": 2}


def test_a_slow_stretch_after_a_step_does_not_hold_its_outcome(pauses):
    module = tenant("""
        import time
        AT = {}
        def run(event, step):
            step.do("a", lambda: 1)
            AT["began"] = time.monotonic()
            time.sleep(0.3)
            return "done"
    """)
    outcome = run(module)
    assert [p["name"] for p in pauses] == ["a"]  # the alarm sent it during the sleep
    assert outcome == {"kind": "complete", "output": "done"}  # the end came on its own


def test_the_next_step_sees_the_hosts_time_for_it(pauses):
    module = tenant("""
        def run(event, step):
            step.do("a", lambda: 1)
            step.sleep("nap", 10)
    """)
    outcome = run(module)
    assert outcome["kind"] == "sleep"
    assert outcome["until"] == "2025-03-01T12:00:15+00:00"  # LATER + 10 s, not NOW + 10 s
    assert NOW != LATER


def test_an_error_after_a_step_leaves_the_steps_outcome_to_be_recorded(pauses):
    module = tenant("""
        def run(event, step):
            step.do("a", lambda: 1)
            raise ValueError("after a")
    """)
    outcome = run(module)
    assert pauses == []
    assert (outcome["kind"], outcome["name"], outcome.get("then")) == ("step", "a", None)


def test_an_alarm_after_the_end_sends_nothing_twice(pauses):
    module = tenant("""
        def run(event, step):
            return step.do("a", lambda: 1)
    """)
    outcome = run(module)
    time.sleep(_step.AHEAD_SECONDS * 3)  # an alarm left armed would pause here
    assert pauses == [] and outcome["then"] == {"kind": "complete", "output": 1}


def test_without_a_pause_nothing_runs_ahead():
    module = tenant("""
        def run(event, step):
            step.do("a", lambda: 1)
            return 2
    """)
    outcome = run(module)
    assert outcome["name"] == "a" and "then" not in outcome
