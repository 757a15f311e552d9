"""One attempt of a `step.do` function: captured output, a time limit, a checked result."""

from __future__ import annotations

import time

from ._capture import CappedLog, StepTimeout, capture_output, stop_for_output, time_limit
from ._errors import NonRetryableError
from ._results import ResultError, as_json
from ._tracebacks import describe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ._protocol import Limits


class Attempt:
    __slots__ = ("duration_ms", "error", "logs", "output", "retryable")

    def __init__(self) -> None:
        self.output: Any = None
        self.error: dict[str, str] | None = None
        self.retryable = True
        self.logs = ""
        self.duration_ms = 0.0


def run_attempt(fn: Callable[[], Any], name: str, timeout: float, limits: Limits) -> Attempt:
    attempt = Attempt()
    log = CappedLog(limits.log_bytes, stop_for_output)
    started = time.perf_counter()
    try:
        # time_limit innermost, so the alarm is disarmed before anything else unwinds.
        with capture_output(log), time_limit(timeout) as timer:
            value = fn()
        if timer.fired:  # the function caught StepTimeout and carried on
            raise StepTimeout(timeout)
        attempt.output = as_json(value, limits.result_bytes, f"the result of step {name!r}")
    except ResultError as exc:
        attempt.error = {"type": exc.type, "message": str(exc), "traceback": ""}
        attempt.retryable = False
    except BaseException as exc:  # whatever the tenant raised, SystemExit included
        attempt.error = describe(exc)
        attempt.retryable = not isinstance(exc, NonRetryableError)
    attempt.duration_ms = (time.perf_counter() - started) * 1000
    attempt.logs = log.getvalue()
    return attempt
