import contextlib
from collections.abc import Iterator

import pytest
from django.db import connection

from tests.integration.stack import Stack, current_database_url, serving


@contextlib.contextmanager
def running_stack(settings, **env: str) -> Iterator[Stack]:
    """A started Stack (its processes given `env` over the defaults), stopped after."""
    if connection.vendor != "postgresql":
        pytest.skip("the integration suite runs against PostgreSQL")
    with serving(current_database_url(), **env) as stack:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
        yield stack


@pytest.fixture
def stack(transactional_db, settings):
    with running_stack(settings) as stack:
        yield stack
