"""The non-determinism check: whether a call made on replay is the step that was recorded.

Pure functions on plain dicts, so that anything holding a history (the sandbox's
replay, the `stepwell replay` command on a downloaded history) compares the same way.

A step is `{"name", "kind", "shape"}`. Its shape is what makes it the same step
besides its name and kind, by kind (SDK.md):

    do                 {}
    sleep              {"duration_seconds": float}    step.sleep
                       {"until": ISO 8601 string}     step.sleep_until
    wait_for_event     {"event_type": str}
    start_workflow     {"workflow": str, "instance_id": str or None}
    wait_for_workflow  {"instance_id": str}

Only what the recorded step's shape holds is compared: a step recorded without a shape
(before the second release) compares on name and kind alone.
"""

from __future__ import annotations

import sys

from ._tracebacks import is_runtime_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


def compare(recorded: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """None if `new` (the call made now) replays `recorded` (a history step), else the
    first difference: `{"field", "recorded", "new"}`, `field` one of "name", "kind" or a
    key of the recorded shape, with the two values of that field."""
    for field in ("name", "kind"):
        if recorded.get(field) != new.get(field):
            return {"field": field, "recorded": recorded.get(field), "new": new.get(field)}
    shape = recorded.get("shape")
    if not isinstance(shape, dict):
        return None
    now = new.get("shape") or {}
    for field, value in shape.items():
        if now.get(field) != value:
            return {"field": field, "recorded": value, "new": now.get(field)}
    return None


def describe(step: Mapping[str, Any]) -> str:
    """`'name' (kind)`, with its shape when it has one: `'pause' (sleep, duration_seconds 5)`."""
    if step.get("name") is None:
        return "nothing"
    shape = step.get("shape") or {}
    details = "".join(f", {field} {value!r}" for field, value in shape.items())
    return f"{step.get('name')!r} ({step.get('kind')}{details})"


def message(
    index: int,
    recorded: Mapping[str, Any],
    new: Mapping[str, Any],
    line: int | None = None,
    *,
    instead: str | None = None,
) -> str:
    """What a non-determinism error says: the position, both versions, and the line of
    the call; `instead` says what happened when no step was called there."""
    where = f" (called at line {line})" if line is not None else ""
    now = instead or f"is {describe(new)} now{where}"
    return (
        f"step {index} was {describe(recorded)} when recorded but {now}: "
        "the workflow must call steps in the same order on every replay"
    )


def caller_line(step: object = None) -> int | None:
    """The line of the tenant's code that called into the runtime, if any: the nearest
    frame on the stack that is neither the runtime's own nor a method of `step` (a
    subclass elsewhere, as `stepwell replay` has, is not the tenant's code)."""
    frame = sys._getframe(1)
    while frame is not None:
        own = step is not None and frame.f_locals.get("self") is step
        if not own and not is_runtime_file(frame.f_code.co_filename):
            return frame.f_lineno
        frame = frame.f_back
    return None
