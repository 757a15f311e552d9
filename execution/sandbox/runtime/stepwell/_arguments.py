"""Checks of what tenant code passes to `step.*`, with errors that say what to fix."""

from __future__ import annotations

from ._durations import parse_duration

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_NAME_CHARS = 200
# Larger values are clamped, not refused, so that instances recorded with them replay
# (SDK.md); the host clamps them the same way (execution.outcome_checks).
MAX_RETRY_LIMIT = 100
MAX_RETRY_DELAY_SECONDS = 24 * 3600.0
# A wait's timeout; the host refuses a longer one.
MAX_WAIT_SECONDS = 366 * 24 * 3600.0
BACKOFFS = ("constant", "linear", "exponential")
DEFAULT_RETRIES = {"limit": 3, "delay": "1 second", "backoff": "exponential"}


def check_text(value: Any, what: str) -> str:
    """A non-blank string of at most 200 characters (step names, event types, ids)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {value!r}")
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    if len(value) > MAX_NAME_CHARS:
        raise ValueError(f"{what} is {len(value)} characters long; the limit is {MAX_NAME_CHARS}")
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {value!a} holds {problem}, which cannot be stored")
    return value


def text_problem(text: str) -> str | None:
    """Why the database cannot store `text`, or None."""
    if "\x00" in text:
        return "a NUL character (\\u0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"a lone surrogate ({exc.object[exc.start]!a})"
    return None


def parse_retries(retries: Any) -> dict[str, Any]:
    """The retry policy as the host reads it: limit, delay_seconds, backoff."""
    if retries is None:
        retries = {}
    if not isinstance(retries, dict):
        raise TypeError(f"retries must be a dict like {DEFAULT_RETRIES!r}, not {retries!r}")
    unknown = sorted(map(repr, set(retries) - set(DEFAULT_RETRIES)))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)} in retries: use limit, delay and backoff"
        )
    policy = {**DEFAULT_RETRIES, **retries}
    delay = parse_duration(policy["delay"], "retries delay")
    return {
        "limit": min(_retry_limit(policy["limit"]), MAX_RETRY_LIMIT),
        "delay_seconds": min(delay, MAX_RETRY_DELAY_SECONDS),
        "backoff": _backoff(policy["backoff"]),
    }


def _retry_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"retries limit must be a whole number, not {limit!r}")
    if limit < 0:
        raise ValueError(f"retries limit must be zero or more, not {limit!r}")
    return limit


def _backoff(backoff: Any) -> str:
    if backoff not in BACKOFFS:
        raise ValueError(f"retries backoff must be one of {', '.join(BACKOFFS)}, not {backoff!r}")
    return backoff


def wait_timeout(timeout: Any, what: str) -> float:
    """Seconds a wait may last: at most 366 days."""
    seconds = parse_duration(timeout, what)
    if seconds > MAX_WAIT_SECONDS:
        raise ValueError(f"{what} of {seconds:g} seconds is longer than 366 days")
    return seconds


def attempt_timeout(timeout: Any, limit: float) -> float:
    """Seconds one attempt may run: the tenant's choice, never past the tenant's quota."""
    if timeout is None:
        return limit
    seconds = parse_duration(timeout, "step timeout")
    if seconds <= 0:
        raise ValueError(f"step timeout must be more than zero, not {timeout!r}")
    return min(seconds, limit)
