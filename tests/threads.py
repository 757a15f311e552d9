"""Running one piece of work in several threads at once, each on its own connection."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection


def at_once(count: int, work: Callable[[], object]) -> tuple[list, list[Exception]]:
    """Call `work` in `count` threads released together by a barrier: (results, errors).
    Each thread gets its own database connection and closes it, as separate processes
    would; the test needs a transactional database to see their commits."""
    barrier = threading.Barrier(count)
    results, errors = [], []

    def run():
        try:
            barrier.wait()
            results.append(work())
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors
