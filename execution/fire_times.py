"""When a schedule fires: a 5-field cron expression in a time zone (through croniter), or
every N seconds at whole multiples of N since the Unix epoch.

Every function here raises ValueError with a message for the tenant on bad input, and
bounds its work: a cron expression is checked over at most GAP_SAMPLES fires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from execution.sandbox.runtime.stepwell._durations import parse_duration

# An `every` up to ten years: beyond that a schedule is not a schedule.
MAX_EVERY = 10 * 366 * 86400
# Fires looked at to find a cron expression's shortest interval, and to count missed ones.
GAP_SAMPLES = 1000
# ...within this much time: a cron's pattern repeats within a leap-year cycle's year.
GAP_HORIZON = timedelta(days=400)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_every(value: int | float | str) -> int:
    """Whole seconds from a number of seconds or an SDK duration string ('5 minutes')."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    seconds = parse_duration(value, "every")
    if seconds != math.floor(seconds) or seconds < 1:
        raise ValueError(f"every must be a whole number of seconds, 1 or more, not {value!r}")
    if seconds > MAX_EVERY:
        raise ValueError(f"every must be at most {MAX_EVERY} seconds (ten years)")
    return int(seconds)


def check_cron(expression: str) -> str:
    """The expression with its fields separated by single spaces, if croniter takes it."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron must have 5 fields (minute hour day-of-month month day-of-week), "
            f"not {len(fields)}"
        )
    expression = " ".join(fields)
    try:
        # A valid expression may still never fire (February 31st): croniter says so here.
        croniter(expression, EPOCH).get_next(datetime)
    except (ValueError, KeyError, OverflowError):
        raise ValueError(f"cron {expression!r} is not a cron expression that fires") from None
    return expression


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {name!r} is not an IANA time zone name") from None


def as_id_time(moment: datetime) -> str:
    """A fire time as schedule instance ids name it: YYYYMMDDTHHMMSSZ, in UTC."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class Timetable:
    """Exactly one of `cron` and `every`; `timezone` is the cron's."""

    cron: str = ""
    every: int | None = None
    timezone: str = "UTC"

    def latest_at_or_before(self, moment: datetime) -> datetime:
        if self.every:
            multiple = self.seconds_since_epoch(moment) // self.every
            return EPOCH + timedelta(seconds=multiple * self.every)
        # croniter's get_prev is strictly before its start; fires fall on whole minutes.
        minute = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        return self.cron_iter(minute).get_prev(datetime).astimezone(UTC)

    def next_after(self, moment: datetime) -> datetime:
        if self.every:
            multiple = self.seconds_since_epoch(moment) // self.every + 1
            return EPOCH + timedelta(seconds=multiple * self.every)
        return self.cron_iter(moment).get_next(datetime).astimezone(UTC)

    def count_between(self, first: datetime, last: datetime) -> int:
        """Fires from `first` up to, not including, `last` (at most GAP_SAMPLES)."""
        if last <= first:
            return 0
        if self.every:
            span = self.seconds_since_epoch(last) - self.seconds_since_epoch(first)
            return min(math.ceil(span / self.every), GAP_SAMPLES)
        fires = self.cron_iter(first - timedelta(seconds=1))
        count = 0
        while count < GAP_SAMPLES and fires.get_next(datetime) < last:
            count += 1
        return count

    def shortest_gap(self, start: datetime) -> float:
        """The shortest time between two fires, in seconds, over the next GAP_SAMPLES."""
        if self.every:
            return float(self.every)
        fires = self.cron_iter(start)
        previous = fires.get_next(datetime)
        horizon = previous + GAP_HORIZON
        shortest = math.inf
        for _ in range(GAP_SAMPLES):
            fire = fires.get_next(datetime)
            shortest = min(shortest, (fire - previous).total_seconds())
            if fire > horizon:
                break
            previous = fire
        return shortest

    def cron_iter(self, start: datetime) -> croniter:
        return croniter(self.cron, start.astimezone(ZoneInfo(self.timezone)))

    @staticmethod
    def seconds_since_epoch(moment: datetime) -> int:
        return math.floor((moment - EPOCH).total_seconds())
