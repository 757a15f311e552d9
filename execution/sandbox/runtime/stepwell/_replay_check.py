"""Whether a call made on replay is the step that was recorded: its name, its kind and
what shapes it (SDK.md, "Non-determinism is detected on ..."). Pure functions on plain
dicts, so that anything holding a history compares the same way: `stepwell replay`
uses it on a downloaded history.

A step is `{"name", "kind", "shape"}`; shapes by kind:

    do                 {}
    sleep              {"duration_seconds": float}    step.sleep
                       {"until": ISO 8601 string}     step.sleep_until
    wait_for_event     {"event_type": str}
    start_workflow     {"workflow": str, "instance_id": str or None}
    wait_for_workflow  {"instance_id": str}

Only what the recorded step's shape holds is compared, so a step recorded without a
shape (before the second release) compares on its name and kind alone.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


def difference(recorded: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """None if `new` replays `recorded`, else the first field that differs:
    `{"field", "recorded", "new"}`."""
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
    """`'pause' (sleep, duration_seconds 5.0)`: a step as a divergence names it."""
    if step.get("name") is None:
        return "nothing"
    shape = step.get("shape") or {}
    details = "".join(f", {field} {value!r}" for field, value in shape.items())
    return f"{step.get('name')!r} ({step.get('kind')}{details})"
