"""Concurrency slots: each running jail holds one, and runs as uid_base + slot.

A slot is an flock on a file, so slots are shared by every worker process on the machine
and are released by the kernel when a worker dies.
"""

import contextlib
import fcntl
import os
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

POLL_SECONDS = 0.01
DEFAULT_WAIT_SECONDS = 60.0


class NoSlotInTime(RuntimeError):
    """Every slot stayed taken for as long as a step may wait for one."""


class Slots:
    def __init__(self, directory: Path, count: int, wait_seconds: float = DEFAULT_WAIT_SECONDS):
        self.directory = directory
        self.count = count
        self.wait_seconds = wait_seconds

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)

    def claim(self, candidates: Iterable[int]) -> tuple[int, int] | None:
        """The first free slot of candidates and its locked fd (closing it frees the slot),
        or None when all are taken; never waits."""
        for slot in candidates:
            path = self.directory / f"{slot}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return slot, fd
        return None

    @contextlib.contextmanager
    def acquire(self) -> Iterator[int]:
        """Hold a free slot for the duration; waits while all are busy, at most wait_seconds.

        NoSlotInTime after that: a step never waits forever behind a machine full of jails.
        """
        deadline = time.monotonic() + self.wait_seconds
        while True:
            start = random.randrange(self.count)
            claimed = self.claim((start + i) % self.count for i in range(self.count))
            if claimed is not None:
                break
            if time.monotonic() >= deadline:
                raise NoSlotInTime(
                    f"no sandbox slot came free within {self.wait_seconds:g} s "
                    f"(all {self.count} were in use)"
                )
            time.sleep(POLL_SECONDS)
        slot, fd = claimed
        try:
            yield slot
        finally:
            os.close(fd)  # releases the flock
