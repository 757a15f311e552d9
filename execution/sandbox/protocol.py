"""The host's side of the result channel: size-capped, depth-capped, schema-checked JSON.

The jail writes one JSON document to fd 3: ``{"ok": true, "result": value}`` or
``{"ok": false, "error": {"type", "message", "traceback"}}``. Tenant code can write
anything there, so nothing here trusts it beyond that schema. Never pickle.
"""

import json
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 100
MAX_ERROR_FIELD = 64 * 1024
NOTE_PREFIX = b'{"progress":'


class ProtocolError(ValueError):
    """The result channel held something other than one valid result document."""


def nesting_depth(value: Any, limit: int | None = None) -> int:
    """How deeply a parsed JSON value nests lists and objects (a scalar is 0).

    Level by level, without recursion, each container looked at once; stops counting
    past `limit`. Measured on the parsed value, because scanning the raw bytes for
    brackets outside strings cost time quadratic in an unterminated string.
    """
    depth = 0
    level = [value]
    while level and (limit is None or depth <= limit):
        level = [v for v in level if isinstance(v, list | dict)]
        if not level:
            break
        depth += 1
        level = [child for v in level for child in (v.values() if isinstance(v, dict) else v)]
    return depth


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"the result holds {name}, which is not JSON")


# Made once: json.loads with any keyword argument builds a decoder and its scanner per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse untrusted JSON with a nesting cap; raise ProtocolError on anything else.

    The C parser reads the bytes in one pass; it gives up on nesting deeper than the
    interpreter's recursion limit with RecursionError, and the parsed value is measured
    against max_depth.
    """
    too_deep = ProtocolError(f"the result is nested deeper than {max_depth} levels")
    try:
        value = _DECODER.decode(data.decode("utf-8"))
    except ProtocolError:
        raise
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError too
        raise ProtocolError(f"the result is not valid JSON ({exc.__class__.__name__})") from None
    # Nesting needs an opening bracket per level: most documents have too few to measure.
    brackets = data.count(b"[") + data.count(b"{")
    if brackets > max_depth and nesting_depth(value, max_depth) > max_depth:
        raise too_deep
    return value


def dumps_job(mode: str, value: Any, secrets: Mapping[str, str] | None = None) -> bytes:
    """The job document written to the jail's stdin, with the secrets if any are given."""
    job = {"mode": mode, "input": value}
    if secrets:
        job["secrets"] = dict(secrets)
    return json.dumps(job, allow_nan=False).encode()


def dumps_following(output: Any, now: str) -> bytes:
    """What a kept child goes on with (warm mode's sticky execution): the step's result as
    recorded, and the next activation's time."""
    return json.dumps({"output": output, "now": now}, allow_nan=False).encode()


def dumps_secrets(secrets: Mapping[str, str]) -> bytes:
    """The secrets as a warm jail's child reads them from their own descriptor."""
    return json.dumps(dict(secrets)).encode()


MAX_PROGRESS_NOTES = 16


def split_channel(data: bytes) -> tuple[list[dict], bytes]:
    """The progress notes, and what follows them (the final document, if any).

    Progress notes are lines ``{"progress": {...}}`` written before the final
    document; anything that is not one ends the notes. Each byte is looked at a
    bounded number of times: at most MAX_PROGRESS_NOTES lines are parsed.
    """
    notes: list[dict] = []
    start = 0
    while len(notes) < MAX_PROGRESS_NOTES and data.startswith(NOTE_PREFIX, start):
        end = data.find(b"\n", start)
        if end < 0:
            break
        note = _note(data[start:end])
        if note is None:
            break
        notes.append(note)
        start = end + 1
    return notes, data[start:]


def _note(line: bytes) -> dict | None:
    try:
        doc = loads(line)
    except ProtocolError:
        return None
    if isinstance(doc, dict) and set(doc) == {"progress"} and isinstance(doc["progress"], dict):
        return doc["progress"]
    return None


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

    Fed the result channel's bytes so far each time more arrive (a byte at a time,
    if the jail likes); each byte is scanned once for the end of its line, and a
    line that does not start like a note ends the watching as soon as that shows.
    The first line that is not a note (the final document) ends the watching. The
    callback's errors are its own.
    """

    def __init__(self, callback) -> None:
        self.callback = callback
        self.offset = 0  # where the current line starts
        self.scanned = 0  # how far the current line is known to hold no newline
        self.seen = 0
        self.done = False

    def feed(self, data: bytes | bytearray) -> None:
        while not self.done:
            end = data.find(b"\n", max(self.offset, self.scanned))
            if end < 0:
                self.scanned = len(data)
                head = bytes(data[self.offset : self.offset + len(NOTE_PREFIX)])
                if not NOTE_PREFIX.startswith(head):
                    self.done = True
                return
            line = bytes(data[self.offset : end])
            self.offset = self.scanned = end + 1
            note = _note(line) if line.startswith(NOTE_PREFIX) else None
            if note is None or self.seen >= MAX_PROGRESS_NOTES:
                self.done = True
                return
            self.seen += 1
            self.callback(note)
