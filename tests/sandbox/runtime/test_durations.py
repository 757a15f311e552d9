"""stepwell/_durations.py: durations and instants, as tenant code writes them."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from stepwell._durations import parse_duration, parse_instant

from tests.sandbox.runtime.activations import run, tenant


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
        (timedelta(minutes=2), 120.0),
        ("1 second", 1.0),
        ("30 seconds", 30.0),
        ("5 minutes", 300.0),
        ("1 minute", 60.0),
        ("2 hours", 7200.0),
        ("1.5 hours", 5400.0),
        ("1 day", 86400.0),
        ("2 days", 172800.0),
        ("1 week", 604800.0),
        ("250 milliseconds", 0.25),
        ("10s", 10.0),
        ("5m", 300.0),
        ("  3 Hours ", 10800.0),
    ],
)
def test_durations_are_parsed(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("soon", ValueError),
        ("5", ValueError),
        ("5 fortnights", ValueError),
        ("-5 seconds", ValueError),
        (-1, ValueError),
        (float("inf"), ValueError),
        (timedelta(seconds=-1), ValueError),
        (None, TypeError),
        (True, TypeError),
        ([5], TypeError),
    ],
)
def test_bad_durations_are_refused_naming_the_value(value, error):
    with pytest.raises(error, match="sleep duration"):
        parse_duration(value, "sleep duration")


def test_an_absurd_sleep_errors_the_instance_clearly():
    module = tenant("""
        def run(event, step):
            step.sleep("forever", 10 ** 20)
    """)

    assert "reaches past the year 9999" in run(module)["error"]["message"]


def test_instants_are_converted_to_utc():
    moment = datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5)))

    assert parse_instant(moment) == datetime(2025, 1, 1, 17, tzinfo=UTC)
    assert parse_instant("2025-01-01T17:00:00Z").tzinfo is UTC
