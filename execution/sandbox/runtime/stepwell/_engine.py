"""One activation: replay `run(event, step)` up to its first new step, and say what happened.

`activate` never raises: whatever the tenant code does, it returns one outcome
dict for the host (see the activation protocol in ARCHITECTURE.md and SDK.md).
"""

from __future__ import annotations

from ._capture import CappedLog, capture_output, stop_for_output
from ._protocol import ActivationInput, ProtocolError, parse_activation
from ._results import ResultError, as_json
from ._secrets import Secrets
from ._step import Event, Step, Suspend, nondeterminism
from ._tracebacks import describe, message_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


def activate(
    tenant_module: ModuleType, data: Any, secrets: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one activation of `tenant_module` on the host's input `data`, with the
    tenant's `secrets` (name to value) as `event.secrets`."""
    try:
        activation = parse_activation(data)
    except ProtocolError as exc:
        return _error({"type": "ProtocolError", "message": str(exc), "traceback": ""})
    known = Secrets(secrets)
    step = Step(activation, known)
    try:
        return _activate(tenant_module, activation, step, known)
    except BaseException as exc:  # a runtime bug must still produce an answer
        import traceback

        return step.outcome or _error(
            {
                "type": "StepwellRuntimeError",
                "message": f"the Stepwell runtime failed: {type(exc).__name__}: {message_of(exc)}",
                "traceback": "".join(traceback.format_exception(exc)),
            }
        )


def _activate(
    tenant_module: ModuleType, activation: ActivationInput, step: Step, secrets: Secrets
) -> dict[str, Any]:
    run = getattr(tenant_module, "run", None)
    if not callable(run):
        message = "the workflow module defines no run(event, step) function"
        return _error({"type": "TypeError", "message": message, "traceback": ""})
    event = Event(activation.payload, activation.instance_id, activation.timestamp, secrets)
    # run() is replayed on every activation, so what it prints outside steps is
    # noise; it must not reach the process's own stdout either.
    discarded = CappedLog(activation.limits.log_bytes, stop_for_output)
    try:
        try:
            with capture_output(discarded):
                value = run(event, step)
        finally:
            step.hold_ahead()
    except Suspend:
        # Only tenant code that raises the runtime's private signal itself gets here.
        return step.outcome or _error(describe(RuntimeError("run() raised Suspend itself")))
    except BaseException as exc:  # SystemExit too: the tenant's code ends here either way
        return (
            step.outcome
            or _unreached(step, f"run() raised {type(exc).__name__} before it")
            or _error(describe(exc))
        )
    if step.decided is not None:
        return step.decided
    return step.ended(
        _unreached(step, "run() returned before it")
        or _complete(value, activation.limits.result_bytes)
    )


def _unreached(step: Step, why: str) -> dict[str, Any] | None:
    """Non-determinism when a recorded step was not reached on this replay."""
    record = step.first_unreached()
    if record is None:
        return None
    return nondeterminism(record, {"name": None, "kind": None}, f"{why} was reached")


def _complete(value: Any, result_bytes: int) -> dict[str, Any]:
    try:
        return {
            "kind": "complete",
            "output": as_json(value, result_bytes, "the return value of run()"),
        }
    except ResultError as exc:
        return _error({"type": exc.type, "message": str(exc), "traceback": ""})


def _error(error: dict[str, str]) -> dict[str, Any]:
    return {"kind": "error", "error": error}
