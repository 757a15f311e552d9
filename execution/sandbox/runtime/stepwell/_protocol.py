"""The activation input the host sends, parsed and checked."""

from __future__ import annotations

from ._durations import parse_iso

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

STEP_KINDS = ("do", "sleep", "wait_for_event", "start_workflow", "wait_for_workflow")
STATUSES = ("complete", "errored", "timed_out", "failed", "running")


class ProtocolError(Exception):
    """The host's input breaks the activation protocol (a host bug, not the tenant's)."""


# Plain classes rather than dataclasses, which import inspect, ast and re. Read-only by
# convention: nothing changes them once parsed.


class Limits:
    __slots__ = ("log_bytes", "result_bytes", "step_timeout_seconds")

    def __init__(self, *, result_bytes: int, log_bytes: int, step_timeout_seconds: float) -> None:
        self.result_bytes = result_bytes
        self.log_bytes = log_bytes
        self.step_timeout_seconds = step_timeout_seconds


class Record:
    """One recorded step of the instance's history."""

    __slots__ = ("attempts", "error", "index", "kind", "name", "output", "shape", "status")

    def __init__(
        self,
        *,
        index: int,
        name: str,
        kind: str,
        status: str,
        attempts: int,
        output: Any,
        error: dict | None,
        shape: dict | None = None,
    ) -> None:
        self.index = index
        self.name = name
        self.kind = kind
        self.status = status
        self.attempts = attempts
        self.output = output
        self.error = error
        self.shape = shape

    def as_step(self) -> dict[str, Any]:
        """What stepwell.replay.compare reads of it."""
        return {"name": self.name, "kind": self.kind, "shape": self.shape}


class ActivationInput:
    """The host's input to one activation, parsed: what a replay of run() starts from."""

    __slots__ = ("history", "instance_id", "limits", "now", "payload", "timestamp")

    def __init__(
        self,
        *,
        instance_id: str,
        payload: Any,
        timestamp: str,
        now: datetime,
        history: list[Record],
        limits: Limits,
    ) -> None:
        self.instance_id = instance_id
        self.payload = payload
        self.timestamp = timestamp
        self.now = now
        self.history = history
        self.limits = limits


def parse_activation(data: Any) -> ActivationInput:
    data = _check(data, "the activation input", dict)
    now = parse_now(_field(data, "now", "input", str))
    history = _field(data, "history", "input", list)
    return ActivationInput(
        instance_id=_field(data, "instance_id", "input", str),
        payload=data.get("payload"),
        timestamp=_field(data, "timestamp", "input", str),
        now=now,
        history=[_record(position, entry) for position, entry in enumerate(history)],
        limits=_limits(_field(data, "limits", "input", dict)),
    )


def _record(position: int, entry: Any) -> Record:
    where = f"history[{position}]"
    entry = _check(entry, where, dict)
    if _field(entry, "index", where, int) != position:
        raise ProtocolError(f"{where} has index {entry['index']!r}: history must count from 0")
    kind = _choice(entry, "kind", where, STEP_KINDS)
    status = _choice(entry, "status", where, STATUSES)
    error = entry.get("error")
    if error is not None and not isinstance(error, dict):
        raise ProtocolError(f"{where} 'error' must be an object or null, not {error!r}")
    shape = entry.get("shape")
    if shape is not None and not isinstance(shape, dict):
        raise ProtocolError(f"{where} 'shape' must be an object or null, not {shape!r:.200}")
    return Record(
        index=position,
        name=_field(entry, "name", where, str),
        kind=kind,
        status=status,
        attempts=entry.get("attempts", 0),
        output=entry.get("output"),
        error=error,
        shape=shape,
    )


def _limits(limits: dict) -> Limits:
    parsed = Limits(
        result_bytes=_field(limits, "result_bytes", "limits", int),
        log_bytes=_field(limits, "log_bytes", "limits", int),
        step_timeout_seconds=float(_field(limits, "step_timeout_seconds", "limits", int | float)),
    )
    if min(parsed.result_bytes, parsed.log_bytes, parsed.step_timeout_seconds) <= 0:
        raise ProtocolError(f"limits must all be positive, not {limits!r}")
    return parsed


def parse_now(text: Any) -> datetime:
    """The host's 'now': ISO 8601 with a time zone, else ProtocolError."""
    if not isinstance(text, str):
        raise ProtocolError(f"input 'now' is not a string: {text!r:.100}")
    try:
        now = parse_iso(text, "input 'now'")
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None
    if now.tzinfo is None:
        raise ProtocolError(f"input 'now' {text!r} has no time zone")
    return now


def _field(data: dict, key: str, where: str, kind: Any) -> Any:
    return _check(data.get(key), f"{where} {key!r}", kind)


def _check(value: Any, what: str, kind: Any) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProtocolError(f"{what} is missing or not a {_kind_name(kind)}: {value!r:.200}")
    return value


def _choice(data: dict, key: str, where: str, choices: tuple[str, ...]) -> str:
    value = data.get(key)
    if value not in choices:
        raise ProtocolError(f"{where} {key!r} is {value!r}, not one of {', '.join(choices)}")
    return value


def _kind_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind)
