"""What PostgreSQL can store, checked on values that came out of a jail.

PostgreSQL refuses a NUL character in text and in JSON, and a string holding a lone
surrogate cannot even be encoded to send; a float that is not finite has no JSON form.
Such a value in an outcome used to abort the transaction that records it, and the
activation was retried forever. These checks find them first, at C speed and in
linear time: json's encoder writes the value once, and the text is searched.
"""

from __future__ import annotations

import json
from typing import Any

INT4_MAX = 2**31 - 1


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
    try:
        # Not ASCII-escaped, so that a lone surrogate stays one; a NUL is escaped always.
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except RecursionError:
        return "nesting too deep"
    except ValueError as exc:
        return "a circular reference" if "ircular" in str(exc) else "a number that is not finite"
    except TypeError as exc:
        return f"a value that is not JSON ({exc})"
    return text_problem(text) if "\\u0000" not in text else json_text_problem(text)


def json_text_problem(text: str) -> str | None:
    """text_problem for JSON text that holds '\\u0000': a NUL if the backslash before it
    is not itself escaped (an even number of backslashes before the match). Linear:
    the backslashes counted before one match lie after the previous match."""
    at = text.find("\\u0000")
    while at != -1:
        start = at
        while start > 0 and text[start - 1] == "\\":
            start -= 1
        if (at - start) % 2 == 0:
            return "a NUL character (\\u0000)"
        at = text.find("\\u0000", at + 6)
    return text_problem(text)


def escaped(text: str) -> str:
    """`text` with what cannot be stored written as escapes, for text that is only read
    (logs): a NUL as \\u0000, a lone surrogate as \\udxxx."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
