"""Non-determinism on what shapes a step (SDK.md), and stepwell.replay.compare itself."""

import pytest
from stepwell.replay import compare

from tests.sandbox.runtime.activations import rec, run, tenant


def shaped(name, kind, shape, output=None):
    return {**rec(name, kind, output=output), "shape": shape}


# Each kind of divergence: the recorded step, the code replayed now, and what changed.
DIVERGENCES = {
    "sleep duration": (
        shaped("pause", "sleep", {"duration_seconds": 60.0}),
        'step.sleep("pause", "2 minutes")',
        ("duration_seconds", 60.0, 120.0),
    ),
    "sleep_until time": (
        shaped("pause", "sleep", {"until": "2025-03-02T00:00:00+00:00"}),
        'step.sleep_until("pause", "2025-03-03T00:00:00+00:00")',
        ("until", "2025-03-02T00:00:00+00:00", "2025-03-03T00:00:00+00:00"),
    ),
    "sleep_until instead of sleep": (
        shaped("pause", "sleep", {"duration_seconds": 60.0}),
        'step.sleep_until("pause", "2025-03-03T00:00:00+00:00")',
        ("duration_seconds", 60.0, None),
    ),
    "event type": (
        shaped("approval", "wait_for_event", {"event_type": "approved"}, output={}),
        'step.wait_for_event("approval", "accepted")',
        ("event_type", "approved", "accepted"),
    ),
    "child workflow": (
        shaped("notify", "start_workflow", {"workflow": "mail", "instance_id": None}, "c"),
        'step.start_workflow("notify", "sms", {})',
        ("workflow", "mail", "sms"),
    ),
    "child id": (
        shaped("notify", "start_workflow", {"workflow": "mail", "instance_id": "m-1"}, "m-1"),
        'step.start_workflow("notify", "mail", {}, instance_id="m-2")',
        ("instance_id", "m-1", "m-2"),
    ),
    "awaited child": (
        shaped("receipt", "wait_for_workflow", {"instance_id": "m-1"}, output={}),
        'step.wait_for_workflow("receipt", "m-2")',
        ("instance_id", "m-1", "m-2"),
    ),
}


@pytest.mark.parametrize("case", DIVERGENCES, ids=list(DIVERGENCES))
def test_a_step_that_changed_shape_is_non_determinism_at_its_line(case):
    recorded, call, (field, old, new) = DIVERGENCES[case]
    module = tenant(f"""
        def run(event, step):
            step.do("first", lambda: 1)
            {call}
    """)

    outcome = run(module, [rec("first", output=1), recorded])

    assert outcome["kind"] == "nondeterminism"
    assert outcome["index"] == 1
    assert outcome["line"] == 4
    assert outcome["recorded"]["shape"][field] == old
    assert outcome["new"]["shape"].get(field) == new
    message = outcome["error"]["message"]
    assert message.startswith(f"step 1 was {recorded['name']!r} ({recorded['kind']}, ")
    before, _, after = message.partition(" when recorded but ")
    assert f"{field} {old!r}" in before
    assert new is None or f"{field} {new!r}" in after
    assert "(called at line 4)" in message
    assert outcome["error"]["line"] == 4 and outcome["error"]["index"] == 1


def test_the_same_shape_replays_the_recorded_results():
    module = tenant("""
        def run(event, step):
            step.sleep("pause", "1 minute")
            got = step.wait_for_event("approval", "approved")
            child = step.start_workflow("notify", "mail", {})
            done = step.wait_for_workflow("receipt", child)
            return [got, child, done]
    """)
    history = [
        shaped("pause", "sleep", {"duration_seconds": 60.0}),
        shaped("approval", "wait_for_event", {"event_type": "approved"}, {"by": "ann"}),
        shaped("notify", "start_workflow", {"workflow": "mail", "instance_id": None}, "p-2"),
        shaped("receipt", "wait_for_workflow", {"instance_id": "p-2"}, "sent"),
    ]

    assert run(module, history) == {"kind": "complete", "output": [{"by": "ann"}, "p-2", "sent"]}


def test_steps_recorded_without_a_shape_compare_name_and_kind_only():
    module = tenant("""
        def run(event, step):
            step.sleep("pause", "5 minutes")
            return step.wait_for_event("approval", "a-new-type")
    """)

    outcome = run(module, [rec("pause", "sleep"), rec("approval", "wait_for_event", output=7)])

    assert outcome == {"kind": "complete", "output": 7}


def test_the_line_is_where_the_tenant_called_the_step_even_from_a_helper():
    module = tenant("""
        def wait(step):
            return step.wait_for_event("approval", "other")

        def run(event, step):
            return wait(step)
    """)

    outcome = run(module, [shaped("approval", "wait_for_event", {"event_type": "approved"})])

    assert outcome["line"] == 3


def test_compare_is_a_pure_function_of_two_steps():
    recorded = {"name": "pause", "kind": "sleep", "shape": {"duration_seconds": 5}}

    assert (
        compare(recorded, {"name": "pause", "kind": "sleep", "shape": {"duration_seconds": 5.0}})
        is None
    )
    assert compare(recorded, {"name": "wait", "kind": "sleep", "shape": {}}) == {
        "field": "name",
        "recorded": "pause",
        "new": "wait",
    }
    assert compare(recorded, {"name": "pause", "kind": "do", "shape": {}})["field"] == "kind"
    assert compare({"name": "pause", "kind": "sleep"}, {"name": "pause", "kind": "sleep"}) is None
    assert compare(recorded, {"name": "pause", "kind": "sleep", "shape": {"until": "x"}}) == {
        "field": "duration_seconds",
        "recorded": 5,
        "new": None,
    }
