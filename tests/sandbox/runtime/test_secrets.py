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
