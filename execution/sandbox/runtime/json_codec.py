"""JSON without the json package, on its C core.

`import json` pulls in re, enum and more: about 10 ms of every fresh sandbox's start
on these machines, more than the rest of the runtime. The C scanner and encoder that
json itself uses need none of that. Errors read as json's do; an interpreter whose
_json lacks these entry points gets the json package instead.
"""

import _json

_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Options:
    """What _json's scanner reads off json.JSONDecoder: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo = None


def _refuse(value):
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encoder(ensure_ascii):
    # A fresh markers dict each time: the encoder finds circular references with it,
    # and an error half way through would leave it dirty.
    encode = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
    return _json.make_encoder({}, _refuse, encode, None, ":", ",", False, False, False)


try:
    _scan = _json.make_scanner(_Options())
    _encoder(True)
except (AttributeError, TypeError):  # pragma: no cover - another interpreter's _json
    _scan = None


def loads(data):
    """json.loads(data) for a str or UTF-8 bytes."""
    if _scan is None:
        import json

        return json.loads(data)
    text = data.decode() if isinstance(data, (bytes, bytearray)) else data
    text = text.strip(" \t\n\r")
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("Expecting value: the document is empty or not JSON") from None
    if end != len(text):
        raise ValueError(f"Extra data after the JSON value, at character {end}")
    return value


def dumps(value, ensure_ascii=True):
    """json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=...)."""
    if _scan is None:
        import json

        return json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=ensure_ascii)
    return "".join(_encoder(ensure_ascii)(value, 0))
