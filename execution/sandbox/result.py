"""What goes into a sandbox and what comes out of it."""

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from execution.sandbox.limits import Limits

MODES = ("call", "workflow")


class Status(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMED_OUT = "timed_out"
    MEMORY_EXCEEDED = "memory_exceeded"
    OUTPUT_TOO_LARGE = "output_too_large"
    KILLED = "killed"
    SANDBOX_FAILURE = "sandbox_failure"
    # The machine had no sandbox slot free in time: the platform's capacity, not the
    # tenant's code, so it is retried without counting against the instance.
    BUSY = "busy"


@dataclass(frozen=True)
class SandboxRequest:
    tenant: str  # the tenant's id (never its editable slug): warm jails are keyed by it
    code: str  # the tenant module's source
    input: Any  # JSON-serialisable
    limits: Limits = field(default_factory=Limits)
    mode: str = "call"  # "call": tenant.main(input); "workflow": stepwell._engine.activate
    code_sha256: str | None = None  # computed when None
    # Called with each progress note (e.g. the do step about to run) while the jail
    # still runs, so the engine can show a step as started. Never sees the outcome.
    on_progress: Callable[[dict], None] | None = field(default=None, compare=False, repr=False)
    # The tenant's secrets, name to value, for this activation alone (`event.secrets`):
    # never printed, never in a warm jail's zygote, never in the code cache.
    secrets: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if not isinstance(self.code, str):
            raise TypeError("code must be a str")
        if not isinstance(self.limits, Limits):
            raise TypeError("limits must be a Limits")
        if not self.tenant or not isinstance(self.tenant, str):
            raise ValueError("tenant must be a non-empty str")
        if self.code_sha256 is None:
            digest = hashlib.sha256(self.code.encode()).hexdigest()
            object.__setattr__(self, "code_sha256", digest)


@dataclass(frozen=True)
class SandboxResult:
    status: Status
    result: Any  # the JSON value the step returned; None unless status is ok
    error: dict | None  # {"type", "message", "traceback"?}; set for every non-ok status
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    wall_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int | None
    # Notes the runtime sent before its outcome (e.g. the do step it was about to run),
    # kept whatever the status, so a killed jail still says which step it was in.
    progress: tuple = ()
    # Warm mode only, when asked to keep: the step's child, alive and paused after a
    # completed do step (execution.sandbox.kept.KeptChild). Whoever gets it must resume
    # or close it.
    kept: Any = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def to_json(self) -> dict:
        return {
            "status": str(self.status),
            "result": self.result,
            "error": dict(self.error) if self.error is not None else None,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "stdout_truncated": self.stdout_truncated,
            "stderr_truncated": self.stderr_truncated,
            "wall_seconds": round(self.wall_seconds, 6),
            "cpu_seconds": round(self.cpu_seconds, 6),
            "peak_memory_bytes": self.peak_memory_bytes,
            "progress": list(self.progress),
        }


def failure(status: Status, kind: str, message: str, started: float) -> SandboxResult:
    return SandboxResult(
        status=status,
        result=None,
        error={"type": kind, "message": message},
        stdout="",
        stderr="",
        stdout_truncated=False,
        stderr_truncated=False,
        wall_seconds=time.monotonic() - started,
        cpu_seconds=0.0,
        peak_memory_bytes=None,
    )
