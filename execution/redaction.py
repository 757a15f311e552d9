"""Secrets' values taken out of everything a jail sends back, before anything is stored.

The engine hands an activation the tenant's secrets (`event.secrets`) and passes what
comes back (the result with its outcome, stdout, stderr, the error, the progress notes)
through Redactor first, at the one place a SandboxResult enters the engine
(engine.execute and its progress callback). Every string inside, dict keys included,
has each value replaced by ``[secret:NAME]`` (API.md, Secrets), so no step name,
result, log, error, traceback, child payload or progress event holds one, and a step
that returned a secret gets ``[secret:NAME]`` back on replay.

It is linear: each value is searched for with str.find (CPython's fast search, linear
in the text), so a text costs O(len(text) x number of secrets), and the secrets per
tenant are capped. Where two values overlap, the union of their spans is replaced, so
no part of either survives; the longer value names the marker.

A value cut by a size cap before it got here (the jail's output cap, the runtime's log
cap) may leave its first characters behind: redaction keeps secrets out of what the
platform stores by accident, it does not stop tenant code that means to leak its own
secrets (it could print them reversed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from execution.sandbox import SandboxResult


class Redactor:
    """Replaces each secret's value with ``[secret:NAME]`` inside strings and JSON values."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        pairs = [(value, f"[secret:{name}]") for name, value in secrets.items() if value]
        # Longest first: where values start at one place, the longer one's span wins.
        self.pairs = sorted(pairs, key=lambda pair: -len(pair[0]))

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def text(self, text: str) -> str:
        spans = []
        for value, marker in self.pairs:
            at = text.find(value)
            while at != -1:
                spans.append((at, at + len(value), marker))
                at = text.find(value, at + len(value))
        if not spans:
            return text
        spans.sort(key=lambda span: (span[0], -span[1]))
        parts, done = [], 0
        for start, end, marker in spans:
            if end <= done:
                continue  # inside a span replaced already
            if start < done:
                done = end  # overlaps the last one: the marker there covers it too
                continue
            parts += [text[done:start], marker]
            done = end
        parts.append(text[done:])
        return "".join(parts)

    def value(self, value: Any) -> Any:
        """A JSON value with every string in it (keys too) redacted. Recursive: values
        from a jail are nested at most protocol.MAX_DEPTH deep."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                (self.text(k) if isinstance(k, str) else k): self.value(v) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value

    def result(self, result: SandboxResult) -> SandboxResult:
        if not self:
            return result
        return dataclasses.replace(
            result,
            result=self.value(result.result),
            error=self.value(result.error),
            stdout=self.text(result.stdout),
            stderr=self.text(result.stderr),
            progress=tuple(self.value(note) for note in result.progress),
        )
