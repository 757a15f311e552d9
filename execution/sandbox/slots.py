"""Concurrency slots: each running jail holds one, and runs as uid_base + slot.

A slot is an flock on a file, so slots are shared by every worker process on the machine
and are released by the kernel when a worker dies.
"""

import contextlib
import fcntl
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

POLL_SECONDS = 0.01


class Slots:
    def __init__(self, directory: Path, count: int) -> None:
        self.directory = directory
        self.count = count

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)

    def _try(self, slot: int) -> int | None:
        path = self.directory / f"{slot}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @contextlib.contextmanager
    def acquire(self) -> Iterator[int]:
        """Hold a free slot for the duration; waits while all are busy."""
        start = random.randrange(self.count)
        while True:
            for i in range(self.count):
                slot = (start + i) % self.count
                fd = self._try(slot)
                if fd is not None:
                    try:
                        yield slot
                    finally:
                        os.close(fd)  # releases the flock
                    return
            time.sleep(POLL_SECONDS)
