"""The runtime on the sandbox interpreter, as boot.py starts it: it works there, and a fresh
activation imports nothing heavy."""

import ast
import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from execution.sandbox.config import RUNTIME_DIR
from tests.sandbox.runtime.activations import LIMITS, NOW, rec

SMOKE = """
import json, sys, types
sys.path.insert(0, sys.argv[1])
from stepwell._engine import activate
module = types.ModuleType("tenant")
module.__file__ = "/code/tenant.py"
exec(compile(sys.argv[2], "/code/tenant.py", "exec"), module.__dict__)
print(json.dumps([sys.version_info[:2], activate(module, json.loads(sys.argv[3]))]))
"""


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no system Python")
def test_the_runtime_works_on_the_sandbox_interpreter():
    source = textwrap.dedent("""
        from stepwell import NonRetryableError, StepError, WaitTimeout

        def run(event, step):
            a = step.do("a", lambda: 1)
            step.do("b", lambda: print("hello") or a + 1, timeout="5 seconds")
    """)
    data = {
        "instance_id": "i",
        "payload": {},
        "timestamp": NOW,
        "now": NOW,
        "history": [{"index": 0, **rec("a", output=1)}],
        "limits": LIMITS,
    }

    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", SMOKE, str(RUNTIME_DIR), source, json.dumps(data)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    version, outcome = json.loads(result.stdout)

    assert version[0] == 3 and version[1] >= 11
    assert (outcome["name"], outcome["output"], outcome["logs"]) == ("b", 2, "hello\n")


COLD_START = """
import sys
sys.path.insert(0, sys.argv[1])
import stepwell._engine
print(sorted(sys.modules))
import json  # as boot.py does, before it activates
module = type(sys)("tenant")
exec("def run(event, step):\\n    return step.do('one', lambda: 1)\\n", module.__dict__)
outcome = stepwell._engine.activate(module, json.loads(sys.argv[2]))
assert (outcome["kind"], outcome["output"]) == ("step", 1), outcome
print(sorted(sys.modules))
"""


HEAVY_MODULES = {"dataclasses", "inspect", "ast", "traceback", "re", "typing", "threading"}


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no system Python")
def test_the_runtime_imports_no_heavy_modules_on_the_happy_path():
    data = {
        "instance_id": "i",
        "payload": None,
        "timestamp": NOW,
        "now": NOW,
        "history": [],
        "limits": LIMITS,
    }

    command = ["/usr/bin/python3", "-I", "-S", "-B", "-c", COLD_START, str(RUNTIME_DIR)]

    result = subprocess.run(
        [*command, json.dumps(data)], capture_output=True, text=True, timeout=30, check=True
    )
    after_import, after_step = (set(ast.literal_eval(line)) for line in result.stdout.splitlines())

    assert after_import & HEAVY_MODULES == set()
    # json brings re; a one-step activation adds none of the others, nor their cousins.
    assert after_step & (HEAVY_MODULES | {"contextlib", "datetime", "signal"}) == {"re"}
