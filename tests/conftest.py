import pytest
from django.core.management import call_command

from execution import dispatch, engine
from tests.driver import Driver
from tests.execution.inprocess import run_in_process
from tests.factories import make_tenant, make_token


def pytest_sessionstart(session):
    """Pages name static files by their hashed names from collectstatic's manifest, as in
    production (tests run with DEBUG off), so the suite collects them once, before any
    test module (test_consumers imports the ASGI application) builds WhiteNoise."""
    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.fixture
def acme(db):
    return make_tenant("acme", "alice")


@pytest.fixture
def globex(db):
    return make_tenant("globex", "bob")


@pytest.fixture
def acme_token(acme):
    return make_token(acme)


@pytest.fixture
def globex_token(globex):
    return make_token(globex)


@pytest.fixture
def driver(monkeypatch, transactional_db):
    """Enqueued instances are advanced here, on `driver.drain()`; jails are not used."""
    d = Driver()
    monkeypatch.setattr(engine, "run_sandbox", run_in_process)
    monkeypatch.setattr(dispatch, "enqueue", d.enqueue)
    return d
