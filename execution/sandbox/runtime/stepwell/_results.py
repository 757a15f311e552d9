"""Values that leave the sandbox: JSON only, within the tenant's size limit."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ResultError(Exception):
    """A value cannot be recorded; `type` names the reason for the host and the tenant."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(message)
        self.type = type


def as_json(value: Any, limit: int, what: str) -> Any:
    """`value` as it will read back from the record, or ResultError.

    Size is counted as compact UTF-8 JSON. Returning the round-tripped value
    means a step's first run sees exactly what every replay will see.
    """
    from json_codec import dumps, loads  # loaded by boot.py already

    try:
        text = dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ResultError(
            "ResultNotSerializable", f"{what} is not JSON-serialisable: {exc}"
        ) from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ResultError(
            "ResultNotStorable",
            f"{what} holds a lone surrogate ({exc.object[exc.start]!a}), which cannot be stored",
        ) from None
    if _holds_nul(text):
        raise ResultError(
            "ResultNotStorable", f"{what} holds a NUL character (\\u0000), which cannot be stored"
        )
    if size > limit:
        raise ResultError(
            "ResultTooLarge", f"{what} is {size} bytes of JSON, over the limit of {limit} bytes"
        )
    return loads(text)


def _holds_nul(text: str) -> bool:
    """Whether JSON text holds an escaped NUL: a \\u0000 after an even number of
    backslashes (after an odd number it is a backslash, then 'u0000'). Linear: the
    backslashes counted before one match lie after the previous one."""
    at = text.find("\\u0000")
    while at != -1:
        start = at
        while start > 0 and text[start - 1] == "\\":
            start -= 1
        if (at - start) % 2 == 0:
            return True
        at = text.find("\\u0000", at + 6)
    return False
