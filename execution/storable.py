"""What PostgreSQL can store, checked on values that came out of a jail.

PostgreSQL refuses a NUL character in text and in JSON, and a string holding a lone
surrogate cannot even be encoded to send; a float that is not finite has no JSON form.
Such a value in an outcome used to abort the transaction that records it, and the
activation was retried forever. These checks find them first, in one pass over the
value: a loop over an explicit stack, so the cost is linear in the value's size and
no nesting reaches Python's recursion limit.
"""

from __future__ import annotations

import math
from typing import Any

INT4_MAX = 2**31 - 1
# Deeper than any JSON the result channel lets through (sandbox.protocol.MAX_DEPTH).
MAX_DEPTH = 1000


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored, or None."""
    if "\x00" in text:
        return "a NUL character (\\u0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"a lone surrogate ({exc.object[exc.start]!a})"
    return None


def json_problem(value: Any) -> str | None:
    """Why the JSON value `value` cannot be stored, or None."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
        elif isinstance(item, dict):
            problem = too_deep(depth)
            for key, inner in item.items():
                if not isinstance(key, str):
                    return "a key that is not a string"
                stack.append((key, depth + 1))
                stack.append((inner, depth + 1))
        elif isinstance(item, list):
            problem = too_deep(depth)
            stack.extend((inner, depth + 1) for inner in item)
        elif isinstance(item, float):
            problem = None if math.isfinite(item) else f"a number that is not finite ({item})"
        elif item is None or isinstance(item, bool | int):
            problem = None
        else:
            problem = f"a value that is not JSON ({type(item).__name__})"
        if problem is not None:
            return problem
    return None


def too_deep(depth: int) -> str | None:
    return f"nesting deeper than {MAX_DEPTH} levels" if depth >= MAX_DEPTH else None


def escaped(text: str) -> str:
    """`text` with what cannot be stored written as escapes, for text that is only read
    (logs): a NUL as \\u0000, a lone surrogate as \\udxxx."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
