"""An activation's outcome, checked and made safe to record, in one pass.

The runtime is inside the jail, so its answer is untrusted input: whatever it holds
must become a clear step or instance error, never a value that aborts the record's
transaction (and so an activation retried forever). check_outcome refuses what
breaks the protocol (InvalidOutcome: the instance errors), turns what cannot be
stored into step errors, clamps what is merely large (as the runtime does, so that
instances recorded before a limit existed still replay) and escapes logs.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from execution.storable import INT4_MAX, escaped, json_problem, text_problem

OUTCOME_KINDS = {
    "step",
    "sleep",
    "wait",
    "start_workflow",
    "wait_workflow",
    "complete",
    "error",
    "nondeterminism",
}
STEP_KINDS = ("step", "sleep", "wait", "start_workflow", "wait_workflow")
BACKOFFS = ("constant", "linear", "exponential")
DEFAULT_RETRIES = {"limit": 3, "delay_seconds": 1.0, "backoff": "exponential"}
# As in the runtime (stepwell._arguments) and SDK.md.
MAX_RETRY_LIMIT = 100
MAX_RETRY_DELAY_SECONDS = 24 * 3600.0
MAX_WAIT_SECONDS = 366 * 24 * 3600.0
MAX_DURATION_MS = 7 * 24 * 3600 * 1000.0
MAX_NAME_CHARS = 200
MAX_KEY_CHARS = 100  # Instance.key


class InvalidOutcome(ValueError):
    pass


def check_outcome(outcome: Any) -> dict:
    """The outcome with only the fields the host reads, each checked; raises InvalidOutcome."""
    if not isinstance(outcome, dict) or outcome.get("kind") not in OUTCOME_KINDS:
        raise InvalidOutcome("the sandbox runtime answered with something that is not an outcome")
    kind = outcome["kind"]
    if kind == "complete":
        return checked_end(outcome.get("output"))
    if kind in ("error", "nondeterminism"):
        return {"kind": kind, "error": clean_error(outcome.get("error"))}
    checked = {"kind": kind, "index": step_index(outcome), "name": step_name(outcome)}
    if kind == "step":
        checked.update(checked_do(outcome, checked["name"]))
    elif kind == "sleep":
        checked["until"] = parse_time(outcome.get("until"))
        checked["shape"] = sleep_shape(outcome)
    elif kind == "wait":
        checked["event_type"] = text_field(outcome.get("event_type"), "event type")
        checked["timeout_seconds"] = seconds_of(outcome.get("timeout_seconds"))
        checked["shape"] = {"event_type": checked["event_type"]}
    elif kind == "wait_workflow":
        checked["instance_id"] = text_field(outcome.get("instance_id"), "awaited instance id")
        checked["timeout_seconds"] = seconds_of(outcome.get("timeout_seconds"))
        checked["shape"] = {"instance_id": checked["instance_id"]}
    else:
        checked.update(checked_start(outcome))
        checked["shape"] = {"workflow": checked["workflow"], "instance_id": checked["instance_id"]}
    return checked


def sleep_shape(outcome: dict) -> dict:
    """What the replay compares of a sleep (stepwell.replay): its duration, or for a
    sleep_until (no duration) the time as the runtime wrote it, checked by parse_time."""
    seconds = outcome.get("duration_seconds")
    if seconds is None:
        return {"until": outcome["until"]}
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidOutcome("the sleep's duration is not a number")
    if not math.isfinite(seconds):
        raise InvalidOutcome("the sleep's duration is not a finite number")
    return {"duration_seconds": seconds}


def step_index(outcome: dict) -> int:
    index = outcome.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= INT4_MAX:
        raise InvalidOutcome(f"the outcome's step index is not an integer from 0 to {INT4_MAX}")
    return index


def step_name(outcome: dict) -> str:
    name = outcome.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        raise InvalidOutcome("the outcome's step name is not a string of 1 to 200 characters")
    problem = text_problem(name)
    if problem is not None:
        raise InvalidOutcome(f"the outcome's step name holds {problem}, which cannot be stored")
    return name


def text_field(value: Any, what: str, limit: int = MAX_NAME_CHARS) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise InvalidOutcome(f"the outcome's {what} is not a string of 1 to {limit} characters")
    problem = text_problem(value)
    if problem is not None:
        raise InvalidOutcome(f"the outcome's {what} holds {problem}, which cannot be stored")
    return value


def checked_end(output: Any) -> dict:
    """run() returned: its output, or an error if the output cannot be stored."""
    problem = json_problem(output)
    if problem is None:
        return {"kind": "complete", "output": output}
    message = f"the workflow's output holds {problem}, which cannot be stored"
    return {"kind": "error", "error": {"type": "ResultNotStorable", "message": message}}


def checked_do(outcome: dict, name: str) -> dict:
    """A do step's attempt: what it returned or raised, its policy, logs and duration."""
    checked = {
        "retries": clean_retries(outcome.get("retries")),
        "timeout_seconds": optional_seconds(outcome.get("timeout_seconds")),
        "logs": escaped(outcome["logs"]) if isinstance(outcome.get("logs"), str) else "",
        "duration_ms": clamped(outcome.get("duration_ms"), 0.0, MAX_DURATION_MS, 0.0),
    }
    if outcome.get("status") == "complete":
        problem = json_problem(outcome.get("output"))
        if problem is None:
            checked.update(then_of(outcome))
            return {**checked, "status": "complete", "output": outcome.get("output")}
        error = {
            "type": "ResultNotStorable",
            "message": f"the result of step {name!r} holds {problem}, which cannot be stored",
        }
        return {**checked, "status": "failed", "error": error, "retryable": False}
    error = clean_error(outcome.get("error"))
    return {
        **checked,
        "status": "failed",
        "error": error,
        "retryable": bool(outcome.get("retryable")),
    }


def then_of(outcome: dict) -> dict:
    """A kept child's completed step may come with how run() ended right after it (the
    child ran ahead, stepwell/_step.py): `then`, a complete outcome checked as one, kept
    for the engine to record with the step. An error there is left out: the engine
    records the step alone, and the next activation meets that error again."""
    then = outcome.get("then")
    if then is None:
        return {}
    if not isinstance(then, dict) or then.get("kind") not in ("complete", "error"):
        raise InvalidOutcome("the outcome's 'then' is not how run() ended")
    return {"then": checked_end(then.get("output"))} if then["kind"] == "complete" else {}


def checked_start(outcome: dict) -> dict:
    """A child start; what cannot be started is kept as `refused`, a step error."""
    checked = {"workflow": text_field(outcome.get("workflow"), "workflow name"), "refused": None}
    payload = outcome.get("payload")
    payload = {} if payload is None else payload
    problem = json_problem(payload)
    if problem is not None:
        checked["refused"] = f"the payload holds {problem}, which cannot be stored"
    key = outcome.get("instance_id")
    if key is not None:
        key = text_field(key, "child instance id", MAX_NAME_CHARS)
        if len(key) > MAX_KEY_CHARS:
            checked["refused"] = f"instance_id is {len(key)} characters; the limit is 100"
    checked.update(payload=payload, instance_id=key)
    return checked


def child_key(parent_key: str, index: int, run: int = 1) -> str:
    """The id of a child started without one: the same on every replay, within 100 chars;
    a later run of the parent (a restart) starts new children (API.md)."""
    tail = f"{index}" if run <= 1 else f"r{run}-{index}"
    key = f"{parent_key}-{tail}"
    if len(key) <= MAX_KEY_CHARS:
        return key
    return f"{hashlib.sha256(parent_key.encode()).hexdigest()[:64]}-{tail}"


def clean_retries(retries: Any) -> dict:
    """The retry policy, clamped: limit 0 to 100, delay 0 s to 1 day."""
    if retries is None:
        return dict(DEFAULT_RETRIES)
    if not isinstance(retries, dict):
        raise InvalidOutcome("the outcome's retry policy is not an object")
    limit = number(retries.get("limit", DEFAULT_RETRIES["limit"]), "retry limit")
    delay = number(retries.get("delay_seconds", DEFAULT_RETRIES["delay_seconds"]), "retry delay")
    backoff = retries.get("backoff", DEFAULT_RETRIES["backoff"])
    if backoff not in BACKOFFS:
        raise InvalidOutcome(f"the outcome's retry backoff is not one of {', '.join(BACKOFFS)}")
    return {
        "limit": int(min(max(limit, 0), MAX_RETRY_LIMIT)),
        "delay_seconds": min(max(delay, 0.0), MAX_RETRY_DELAY_SECONDS),
        "backoff": backoff,
    }


def stored_retries(config: Any) -> dict:
    """The retry policy of a step row as stored (rows from before the clamp included)."""
    try:
        return clean_retries((config or {}).get("retries") if isinstance(config, dict) else None)
    except InvalidOutcome:
        return dict(DEFAULT_RETRIES)


def number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOutcome(f"the outcome's {what} is not a number")
    value = float(min(max(value, -1e300), 1e300)) if isinstance(value, int) else value
    if not math.isfinite(value):
        raise InvalidOutcome(f"the outcome's {what} is not a finite number")
    return value


def clamped(value: Any, low: float, high: float, default: float) -> float:
    try:
        return min(max(number(value, "number"), low), high)
    except InvalidOutcome:
        return default


def optional_seconds(value: Any) -> float | None:
    return None if value is None else min(max(number(value, "timeout"), 0.0), MAX_WAIT_SECONDS)


def seconds_of(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOutcome("a timeout in the outcome is not a number")
    if not 0 <= value <= MAX_WAIT_SECONDS:  # NaN fails this too
        raise InvalidOutcome("a timeout in the outcome is out of range")
    return float(value)


def parse_time(value: Any) -> datetime:
    """The sleep's wake time: aware, and within what a timestamp column holds."""
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidOutcome("the sleep's wake time is not an ISO 8601 time")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidOutcome("the sleep's wake time is not an ISO 8601 time") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidOutcome("the sleep's wake time has no time zone")
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise InvalidOutcome("the sleep's wake time is out of range") from None


def clean_error(error: Any) -> dict:
    """The error as it is stored: bounded, storable; a report that cannot be stored is
    replaced by one that says so."""
    if not isinstance(error, dict):
        return {"type": "Error", "message": "the step failed without an error description"}
    clean = {
        "type": str(error.get("type") or "Error")[:200],
        "message": str(error.get("message") or "")[:4000],
    }
    if error.get("traceback"):
        clean["traceback"] = str(error["traceback"])[:16000]
    for key in ("index", "recorded", "new"):
        if key in error:
            clean[key] = error[key]
    line = error.get("line")
    if isinstance(line, int) and not isinstance(line, bool) and 0 < line <= INT4_MAX:
        clean["line"] = line
    problem = json_problem(clean)
    if problem is None:
        return clean
    return {
        "type": "ErrorNotStorable",
        "message": f"the error reported holds {problem}, which cannot be stored",
    }


def json_size(value: Any) -> int:
    try:
        return len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        return 2**62


def duration(outcome: dict) -> timedelta:
    return timedelta(milliseconds=outcome.get("duration_ms") or 0.0)
