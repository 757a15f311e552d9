import contextlib
from collections.abc import Iterator

import pytest
from django.db import connection

from tests.factories import make_tenant
from tests.integration.stack import Stack, current_database_url, point_celery_at


@contextlib.contextmanager
def running_stack(settings, **env: str) -> Iterator[Stack]:
    """A started Stack (its processes given `env` over the defaults), stopped after."""
    if connection.vendor != "postgresql":
        pytest.skip("the integration suite runs against PostgreSQL")
    stack = Stack(current_database_url(), **env)
    try:
        stack.start()
        # This process enqueues too (on commit of a start): point it at the same broker.
        point_celery_at(stack.redis.url)
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
        yield stack
    finally:
        stack.stop()
        point_celery_at()


@pytest.fixture
def stack(transactional_db, settings):
    with running_stack(settings) as stack:
        yield stack


@pytest.fixture
def acme(transactional_db):
    return make_tenant("acme", "alice", step_timeout_seconds=20)
