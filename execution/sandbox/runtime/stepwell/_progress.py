"""Progress notes the runtime sends to the host before the final outcome.

The one note so far is the intent to run a do step: if the jail is then killed
(memory, CPU, a signal), the host still knows which step's attempt failed.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs an import on every step
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_sink: Callable[[dict], None] | None = None


def set_sink(sink: Callable[[dict], None] | None) -> None:
    global _sink
    _sink = sink


def announce(note: dict[str, Any]) -> None:
    if _sink is None:
        return
    try:  # noqa: SIM105 - a note that cannot be sent must not fail the step
        _sink(note)
    except Exception:
        pass
