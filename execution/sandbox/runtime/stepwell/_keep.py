"""Sticky execution: a warm jail may keep an activation's process alive after a do step.

Only a warm jail's child sets a pause function (zygote.py); everywhere else the runtime
runs one new step per activation, as it always has. With one set, a completed do step's
outcome is sent like any activation's at the next step call (run() runs ahead to it,
stepwell/_step.py), and the process waits there instead of exiting: the host records
the step, then either ends the process or hands it the step's result as recorded and
the time of the next activation. The workflow then goes on from where it stands,
without replaying its history; what it sees is what a replay would have seen (the host
ends the process instead when redaction changed the result it ran ahead with).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_pause: Callable[[dict], tuple[Any, str]] | None = None


def set_pause(pause: Callable[[dict], tuple[Any, str]] | None) -> None:
    global _pause
    _pause = pause


def keeping() -> bool:
    return _pause is not None


def pause(outcome: dict[str, Any]) -> tuple[Any, str]:
    """Send `outcome` and wait: (the step's recorded output, the next activation's 'now').

    Never returns when the host ends the process instead."""
    if _pause is None:
        raise RuntimeError("this process is not kept between steps")
    return _pause(outcome)
