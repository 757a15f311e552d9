"""Durations and instants, as tenant code writes them."""

from __future__ import annotations

import math

try:  # the C module behind datetime: datetime.py first builds a pure-Python copy (~2 ms)
    from _datetime import UTC, datetime, timedelta
except ImportError:  # an interpreter without the C accelerator
    from datetime import UTC, datetime, timedelta

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_SECONDS_PER_UNIT = {
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 0.001),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
    **dict.fromkeys(("w", "week", "weeks"), 604800.0),
}
_SPACE = " \t\n\r\f\v"
_DIGITS = "0123456789"
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_EXAMPLES = "'30 seconds', '5 minutes', '2 hours' or '1 day'"


def parse_duration(value: Any, what: str = "duration") -> float:
    """Seconds (>= 0) from a number, a timedelta or a string such as '5 minutes'."""
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta | str):
        raise TypeError(
            f"{what} must be a number of seconds, a timedelta or a string such as "
            f"{_EXAMPLES}, not {value!r}"
        )
    if isinstance(value, str):
        seconds = _parse_text(value, what)
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        seconds = _to_float(value, what)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite number of seconds, zero or more, not {value!r}")
    return seconds


def _parse_text(text: str, what: str) -> float:
    parts = _number_and_unit(text)
    unit = parts and _SECONDS_PER_UNIT.get(parts[1].lower())
    if not unit:
        raise ValueError(f"{what} {text!r} is not a duration: write for example {_EXAMPLES}")
    return float(parts[0]) * unit


def _number_and_unit(text: str) -> tuple[str, str] | None:
    """("1.5", "hours") from " 1.5 hours ", or None: ASCII digits with an optional
    fraction (or only a fraction), optional spaces, ASCII letters. Written out because
    importing re costs a fresh sandbox about 5 ms, and the default retry delay is text."""
    s = text.strip(_SPACE)
    end = 0
    while end < len(s) and s[end] in _DIGITS:
        end += 1
    whole = end > 0
    if end < len(s) and s[end] == ".":
        start = end = end + 1
        while end < len(s) and s[end] in _DIGITS:
            end += 1
        if end == start:
            return None
    elif not whole:
        return None
    unit = s[end:].lstrip(_SPACE)
    if not unit or any(c not in _LETTERS for c in unit):
        return None
    return s[:end], unit


def _to_float(number: int | float, what: str) -> float:
    try:
        return float(number)
    except OverflowError:
        raise ValueError(f"{what} {number!r} is too large") from None


def parse_instant(when: Any, what: str = "time") -> datetime:
    """An aware UTC datetime from an aware datetime, an ISO 8601 string or a Unix timestamp."""
    if isinstance(when, datetime):
        moment = when
    elif isinstance(when, str):
        moment = parse_iso(when, what)
    elif isinstance(when, int | float) and not isinstance(when, bool):
        moment = _from_timestamp(when, what)
    else:
        raise TypeError(
            f"{what} must be an aware datetime, an ISO 8601 string or a Unix timestamp, "
            f"not {when!r}"
        )
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} {when!r} has no time zone: give an aware time, e.g. with 'Z'")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{what} {when!r} is out of range in UTC") from None


def parse_iso(text: str, what: str = "time") -> datetime:
    """A datetime from ISO 8601 text ('Z' accepted); may be naive, callers check."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an ISO 8601 date and time") from None


def _from_timestamp(seconds: float, what: str) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{what} {seconds!r} is not a usable Unix timestamp") from None


def after(moment: datetime, seconds: float, what: str = "duration") -> datetime:
    """`moment` plus `seconds`, with a clear error instead of an overflow."""
    try:
        return moment + timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{what} of {seconds:g} seconds reaches past the year 9999") from None


def format_instant(moment: datetime) -> str:
    """ISO 8601 in UTC with an explicit offset, e.g. '2025-01-01T12:00:00+00:00'."""
    return moment.astimezone(UTC).isoformat()
