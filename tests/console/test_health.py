"""/healthz and /readyz (API.md, "Health"): readiness really asks PostgreSQL and Redis,
and names what failed; the clock's last sweep is reported, never a reason to fail."""

import socket
import tempfile
import time
from pathlib import Path

import pytest
from django.db import connections
from django.test import Client

from execution import clock, schedules
from execution.clock_mark import KEY, SweepMark, bounded_redis
from execution.lifecycle import due
from tests.integration.stack import Redis, free_port


@pytest.fixture
def no_mark(settings):
    """The test Redis holds no clock mark before or after the test."""
    client = bounded_redis(settings.REDIS_URL)
    client.delete(KEY)
    yield client
    client.delete(KEY)
    client.close()


@pytest.fixture
def throwaway_redis(settings):
    """A Redis of this test's own, on a free loopback port, that REDIS_URL points at."""
    log_dir = Path(tempfile.mkdtemp(prefix="stepwell-readyz-"))
    server = Redis(log_dir)
    server.start()
    settings.REDIS_URL = server.url
    yield server
    server.stop()
    for path in log_dir.iterdir():
        path.unlink()
    log_dir.rmdir()


def readyz() -> tuple[int, dict]:
    response = Client().get("/readyz")
    return response.status_code, response.json()


def test_healthz_answers_while_the_process_serves():
    response = Client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"ok": True}


@pytest.mark.django_db
def test_readyz_is_ready_when_postgres_redis_and_the_clock_answer(no_mark):
    SweepMark(no_mark).record()
    assert readyz() == (200, {"database": "ok", "redis": "ok", "clock": "ok"})


@pytest.mark.django_db
def test_readyz_answers_503_naming_the_database_when_it_cannot_be_reached(no_mark, monkeypatch):
    closed = free_port()  # nothing listens there
    monkeypatch.setitem(connections["default"].settings_dict, "PORT", str(closed))
    status, body = readyz()
    assert status == 503
    assert body["database"].startswith("failed: ") and body["redis"] == "ok"


@pytest.mark.django_db
def test_readyz_answers_503_naming_redis_once_redis_is_killed(throwaway_redis):
    status, body = readyz()
    assert status == 200 and body["redis"] == "ok", body
    throwaway_redis.process.kill()
    throwaway_redis.process.proc.wait(5)
    status, body = readyz()
    assert status == 503
    assert body["redis"].startswith("failed: ") and body["database"] == "ok"
    assert body["clock"] == "unknown: Redis failed"


@pytest.mark.django_db
def test_a_redis_that_never_answers_fails_the_probe_instead_of_hanging_it(settings):
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # connections are queued, never accepted, never answered
        settings.REDIS_URL = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        status, body = readyz()
    assert status == 503 and body["redis"].startswith("failed: "), body


@pytest.mark.django_db
def test_a_stale_or_missing_clock_is_reported_without_failing_readiness(no_mark):
    status, body = readyz()
    assert status == 200 and body["clock"] == "stale: no sweep recorded"
    no_mark.set(KEY, repr(time.time() - 45))
    status, body = readyz()
    assert status == 200 and body["clock"] == "stale: last sweep 45 s ago"


def test_the_clock_marks_its_sweeps_and_goes_on_when_redis_is_away(no_mark, settings, monkeypatch):
    sweeps = []
    monkeypatch.setattr(due, "sweep", lambda: sweeps.append(1) or 0)
    monkeypatch.setattr(schedules, "sweep", lambda: 0)
    clock.run_forever(0.05, stop=lambda: len(sweeps) >= 2)
    assert no_mark.get(KEY) is not None

    no_mark.delete(KEY)
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    clock.run_forever(0.05, stop=lambda: len(sweeps) >= 5)
    assert len(sweeps) == 5 and no_mark.get(KEY) is None
