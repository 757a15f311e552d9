"""Line diffs between two code versions, for the version history page."""

from __future__ import annotations

import difflib


def diff_lines(old: str, new: str, old_name: str, new_name: str) -> list[tuple[str, str]]:
    """A unified diff as (kind, line) pairs; kind is add, del, hunk, meta or ctx."""
    lines = difflib.unified_diff(
        old.splitlines(), new.splitlines(), old_name, new_name, lineterm="", n=3
    )
    # Only the first two lines are the file headers: a removed "-- x" also starts "---".
    return [("meta" if i < 2 else _kind(line), line) for i, line in enumerate(lines)]


def _kind(line: str) -> str:
    if line.startswith("@@"):
        return "hunk"
    return {"+": "add", "-": "del"}.get(line[:1], "ctx")
