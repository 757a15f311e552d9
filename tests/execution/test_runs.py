"""Runs of an instance: restart from a step (on the same or another version), rerun as a
new instance, children's ids, events consumed again, and non-determinism on a worker."""

import pytest

from execution import history, runs, workflows
from execution.errors import RestartRefused, StateConflict
from execution.models import CodeVersion, Event, Instance, Run
from tests.execution.test_engine import make_due
from tests.factories import upload

# Each step's result is new every time it runs: a kept step is one that did not run again.
STAMPS = """
import time

def run(event, step):
    a = step.do("a", lambda: time.time_ns())
    step.sleep("nap", 1)
    b = step.do("b", lambda: time.time_ns())
    return [a, b, "v1"]
"""


def finished(driver, instance):
    """Run the instance to its end, its sleeps over at once."""
    for _ in range(10):
        instance = driver.run(instance)
        if instance.is_terminal:
            return instance
        make_due(instance)
        driver.tick()
    raise AssertionError(f"the instance is {instance.status}")


def started(tenant, name, code, **kwargs):
    instance, _ = workflows.start_instance(upload(tenant, name, code).workflow, **kwargs)
    return instance


def test_a_restart_from_a_step_keeps_the_steps_before_it_and_runs_the_rest_again(driver, acme):
    instance = finished(driver, started(acme, "stamps", STAMPS, key="job"))
    a, b, _ = instance.output

    runs.restart(instance, from_step=2)
    instance.refresh_from_db()
    assert (instance.status, instance.run, instance.steps.count()) == ("queued", 2, 2)
    instance = finished(driver, instance)

    assert instance.output[0] == a and instance.output[1] != b
    earlier = history.history_of(instance, 1)
    assert [s["output"] for s in earlier["steps"]] == [a, None, b]
    assert (earlier["status"], earlier["output"], earlier["run"]) == ("complete", [a, b, "v1"], 1)
    now = history.history_of(instance)
    assert now["run"] == 2 and now["restarted_from_step"] == 2
    assert now["steps"][1]["shape"] == {"duration_seconds": 1}
    page = history.runs_page(instance, before=None, limit=10)
    assert [(r["run"], r["status"], r["restarted_from_step"]) for r in page["items"]] == [
        (2, "complete", 2),
        (1, "complete", None),
    ]


def test_a_restart_with_no_arguments_runs_everything_again_and_keeps_the_run(driver, acme):
    instance = finished(driver, started(acme, "stamps", STAMPS))
    a, _, _ = instance.output

    runs.restart(instance)
    instance = finished(driver, instance)

    assert instance.output[0] != a
    assert Run.objects.get(instance=instance).steps[0]["output"] == a


def test_a_restart_on_a_newer_version_runs_the_discarded_steps_on_it(driver, acme):
    instance = finished(driver, started(acme, "stamps", STAMPS))
    v2 = upload(acme, "stamps", STAMPS.replace('"v1"', '"v2"')).version

    runs.restart(instance, from_step=2, version_sha=v2.sha256)
    instance = finished(driver, instance)

    assert instance.output[2] == "v2" and instance.version_id == v2.pk
    assert Run.objects.get(instance=instance).version.code == STAMPS


def test_a_version_that_replays_the_kept_steps_differently_errors_the_new_run_on_a_worker(
    driver, acme
):
    instance = finished(driver, started(acme, "stamps", STAMPS))
    output = instance.output
    longer = upload(acme, "stamps", STAMPS.replace('step.sleep("nap", 1)', 'step.sleep("nap", 2)'))

    runs.restart(instance, from_step=2, version_sha=longer.version.sha256)
    instance.refresh_from_db()
    assert instance.status == "queued"  # the web process ran no tenant code
    instance = driver.run(instance)

    assert instance.status == "errored"
    error = instance.error
    assert error["type"] == "NonDeterminismError"
    assert error["index"] == 1 and error["line"] == 6
    assert "duration_seconds 1" in error["message"] and "duration_seconds 2" in error["message"]
    earlier = Run.objects.get(instance=instance)
    assert (earlier.status, earlier.output, len(earlier.steps)) == ("complete", output, 3)


PARENT = """
def run(event, step):
    child = step.start_workflow("spawn", "child", {})
    return step.wait_for_workflow("join", child)
"""
CHILD = """
def run(event, step):
    return step.do("work", lambda: "done")
"""


def test_children_started_in_a_later_run_get_new_ids(driver, acme):
    upload(acme, "child", CHILD)
    parent = finished(driver, started(acme, "parent", PARENT, key="p"))
    assert parent.steps.get(index=0).output == "p-0"

    runs.restart(parent)
    parent = finished(driver, parent)

    assert parent.steps.get(index=0).output == "p-r2-0"
    assert parent.steps.get(index=0).shape == {"workflow": "child", "instance_id": None}
    assert set(Instance.objects.filter(parent=parent).values_list("key", flat=True)) == {
        "p-0",
        "p-r2-0",
    }


EVENTS = """
def run(event, step):
    got = step.wait_for_event("first", "go")
    again = step.wait_for_event("second", "go")
    return [got, again]
"""


def test_events_consumed_by_discarded_steps_can_be_consumed_again(driver, acme):
    instance = driver.run(started(acme, "events", EVENTS))
    workflows.send_event(instance, "go", {"n": 1})
    workflows.send_event(instance, "go", {"n": 2})
    instance = driver.run(instance)
    assert instance.output == [{"n": 1}, {"n": 2}]

    runs.restart(instance, from_step=1)
    assert list(
        Event.objects.filter(instance=instance).values_list("consumed_by__index", flat=True)
    ) == [0, None]
    instance = driver.run(instance)

    assert instance.status == "complete" and instance.output == [{"n": 1}, {"n": 2}]


def test_a_restart_refuses_what_it_cannot_do(driver, acme):
    instance = finished(driver, started(acme, "stamps", STAMPS))
    other = upload(acme, "other", CHILD).version
    held = upload(acme, "stamps", STAMPS.replace("v1", "v3")).version
    CodeVersion.objects.filter(pk=held.pk).update(status="quarantined")

    with pytest.raises(RestartRefused, match="has no version") as refused:
        runs.restart(instance, version_sha=other.sha256)
    assert refused.value.field == "version"
    with pytest.raises(StateConflict, match="quarantined"):
        runs.restart(instance, version_sha=held.sha256)
    with pytest.raises(RestartRefused, match="from_step is 4; the run has 3 steps"):
        runs.restart(instance, from_step=4)
    instance.refresh_from_db()
    assert (instance.status, instance.run, Run.objects.count()) == ("complete", 1, 0)


def test_a_restart_cannot_keep_a_step_without_a_result(driver, acme):
    instance = driver.run(started(acme, "events", EVENTS))

    with pytest.raises(RestartRefused, match=r"step 0 .* is waiting"):
        runs.restart(instance, from_step=1)
    runs.restart(instance, from_step=0)


def test_a_rerun_is_a_new_instance_of_the_same_workflow(driver, acme):
    instance = finished(driver, started(acme, "stamps", STAMPS, payload={"x": 1}))

    same, created = runs.rerun(instance)
    other, _ = runs.rerun(instance, key="again", payload={"x": 2})

    assert created and same.pk != instance.pk and same.workflow_id == instance.workflow_id
    assert (same.payload, other.payload, other.key) == ({"x": 1}, {"x": 2}, "again")
    assert finished(driver, other).status == "complete"
    assert runs.rerun(instance, key="again") == (other, False)
