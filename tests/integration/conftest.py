import pytest
from django.db import connection

from tests.factories import make_tenant
from tests.integration.stack import current_database_url, serving


@pytest.fixture
def stack(transactional_db, settings):
    if connection.vendor != "postgresql":
        pytest.skip("the integration suite runs against PostgreSQL")
    with serving(current_database_url()) as stack:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
        yield stack


@pytest.fixture
def acme(transactional_db):
    return make_tenant("acme", "alice", step_timeout_seconds=20)
