"""The tenant command (cli/) on sys.path as pip lays it out, and a live server for it.

`live` is one real deployment for a whole test module (a worker, the clock and the
Procfile's web server, on the test database), with acme's token: the command talks to
it over HTTP and WebSocket as a tenant's machine would. Its tests touch the database
only through the server, so they need no database of their own; the fixture empties
the database when the module is done.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.core.management import call_command
from django.db import connection

from tests.conftest import REAL_STACK_QUOTA
from tests.factories import make_tenant, make_token
from tests.integration.stack import ROOT, Stack, current_database_url, serving

CLI = ROOT / "cli"
if str(CLI) not in sys.path:
    sys.path.insert(0, str(CLI))


@dataclass
class Live:
    url: str
    token: str
    stack: Stack

    def env(self) -> dict[str, str]:
        """The environment of a `stepwell` process that talks to this server."""
        return {
            **os.environ,
            "STEPWELL_URL": self.url,
            "STEPWELL_TOKEN": self.token,
            "PYTHONPATH": str(CLI),
        }


@pytest.fixture(scope="module")
def live(django_db_setup, django_db_blocker) -> Iterator[Live]:
    with django_db_blocker.unblock():
        if connection.vendor != "postgresql":
            pytest.skip("the live server runs against PostgreSQL")
        tenant = make_tenant("acme", "alice", **REAL_STACK_QUOTA)
        token = make_token(tenant)
        try:
            # A key, so that the secrets API (off without one unless DEBUG) is on.
            key = base64.urlsafe_b64encode(os.urandom(32)).decode()
            with serving(current_database_url(), STEPWELL_SECRET_KEYS=key) as stack:
                web = stack.start_web()
                yield Live(web.url, token, stack)
        finally:
            call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def tenant_env(live, monkeypatch) -> Live:
    """STEPWELL_URL and STEPWELL_TOKEN of the live server in this process's environment."""
    monkeypatch.setenv("STEPWELL_URL", live.url)
    monkeypatch.setenv("STEPWELL_TOKEN", live.token)
    return live
