"""A stand-in for the sandbox in engine unit tests: runs the real runtime in this process.

Only the jail is faked; the replay protocol, the outcome and its recording are real.
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

from execution.sandbox import SandboxResult, Status

RUNTIME = Path(__file__).resolve().parents[2] / "execution" / "sandbox" / "runtime"
if str(RUNTIME) not in sys.path:
    sys.path.insert(0, str(RUNTIME))

from stepwell._engine import activate  # noqa: E402


def run_in_process(activation, keep=False) -> SandboxResult:
    module = types.ModuleType("tenant")
    module.__file__ = "/code/tenant.py"
    started = time.monotonic()
    exec(compile(activation.code, "/code/tenant.py", "exec"), module.__dict__)
    outcome = activate(module, activation.input, activation.secrets)
    return SandboxResult(
        status=Status.OK,
        result=outcome,
        error=None,
        stdout="",
        stderr="",
        stdout_truncated=False,
        stderr_truncated=False,
        wall_seconds=time.monotonic() - started,
        cpu_seconds=0.0,
        peak_memory_bytes=None,
    )
