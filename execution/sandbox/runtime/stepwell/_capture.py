"""What a step function may print, and how long it may run."""

from __future__ import annotations

import _signal  # signal's C core, always loaded: signal.py adds enums that take ~0.5 ms to build
import io
import sys
from os import _exit, write  # bound here: tenant code that replaces os's does not reach them

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# The exit code of a process whose step printed more than its cap; the host reports
# "output too large" for it (execution/sandbox/outcome.py holds the same number).
OUTPUT_CAP_EXIT = 72


def stop_for_output(log: CappedLog) -> None:
    """End the process at once: a step that prints without end must not burn its CPU limit.

    Nothing the tenant catches: no exception, no cleanup, no result. What the log kept
    goes to the process's stdout first, where the host keeps it as the step's log; the
    exit code tells the host why, and the progress notes already sent name the step.
    """
    view = memoryview(log.getvalue().encode("utf-8", "replace"))
    try:
        while view:
            view = view[write(1, view) :]
    except OSError:  # tenant code may have closed fd 1: the exit code is what matters
        pass
    _exit(OUTPUT_CAP_EXIT)


class CappedLog(io.TextIOBase):
    """A text stream that keeps the first `limit` bytes (UTF-8) and counts the rest.

    With `stop` (what the sandbox's runtime passes), writing past the limit calls it
    instead: the step ends there rather than printing on into the void.
    """

    def __init__(self, limit: int, stop: Callable[[CappedLog], object] | None = None) -> None:
        super().__init__()
        self._limit = limit
        self._stop = stop
        self._kept = bytearray()
        self._written = 0

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        data = text.encode("utf-8", "replace")
        self._written += len(data)
        room = self._limit - len(self._kept)
        if room > 0:
            self._kept += data[:room]
        if self._written > self._limit and self._stop is not None:
            self._stop(self)
        return len(text)

    def getvalue(self) -> str:
        """The log, never over `limit` bytes; a cut log ends with a marker saying so."""
        if self._written <= self._limit:
            return self._kept.decode("utf-8", "ignore")
        marker = f"\n[log truncated: {self._written} bytes written, limit {self._limit} bytes]\n"
        room = max(self._limit - len(marker.encode("utf-8")), 0)
        # "ignore" drops only a character that the cut split in two.
        return bytes(self._kept[:room]).decode("utf-8", "ignore") + marker


class StepTimeout(BaseException):
    """Raised inside a step function whose attempt ran out of time.

    A BaseException, so that the tenant's `except Exception` does not swallow it.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} s")
        self.seconds = seconds


class capture_output:
    """Send sys.stdout and sys.stderr to `log` in a with block, then restore them.

    What contextlib's redirect_stdout and redirect_stderr do, without importing contextlib.
    """

    def __init__(self, log: CappedLog) -> None:
        self._log = log
        self._saved: tuple = ()

    def __enter__(self) -> CappedLog:
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = sys.stderr = self._log
        return self._log

    def __exit__(self, *exc_info: object) -> None:
        sys.stdout, sys.stderr = self._saved


class time_limit:
    """Raise StepTimeout in the running code after `seconds` (> 0) of wall time.

    `with time_limit(seconds) as timer:` then `timer.fired` says whether it went off.
    Signals reach only the main thread; elsewhere the jail's own wall-time
    limit is the only bound.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._previous: object = None
        self._armed = False

    def __enter__(self) -> time_limit:
        try:
            self._previous = _signal.signal(_signal.SIGALRM, self._on_alarm)
        except ValueError:  # not the main thread (asking threading would cost an import)
            return self
        self._armed = True
        _signal.setitimer(_signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._armed:
            return
        try:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
        finally:  # the alarm may fire just before it is disarmed
            _signal.signal(_signal.SIGALRM, self._previous)

    def _on_alarm(self, signum: int, frame: object) -> None:
        self.fired = True
        raise StepTimeout(self.seconds)
