"""Fixtures every suite shares: the personas (tenant acme with alice, tenant globex with
bob, a staff moderator), their tokens, and the in-process driver.

Whether a test runs in a transaction of its own is the test's to say, with
`@pytest.mark.django_db(transaction=True)` or by asking for `transactional_db` or a
fixture that does (`driver`); these fixtures only ask for a database.
"""

import io
import json
import logging

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from whitenoise.base import WhiteNoise

from execution import dispatch, engine
from execution.lifecycle import known_steps
from lib import logs
from tests.driver import Driver
from tests.execution.inprocess import run_in_process
from tests.factories import WAITER, make_tenant, make_token, upload
from webhooks import addresses

# On a real stack (the integration and browser suites) a step that hangs fails in 20 s,
# not the plan's 60, so a broken run ends sooner.
REAL_STACK_QUOTA = {"step_timeout_seconds": 20}


# Django's test client builds the middleware anew for every client, and WhiteNoise then
# stats every static file again: a quarter of the API tests' time. The collected files
# do not change during a run, so each directory is scanned once and its entries reused.
_static_scans: dict[tuple[str, str], dict] = {}
_scan_static_files = WhiteNoise.update_files_dictionary


def _scan_static_files_once(self, root, prefix):
    if (root, prefix) not in _static_scans:
        before = dict(self.files)
        _scan_static_files(self, root, prefix)
        added = {url: found for url, found in self.files.items() if before.get(url) is not found}
        _static_scans[root, prefix] = added
    self.files.update(_static_scans[root, prefix])


WhiteNoise.update_files_dictionary = _scan_static_files_once


def pytest_sessionstart(session):
    """Pages name static files by their hashed names from collectstatic's manifest, as in
    production (tests run with DEBUG off), so the suite collects them once, before any
    test module (test_consumers imports the ASGI application) builds WhiteNoise."""
    call_command("collectstatic", interactive=False, verbosity=0)


def resolve_on_this_machine(host: str, port: int) -> list[str]:
    """The tests' resolver: localhost only; no test resolves a name through real DNS."""
    if host.lower().rstrip(".") == "localhost":
        return ["127.0.0.1"]
    raise OSError(f"tests resolve no real names ({host!r})")


@pytest.fixture(autouse=True)
def claims_know_no_steps():
    """A test's claims read every step: on SQLite a rolled-back test's instance ids are
    used again, and a step this process knew from another test must not count."""
    known_steps.forget_all()


@pytest.fixture(autouse=True)
def webhooks_stay_on_this_machine(settings, monkeypatch):
    """Webhooks may point at loopback receivers only, as scripts/test.sh and the
    integration stack's processes also say (STEPWELL_WEBHOOK_HOSTS)."""
    settings.STEPWELL_WEBHOOK_HOSTS = ["127.0.0.1", "localhost"]
    settings.STEPWELL_WEBHOOK_ALLOW_PRIVATE = True
    monkeypatch.setattr(addresses, "resolve", resolve_on_this_machine)


@pytest.fixture
def acme(db, request):
    on_real_stack = request.node.get_closest_marker("integration") is not None
    return make_tenant("acme", "alice", **(REAL_STACK_QUOTA if on_real_stack else {}))


@pytest.fixture
def globex(db):
    return make_tenant("globex", "bob")


@pytest.fixture
def staff(db):
    """A moderator: staff, not a superuser."""
    return get_user_model().objects.create_user("mod", is_staff=True)


@pytest.fixture
def waiter(acme):
    """acme's workflow that waits for an event: an instance that stays active."""
    return upload(acme, "waiter", WAITER).workflow


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


@pytest.fixture
def json_log():
    """`json_log(name)`: the lines logger `name` writes from now on at DEBUG, through a
    handler set up as LOG_FORMAT=json's, read back as dicts by calling the result."""
    attached = []

    def attach(name: str):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.addFilter(logs.ContextFilter())
        handler.setFormatter(logs.JsonFormatter())
        logger = logging.getLogger(name)
        attached.append((logger, handler, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        return lambda: [json.loads(line) for line in stream.getvalue().splitlines()]

    yield attach
    for logger, handler, level, propagate in attached:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
