"""Which of each twin runs: a hand-written PostgreSQL statement or its portable ORM twin.

Six hot paths exist twice (claim, step record, end record, start, event insert and
dispatch pick): once as one statement written for PostgreSQL, where it saves round
trips and a worker's CPU, and once through the ORM, which every database runs (SQLite
for `make run`). Which one runs depends on the database and on this switch only, never
on whether the caller is inside a transaction: a test of a pair runs both ways on the
same rows (tests/execution/test_twins.py) by turning the switch off for the ORM way.
"""

from __future__ import annotations

import contextlib
import threading

from django.db import connection


class Switch(threading.local):
    hand_written: bool = True


_switch = Switch()


def hand_written() -> bool:
    """Whether the hand-written statement runs: on PostgreSQL, unless switched off."""
    return _switch.hand_written and connection.vendor == "postgresql"


@contextlib.contextmanager
def portable():
    """Run the portable twin in this block, on PostgreSQL too (the twins' tests)."""
    before, _switch.hand_written = _switch.hand_written, False
    try:
        yield
    finally:
        _switch.hand_written = before
