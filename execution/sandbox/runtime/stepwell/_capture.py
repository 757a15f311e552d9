"""What a step function may print, and how long it may run."""

import io
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class CappedLog(io.TextIOBase):
    """A text stream that keeps the first `limit` bytes (UTF-8) and counts the rest."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
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


@dataclass
class Timer:
    fired: bool = False


@contextmanager
def time_limit(seconds: float) -> Iterator[Timer]:
    """Raise StepTimeout in the running code after `seconds` (> 0) of wall time.

    Signals reach only the main thread; elsewhere the jail's own wall-time
    limit is the only bound.
    """
    timer = Timer()
    if threading.current_thread() is not threading.main_thread():
        yield timer
        return

    def on_alarm(signum: int, frame: object) -> None:
        timer.fired = True
        raise StepTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield timer
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:  # the alarm may fire just before it is disarmed
            signal.signal(signal.SIGALRM, previous)
