"""Pages of a list, newest first, by keyset on (created_at, id): `{"items", "next_cursor"}`.

A cursor is the last row's creation time in microseconds and its id, `"<µs>.<id>"`, as
`GET /api/v1/instances` gives them; a query filtered on `created_at <= t` then excluding
the ties already seen walks an index on (…, -created_at, -id) without an offset.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from django.db.models import QuerySet

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CURSOR_PATTERN = r"^[0-9]{1,16}\.[0-9]{1,19}$"


def encode(created_at: datetime, pk: int) -> str:
    return f"{(created_at - EPOCH) // timedelta(microseconds=1)}.{pk}"


def decode(cursor: str) -> tuple[datetime, int]:
    """The position of a cursor; ValueError for one this API did not give out."""
    micros, _, pk = cursor.partition(".")
    try:
        created_at = EPOCH + timedelta(microseconds=int(micros))
    except (OverflowError, ValueError):
        raise ValueError("the cursor is not one this API gave out") from None
    if not pk.isdigit() or int(pk) >= 2**63:
        raise ValueError("the cursor is not one this API gave out")
    return created_at, int(pk)


def page(qs: QuerySet, limit: int, cursor: str | None, out: Callable) -> dict:
    """One page of `qs` (newest first), each row made JSON by `out`."""
    if cursor:
        created_at, pk = decode(cursor)
        qs = qs.filter(created_at__lte=created_at).exclude(created_at=created_at, pk__gte=pk)
    rows = list(qs.order_by("-created_at", "-id")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [out(r) for r in rows],
        "next_cursor": encode(rows[-1].created_at, rows[-1].pk) if more else None,
    }
