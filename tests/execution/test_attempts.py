"""Every attempt of a step kept and shown, and the stream's events of API.md's second
release (step.started per attempt, step.timed_out, the error on errored, cancelled)."""

import pytest
from django.utils import timezone
from stepwell import _progress

from execution import engine, workflows
from execution.kinds import history_size
from execution.models import Instance, ProgressEvent, Step
from tests.execution.inprocess import run_in_process
from tests.execution.test_engine import make_due, start

# Fails until its file has been touched `fails` times; the runtime runs in this process
# here, so a file can tell the attempts apart.
FLAKY = """
import os

def run(event, step):
    def flaky():
        mark = event.payload["mark"]
        tries = len(open(mark).read()) if os.path.exists(mark) else 0
        with open(mark, "a") as f:
            f.write("x")
        print(f"try {tries + 1}")
        if tries < event.payload["fails"]:
            raise ValueError(f"failure {tries + 1}")
        return tries + 1

    return step.do("flaky", flaky, retries={"limit": 3, "delay": 0, "backoff": "constant"})
"""


def events(instance, type_):
    return [e.data for e in ProgressEvent.objects.filter(instance=instance, type=type_)]


def assert_history_counted(instance):
    """history_bytes is what the instance's step rows hold, earlier attempts included."""
    instance.refresh_from_db()
    assert instance.history_bytes == sum(history_size(s) for s in instance.steps.all())


def test_each_attempt_is_kept_oldest_first_with_its_times_status_error_and_logs(
    driver, acme, tmp_path
):
    instance = start(acme, "flaky", FLAKY, {"mark": str(tmp_path / "m"), "fails": 2})
    instance = driver.run(instance)
    assert (instance.status, instance.output) == ("complete", 3)
    step = instance.steps.get()
    detail = step.attempts_detail()
    assert [(a["attempt"], a["status"]) for a in detail] == [
        (1, "failed"),
        (2, "failed"),
        (3, "complete"),
    ]
    assert [a["error"]["message"] for a in detail[:2]] == ["failure 1", "failure 2"]
    assert detail[2]["error"] is None
    assert [a["logs"].strip() for a in detail] == ["try 1", "try 2", "try 3"]
    starts = [a["started_at"] for a in detail]
    assert starts == sorted(starts) and all(a["finished_at"] >= a["started_at"] for a in detail)
    assert step.attempts == 3
    assert_history_counted(instance)


def test_a_step_that_exhausts_its_retries_shows_every_failure(driver, acme, tmp_path):
    instance = start(acme, "flaky", FLAKY, {"mark": str(tmp_path / "m"), "fails": 9})
    instance = driver.run(instance)
    assert instance.status == "errored"
    detail = instance.steps.get().attempts_detail()
    assert [(a["attempt"], a["status"]) for a in detail] == [(n, "failed") for n in (1, 2, 3, 4)]
    assert detail[-1]["error"]["message"] == "failure 4"
    assert_history_counted(instance)


def announcing(activation, keep=False):
    """run_in_process, with the runtime's intents sent to the engine as a jail's are."""
    _progress.set_sink(activation.on_progress)
    try:
        return run_in_process(activation)
    finally:
        _progress.set_sink(None)


def test_an_attempt_shown_running_is_kept_too(driver, acme, tmp_path, settings, monkeypatch):
    """The running mark overwrites the row's times: the failed attempt is kept first."""
    settings.STEPWELL_RUNNING_MARK_SECONDS = 0
    monkeypatch.setattr(engine, "run_sandbox", announcing)
    code = FLAKY.replace('print(f"try', 'import time; time.sleep(0.3); print(f"try')
    instance = start(acme, "flaky", code, {"mark": str(tmp_path / "m"), "fails": 1})
    instance = driver.run(instance)
    assert instance.status == "complete", instance.error
    detail = instance.steps.get().attempts_detail()
    assert [(a["attempt"], a["status"], a["logs"].strip()) for a in detail] == [
        (1, "failed", "try 1"),
        (2, "complete", "try 2"),
    ]
    assert_history_counted(instance)
    started = events(instance, "step.started")
    assert [s["step"]["attempts"] for s in started] == [1, 2]


def test_step_started_comes_for_every_attempt_with_running(driver, acme, tmp_path):
    instance = start(acme, "flaky", FLAKY, {"mark": str(tmp_path / "m"), "fails": 2})
    instance = driver.run(instance)
    started = events(instance, "step.started")
    assert [(s["status"], s["step"]["status"], s["step"]["attempts"]) for s in started] == [
        ("running", "running", 1),
        ("running", "running", 2),
        ("running", "running", 3),
    ]


def test_a_wait_that_times_out_sends_step_timed_out(driver, acme):
    code = """
    from stepwell import WaitTimeout

    def run(event, step):
        try:
            step.wait_for_event("approval", "approved", timeout="1 hour")
        except WaitTimeout:
            return "expired"
    """
    instance = driver.run(start(acme, "expiring", code))
    make_due(instance)
    driver.tick()
    instance.refresh_from_db()
    assert instance.output == "expired"
    (timed_out,) = events(instance, "step.timed_out")
    assert timed_out["step"]["status"] == "timed_out"
    assert timed_out["error"]["type"] == "WaitTimeout"


def test_errored_carries_the_error_on_the_stream(driver, acme):
    code = """
    def run(event, step):
        raise KeyError("missing")
    """
    instance = driver.run(start(acme, "crash", code))
    (last,) = [e for e in events(instance, "instance.status") if e["status"] == "errored"]
    assert last["error"]["type"] == "KeyError"
    assert last["error"] == instance.error
    complete = driver.run(start(acme, "fine", "def run(event, step):\n    return 1\n"))
    assert events(complete, "instance.status")[-1] == {"status": "complete"}


@pytest.mark.parametrize(
    ("code", "was"),
    [
        ('def run(event, step):\n    step.wait_for_event("w", "go")\n', "waiting"),
        ('def run(event, step):\n    step.sleep("s", "1 hour")\n', "sleeping"),
        (
            "def run(event, step):\n"
            '    step.do("x", lambda: 1 / 0, retries={"limit": 1, "delay": "1 hour"})\n',
            "failed",
        ),
    ],
)
def test_terminating_cancels_the_unfinished_step(driver, acme, code, was):
    instance = driver.run(start(acme, "open", code))
    assert instance.steps.get().status == was
    workflows.terminate(instance)
    step = instance.steps.get()
    assert (step.status, step.wake_at) == ("cancelled", None)
    assert step.finished_at <= timezone.now()
    assert Instance.objects.get(pk=instance.pk).status == "terminated"
    assert step.attempts_detail()[-1]["status"] == "cancelled"


def test_a_finished_step_stays_as_it_was_when_terminated(driver, acme):
    code = (
        'def run(event, step):\n    step.do("a", lambda: 1)\n    step.wait_for_event("w", "go")\n'
    )
    instance = driver.run(start(acme, "open", code))
    workflows.terminate(instance)
    assert list(instance.steps.values_list("status", flat=True)) == ["complete", "cancelled"]
    assert Step.objects.filter(instance=instance, status="cancelled").count() == 1
