import pytest

from execution import dispatch, engine
from tests.driver import Driver
from tests.execution.inprocess import run_in_process
from tests.factories import make_tenant, make_token


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
def in_process(monkeypatch):
    """Activations run the real runtime in this process instead of a jail."""
    monkeypatch.setattr(engine, "run_sandbox", run_in_process)


@pytest.fixture
def driver(monkeypatch, in_process, transactional_db):
    """Enqueued instances are advanced here, on `driver.drain()`; jails are not used."""
    d = Driver()
    monkeypatch.setattr(dispatch, "enqueue", d.enqueue)
    return d
