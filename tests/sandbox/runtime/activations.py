"""Tenant modules made from source and activated once, as a jail would: the runtime's
tests share these. The runtime directory is on sys.path (__init__.py)."""

import json
import textwrap
import types
from typing import Any

from stepwell._engine import activate

NOW = "2025-03-01T12:00:00+00:00"

TENANT_FILE = "/code/tenant.py"

LIMITS = {"result_bytes": 10_000, "log_bytes": 2_000, "step_timeout_seconds": 30.0}


def tenant(source: str) -> types.ModuleType:
    """A tenant module built from source, with a file name outside the runtime."""
    module = types.ModuleType("tenant")
    module.__file__ = TENANT_FILE
    exec(compile(textwrap.dedent(source), TENANT_FILE, "exec"), module.__dict__)
    return module


def run(module: types.ModuleType, history: Any = (), payload: Any = None, **limits: Any) -> dict:
    """Activate `module` once and prove the outcome is plain JSON."""
    data = {
        "instance_id": "inst-1",
        "payload": payload if payload is not None else {},
        "timestamp": "2025-03-01T11:00:00+00:00",
        "now": NOW,
        "history": [dict(entry, index=index) for index, entry in enumerate(history)],
        "limits": {**LIMITS, **limits},
    }
    outcome = activate(module, data)
    assert json.loads(json.dumps(outcome, allow_nan=False)) == outcome
    return outcome


def rec(name: str, kind: str = "do", status: str = "complete", output: Any = None, **error: str):
    """One recorded step; `index` is set from its position by `run`."""
    return {
        "name": name,
        "kind": kind,
        "status": status,
        "attempts": 1,
        "output": output,
        "error": error or None,
    }


FLAKY = """
    from stepwell import NonRetryableError

    def fail():
        print("trying")
        raise ConnectionError("card service down")

    def refuse():
        raise NonRetryableError("over the limit")

    def run(event, step):
        fn = refuse if event.payload.get("refuse") else fail
        return step.do("charge", fn, **event.payload.get("options", {}))
"""
