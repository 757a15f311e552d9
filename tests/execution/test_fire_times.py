"""execution/fire_times.py: when cron and `every` schedules fire."""

from datetime import UTC, datetime

import pytest

from execution.fire_times import Timetable, as_id_time, check_cron, check_timezone, parse_every


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30), ("30", 30), ("5 minutes", 300), ("2h", 7200), (90.0, 90), ("1 day", 86400)],
)
def test_every_takes_seconds_and_sdk_durations(value, seconds):
    assert parse_every(value) == seconds


@pytest.mark.parametrize("value", [0, 1.5, "soon", "-5", "500 ms", 10**12, "1e400 s"])
def test_every_refuses_what_is_not_whole_seconds_in_range(value):
    with pytest.raises(ValueError, match="every"):
        parse_every(value)


@pytest.mark.parametrize(
    "expression",
    ["* * * *", "0 * * * * *", "61 * * * *", "a b c d e", "H * * * *", "0 0 31 2 *"],
)
def test_cron_needs_five_valid_fields(expression):
    with pytest.raises(ValueError, match="cron"):
        check_cron(expression)


def test_time_zones_are_iana_names_only():
    assert check_timezone("Europe/Paris").key == "Europe/Paris"
    for bad in ("Mars/Olympus", "../../etc/passwd", "/etc/localtime", ""):
        with pytest.raises(ValueError, match="timezone"):
            check_timezone(bad)


def test_every_fires_at_whole_multiples_since_the_epoch():
    table = Timetable(every=3600)
    assert table.latest_at_or_before(at(2026, 1, 1, 12, 59, 59)) == at(2026, 1, 1, 12)
    assert table.latest_at_or_before(at(2026, 1, 1, 12)) == at(2026, 1, 1, 12)
    assert table.next_after(at(2026, 1, 1, 12)) == at(2026, 1, 1, 13)
    assert table.count_between(at(2026, 1, 1, 9), at(2026, 1, 1, 12)) == 3


def test_cron_fires_in_its_time_zone():
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    table = Timetable(cron="0 9 * * *", timezone="Europe/Paris")
    assert table.next_after(at(2026, 1, 10, 0)) == at(2026, 1, 10, 8)
    assert table.next_after(at(2026, 7, 10, 0)) == at(2026, 7, 10, 7)
    assert table.latest_at_or_before(at(2026, 1, 10, 8)) == at(2026, 1, 10, 8)
    assert table.latest_at_or_before(at(2026, 1, 10, 7, 59)) == at(2026, 1, 9, 8)


def test_missed_cron_fires_are_counted_up_to_the_one_that_runs():
    table = Timetable(cron="*/15 * * * *")
    assert table.count_between(at(2026, 1, 1, 10), at(2026, 1, 1, 11)) == 4
    assert table.count_between(at(2026, 1, 1, 11), at(2026, 1, 1, 11)) == 0


def test_the_shortest_gap_of_an_irregular_cron_is_found():
    assert Timetable(cron="0,5 * * * *").shortest_gap(at(2026, 1, 1)) == 300
    assert Timetable(cron="0 0 1,2 * *").shortest_gap(at(2026, 1, 1)) == 86400
    assert Timetable(every=45).shortest_gap(at(2026, 1, 1)) == 45
    # Leap days only: the look ahead stops after a year, well before the year 9999.
    assert Timetable(cron="0 0 29 2 *").shortest_gap(at(2026, 1, 1)) > 3 * 365 * 86400


def test_instance_ids_name_the_fire_in_utc():
    paris = Timetable(cron="0 9 * * *", timezone="Europe/Paris").next_after(at(2026, 1, 1))
    assert as_id_time(paris) == "20260101T080000Z"
