import pytest
from django.db import connection

from console.celery import app as celery_app
from tests.factories import make_tenant
from tests.integration.stack import Stack


def database_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def reset_broker_pools() -> None:
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def stack(transactional_db, settings):
    if connection.vendor != "postgresql":
        pytest.skip("the integration suite runs against PostgreSQL")
    stack = Stack(database_url())
    try:
        stack.start()
        # This process enqueues too (on commit of a start): point it at the same broker.
        celery_app.conf.broker_url = stack.redis.url
        reset_broker_pools()
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
        yield stack
    finally:
        stack.stop()
        reset_broker_pools()


@pytest.fixture
def acme(transactional_db):
    return make_tenant("acme", "alice", step_timeout_seconds=20)
