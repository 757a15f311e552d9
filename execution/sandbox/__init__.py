"""Run tenant code in nsjail: the one interface the engine sees (ARCHITECTURE.md, "The sandbox").

    result = get_sandbox().run(SandboxRequest(tenant="acme", code=src, input=x, limits=lim))

A sandbox violation is always a SandboxResult with a non-ok status, never an exception.
"""

import atexit
import threading
from typing import Protocol

from execution.sandbox import unsandboxed
from execution.sandbox.config import SandboxConfig, SandboxSetupError
from execution.sandbox.fresh import FreshSandbox
from execution.sandbox.limits import Limits
from execution.sandbox.result import SandboxRequest, SandboxResult, Status
from execution.sandbox.warm import WarmSandbox

__all__ = [
    "FreshSandbox",
    "Limits",
    "Sandbox",
    "SandboxConfig",
    "SandboxRequest",
    "SandboxResult",
    "SandboxSetupError",
    "Status",
    "WarmSandbox",
    "get_sandbox",
    "prepare",
]


class Sandbox(Protocol):
    """Fresh and warm modes both implement this; the engine never knows which ran a step."""

    def run(self, request: SandboxRequest, *, keep: bool = False) -> SandboxResult: ...


_sandboxes: dict[str, Sandbox] = {}
_sandboxes_lock = threading.Lock()


def get_sandbox(mode: str = "fresh") -> Sandbox:
    """The process-wide sandbox for a mode, configured from Django settings."""
    if mode == "unsandboxed":
        return _unsandboxed()
    if mode not in ("fresh", "warm"):
        raise ValueError(f"unknown sandbox mode {mode!r}")
    with _sandboxes_lock:
        if "fresh" not in _sandboxes:
            _sandboxes["fresh"] = FreshSandbox(SandboxConfig.from_settings())
        if mode == "warm" and "warm" not in _sandboxes:
            # Warm mode falls back on (and shares the slots of) the fresh sandbox.
            warm = WarmSandbox.from_settings(fresh=_sandboxes["fresh"])
            atexit.register(warm.close)
            _sandboxes["warm"] = warm
        return _sandboxes[mode]


def _unsandboxed() -> Sandbox:
    """Benchmark-only (bench/peers.py): refused unless STEPWELL_BENCH_UNSANDBOXED=1."""

    if not unsandboxed.enabled():
        raise ValueError(
            f"sandbox mode 'unsandboxed' is benchmark-only: set {unsandboxed.ENV_FLAG}=1"
        )
    with _sandboxes_lock:
        if "unsandboxed" not in _sandboxes:
            _sandboxes["unsandboxed"] = unsandboxed.SubprocessSandbox(SandboxConfig.from_settings())
        return _sandboxes["unsandboxed"]


def prepare() -> None:
    """Idempotent start-up: cgroup parents, a sweep of leftovers, the code cache dir."""
    get_sandbox("fresh").prepare()
