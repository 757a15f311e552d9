"""The runtime's JSON codec: what json would give, without importing json (or re)."""

import json
import subprocess

import json_codec
import pytest
from django.conf import settings

from execution.sandbox.config import RUNTIME_DIR

VALUES = [
    {"a": [1, 2.5, -0.0, "x\u00e9\u2603\U0001f600", None, True, False]},
    'text with "quotes" and \\ and \n',
    10**30,
    1e-300,
    [],
    {},
    {"nested": {"deep": [[[{"k": "v"}]]]}},
]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_it_writes_what_json_writes_and_reads_it_back(value, ensure_ascii):
    expected = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=ensure_ascii)
    text = json_codec.dumps(value, ensure_ascii=ensure_ascii)
    assert text == expected
    assert json_codec.loads(text) == json.loads(expected)
    assert json_codec.loads(f" \n{text}\t".encode()) == json.loads(expected)


@pytest.mark.parametrize(
    "value, error",
    [(float("nan"), ValueError), ({1, 2}, TypeError), (object(), TypeError)],
)
def test_values_json_refuses_are_refused(value, error):
    with pytest.raises(error):
        json_codec.dumps(value)


def test_a_circular_value_is_refused_and_the_next_one_still_written():
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        json_codec.dumps(loop)
    shared = [1]
    assert json_codec.dumps([shared, shared]) == "[[1],[1]]"


@pytest.mark.parametrize("text", ["", "   ", "[1,", "1 2", "{'a': 1}", "[1]x"])
def test_what_is_not_one_json_value_is_a_value_error(text):
    with pytest.raises(ValueError):
        json_codec.loads(text)


def test_the_sandbox_interpreter_loads_neither_json_nor_re_for_it():
    # The point of the codec: each fresh sandbox saves importing json and re.
    probe = (
        f"import sys; sys.path.insert(0, {str(RUNTIME_DIR)!r}); import json_codec; "
        "assert json_codec._scan is not None; "
        "json_codec.loads(json_codec.dumps({'a': [1]})); "
        "print(sorted(m for m in ('json', 're', 'enum') if m in sys.modules))"
    )
    done = subprocess.run(
        [settings.STEPWELL_SANDBOX_PYTHON, "-I", "-S", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_a_workflow_activation_imports_neither_json_nor_re():
    # Each costs a fresh sandbox milliseconds; the default retry delay ("1 second") is
    # text, so parsing durations must not need re either.
    probe = f"""
import sys
sys.path.insert(0, {str(RUNTIME_DIR)!r})
from stepwell._engine import activate
tenant = type(sys)("tenant")
exec("def run(event, step):\\n    return [step.do('a', lambda: 1), step.do('b', lambda: 2)]",
     tenant.__dict__)
limits = {{"result_bytes": 1000, "log_bytes": 1000, "step_timeout_seconds": 5.0}}
history = [{{"index": 0, "name": "a", "kind": "do", "status": "complete", "attempts": 1,
            "output": 1, "error": None}}]
outcome = activate(tenant, {{"instance_id": "i", "payload": {{}}, "history": history,
    "timestamp": "2026-01-01T00:00:00+00:00", "now": "2026-01-01T00:00:01+00:00",
    "limits": limits}})
assert outcome["kind"] == "step" and outcome["output"] == 2, outcome
print(sorted(m for m in ("json", "re", "enum") if m in sys.modules))
"""
    done = subprocess.run(
        [settings.STEPWELL_SANDBOX_PYTHON, "-I", "-S", "-c", probe],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
