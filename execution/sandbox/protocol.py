"""The host's side of the result channel: size-capped, depth-capped, schema-checked JSON.

The jail writes one JSON document to fd 3: ``{"ok": true, "result": value}`` or
``{"ok": false, "error": {"type", "message", "traceback"}}``. Tenant code can write
anything there, so nothing here trusts it beyond that schema. Never pickle.
"""

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 100
MAX_ERROR_FIELD = 64 * 1024

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class ProtocolError(ValueError):
    """The result channel held something other than one valid result document."""


def nesting_depth(data: bytes) -> int:
    """The deepest bracket nesting outside strings, without recursion."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(accumulate(_DEPTH_STEP[b] for b in brackets))


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"the result holds {name}, which is not JSON")


def loads(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse untrusted JSON with a nesting cap; raise ProtocolError on anything else."""
    if nesting_depth(data) > max_depth:
        raise ProtocolError(f"the result is nested deeper than {max_depth} levels")
    try:
        text = data.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError too
        raise ProtocolError(f"the result is not valid JSON ({exc.__class__.__name__})") from None


def dumps_job(mode: str, value: Any) -> bytes:
    """The job document written to the jail's stdin."""
    return json.dumps({"mode": mode, "input": value}, allow_nan=False).encode()


MAX_PROGRESS_NOTES = 16


def split_channel(data: bytes) -> tuple[list[dict], bytes]:
    """The progress notes, and what follows them (the final document, if any).

    Progress notes are lines ``{"progress": {...}}`` written before the final
    document; anything that is not one ends the notes.
    """
    notes: list[dict] = []
    rest = data
    while rest and len(notes) < MAX_PROGRESS_NOTES:
        line, sep, tail = rest.partition(b"\n")
        if not sep or not line.startswith(b'{"progress":'):
            break
        try:
            doc = loads(line)
        except ProtocolError:
            break
        if not (
            isinstance(doc, dict) and set(doc) == {"progress"} and isinstance(doc["progress"], dict)
        ):
            break
        notes.append(doc["progress"])
        rest = tail
    return notes, rest


def parse_result(data: bytes) -> tuple[bool, Any]:
    """(True, value) or (False, error dict) from the result channel's bytes."""
    _, data = split_channel(data)
    if not data.strip():
        raise ProtocolError("the result channel is empty")
    doc = loads(data)
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
        raise ProtocolError('the result is not an object with a boolean "ok"')
    if doc["ok"]:
        if set(doc) != {"ok", "result"}:
            raise ProtocolError('an ok result must hold exactly "ok" and "result"')
        return True, doc["result"]
    if set(doc) != {"ok", "error"}:
        raise ProtocolError('an error result must hold exactly "ok" and "error"')
    return False, _clean_error(doc["error"])


def _clean_error(error: Any) -> dict:
    if not isinstance(error, dict):
        raise ProtocolError('the result\'s "error" is not an object')
    if not isinstance(error.get("type"), str) or not isinstance(error.get("message"), str):
        raise ProtocolError('the result\'s "error" needs string "type" and "message"')
    if not set(error) <= {"type", "message", "traceback"}:
        raise ProtocolError('the result\'s "error" has unexpected keys')
    if "traceback" in error and not isinstance(error["traceback"], str):
        raise ProtocolError('the result\'s "error.traceback" is not a string')
    return {key: value[:MAX_ERROR_FIELD] for key, value in error.items()}


class NoteWatcher:
    """Hands each progress note to a callback as soon as its line is complete.

    Fed the result channel's bytes as they arrive; the first line that is not a
    note (the final document) ends the watching. The callback's errors are its own.
    """

    def __init__(self, callback) -> None:
        self.callback = callback
        self.offset = 0
        self.seen = 0
        self.done = False

    def feed(self, data: bytes | bytearray) -> None:
        while not self.done:
            end = data.find(b"\n", self.offset)
            if end < 0:
                return
            line = bytes(data[self.offset : end])
            self.offset = end + 1
            notes, rest = split_channel(line + b"\n")
            if not notes or rest or self.seen >= MAX_PROGRESS_NOTES:
                self.done = True
                return
            self.seen += 1
            self.callback(notes[0])
