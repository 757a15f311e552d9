"""`event.secrets` in the runtime: a read-only mapping, a KeyError that names the secret."""

import pytest
from stepwell._engine import activate
from stepwell._secrets import Secrets

from tests.sandbox.runtime.activations import LIMITS, NOW, tenant

SECRETS = {"API_KEY": "sk-live-abcdef"}


def activation(history=()):
    return {
        "instance_id": "i",
        "payload": {},
        "timestamp": NOW,
        "now": NOW,
        "history": list(history),
        "limits": LIMITS,
    }


def test_workflow_code_reads_its_secrets_from_the_event():
    module = tenant("""
        def run(event, step):
            return [event.secrets["API_KEY"], "API_KEY" in event.secrets, list(event.secrets)]
    """)
    outcome = activate(module, activation(), SECRETS)
    assert outcome == {"kind": "complete", "output": ["sk-live-abcdef", True, ["API_KEY"]]}


def test_a_missing_secret_is_a_key_error_naming_it():
    module = tenant("""
        def run(event, step):
            return event.secrets["MISSING_ONE"]
    """)
    outcome = activate(module, activation(), SECRETS)
    assert outcome["kind"] == "error"
    assert outcome["error"]["type"] == "KeyError"
    assert "MISSING_ONE" in outcome["error"]["message"]


def test_secrets_are_read_only_and_print_no_value():
    secrets = Secrets(SECRETS)
    with pytest.raises(TypeError):
        secrets["API_KEY"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        secrets._values = {}
    assert "sk-live" not in repr(secrets)
    assert secrets.get("NOPE") is None
    assert dict(secrets.items()) == SECRETS


def test_without_secrets_the_mapping_is_empty():
    module = tenant("""
        def run(event, step):
            return len(event.secrets)
    """)
    assert activate(module, activation())["output"] == 0


def test_a_step_named_after_a_secret_replays_under_its_stored_name():
    module = tenant("""
        def run(event, step):
            return step.do("use " + event.secrets["API_KEY"], lambda: "ran again")
    """)
    recorded = {
        "index": 0,
        "name": "use [secret:API_KEY]",
        "kind": "do",
        "status": "complete",
        "attempts": 1,
        "output": "[secret:API_KEY]",
        "error": None,
    }
    # The same value, or one replaced since the step ran: the step is replayed either way.
    for value in ("sk-live-abcdef", "sk-live-rotated"):
        outcome = activate(module, activation([recorded]), {"API_KEY": value})
        assert outcome == {"kind": "complete", "output": "[secret:API_KEY]"}
    renamed = {**recorded, "name": "use something else"}
    outcome = activate(module, activation([renamed]), SECRETS)
    assert outcome["kind"] == "nondeterminism"
