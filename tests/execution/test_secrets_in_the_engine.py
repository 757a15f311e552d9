"""Secrets through the engine (runtime in this process): handed to the activation, and
stored only as [secret:NAME]."""

from execution import engine, workflows
from execution.redaction import Redactor
from tenants.secrets import set_secret
from tests.factories import upload

VALUE = "sk-live-0123456789"

LEAKY = """
from stepwell import StepError

def fail(key):
    raise ValueError("rejected " + key)

def run(event, step):
    key = event.secrets["API_KEY"]
    got = step.do("use " + key, lambda: print("the key:", key) or {"echo": key, key: 1})
    try:
        step.do("fail", lambda: fail(key), retries={"limit": 0})
    except StepError:
        pass
    step.start_workflow("child", "leaf", {"token": key}, instance_id="leaf-1")
    return {"replayed": got, "key": key}
"""

LEAF = """
def run(event, step):
    return event.payload
"""


def start(tenant, name, code, payload=None):
    wf = upload(tenant, name, code).workflow
    return workflows.start_instance(wf, payload=payload or {})[0]


def test_values_are_stored_as_markers_and_a_replayed_step_gets_the_marker(driver, acme):
    set_secret(acme, "API_KEY", VALUE)
    upload(acme, "leaf", LEAF)
    instance = driver.run(start(acme, "leaky", LEAKY))
    assert instance.status == "complete", instance.error
    marker = "[secret:API_KEY]"
    assert instance.output == {"replayed": {"echo": marker, marker: 1}, "key": marker}
    use, fail, child = instance.steps.order_by("index")
    assert use.name == f"use {marker}"
    assert use.logs == f"the key: {marker}\n"
    assert fail.error["message"] == f"rejected {marker}"
    assert marker in fail.error["traceback"]
    leaf = instance.children.get()
    assert leaf.payload == {"token": marker}
    for row in (use, fail, child, leaf):
        assert VALUE not in repr(row.__dict__)
    events = "".join(str(e.data) for e in instance.progress.all())
    assert marker in events
    assert VALUE not in events


def test_another_tenants_secret_is_a_key_error_naming_it(driver, acme, globex):
    set_secret(acme, "ACME_ONLY", VALUE)
    code = 'def run(event, step):\n    return event.secrets["ACME_ONLY"]\n'
    instance = driver.run(start(globex, "peek", code))
    assert instance.status == "errored"
    assert instance.error["type"] == "KeyError"
    assert "ACME_ONLY" in instance.error["message"]


class Announced:
    def __init__(self):
        self.intents = []

    def announce(self, intent):
        self.intents.append(intent)


def test_a_progress_note_is_redacted_before_its_step_is_shown_running():
    watch = Announced()
    on_progress = engine.announced(watch, Redactor({"API_KEY": VALUE}))
    on_progress({"kind": "intent", "index": 0, "name": f"use {VALUE}"})
    assert [intent["name"] for intent in watch.intents] == ["use [secret:API_KEY]"]
