"""The engine with a real warm jail: a kept child runs ahead of its step's record
(stepwell/_step.py), and the engine records the last step and the end of run() at once,
unless redaction changed what the child went on with (then it replays, as before)."""

import pytest

from execution import engine, outcomes, workflows
from execution.sandbox.kept import KeptChild
from tenants.secrets import set_secret
from tests.driver import Driver
from tests.factories import make_tenant, upload

pytestmark = [pytest.mark.sandbox, pytest.mark.django_db(transaction=True)]

THREE = """
def run(event, step):
    a = step.do("a", lambda: 1)
    b = step.do("b", lambda: a + 1)
    return step.do("c", lambda: [a, b, b + 1])
"""

# x holds the secret; what run() computes from it after the step must be what a replay,
# which reads x back as [secret:TOKEN], computes.
SECRET_THEN = """
def run(event, step):
    x = step.do("read", lambda: event.secrets["TOKEN"])
    n = step.do("measure", lambda: len(x))
    return [x, n]
"""


@pytest.fixture
def driver(monkeypatch, warm_sandbox):
    monkeypatch.setattr(engine, "get_sandbox", lambda mode: warm_sandbox)
    driver = Driver()
    monkeypatch.setattr("execution.dispatch.enqueue", driver.enqueue)
    return driver


@pytest.fixture
def calls(monkeypatch):
    counted = {"resume": 0, "folded": 0}
    resume, fold = KeptChild.resume, outcomes.record_completed_end

    def counting_resume(self, *args):
        counted["resume"] += 1
        return resume(self, *args)

    def counting_fold(*args):
        counted["folded"] += 1
        return fold(*args)

    monkeypatch.setattr(KeptChild, "resume", counting_resume)
    monkeypatch.setattr(outcomes, "record_completed_end", counting_fold)
    return counted


def started(tenant, name, code):
    workflow = upload(tenant, name, code).workflow
    return workflows.start_instance(workflow)[0]


def test_the_last_step_and_the_end_are_recorded_together(driver, calls):
    acme = make_tenant("acme", "alice", sandbox_mode="warm")
    instance = driver.run(started(acme, "three", THREE))
    assert (instance.status, instance.output) == ("complete", [1, 2, 3])
    assert [s.status for s in instance.steps.order_by("index")] == ["complete"] * 3
    # Steps b and c went on in the kept child; the end was not a resume of its own.
    assert calls == {"resume": 2, "folded": 1}


def test_a_result_redaction_changed_is_replayed_not_run_ahead_on(driver, calls):
    acme = make_tenant("acme", "alice", sandbox_mode="warm")
    set_secret(acme, "TOKEN", "s3cr3t")
    instance = driver.run(started(acme, "secret", SECRET_THEN))
    marker = "[secret:TOKEN]"
    assert instance.status == "complete", instance.error
    # The child that read the secret went on with "s3cr3t" (6 characters); it was ended,
    # and a replay measured the marker, as every later replay will.
    assert instance.output == [marker, len(marker)]
    assert instance.steps.get(name="measure").output == len(marker)
    assert calls["resume"] == 0
