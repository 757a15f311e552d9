"""The real stack for browser tests: PostgreSQL, a private Redis, a Celery worker, the
clock, and the Procfile's uvicorn serving the console, all pointed at the test database."""

import pytest
from django.db import connection, connections

from tests.integration.stack import Stack, current_database_url, point_celery_at

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def stack(transactional_db, settings, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("browser tests run against PostgreSQL")
    # Playwright's sync API keeps an event loop in this thread; the ORM calls in between
    # are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    stack = Stack(current_database_url())
    web = None
    try:
        stack.start()
        point_celery_at(stack.redis.url)
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [stack.redis.url]},
            }
        }
        # DEBUG off, as in production: WhiteNoise serves the collected static files.
        web = stack.start_web()
        stack.web = web
        yield stack
    finally:
        if web is not None:
            web.stop()
        stack.stop()
        point_celery_at()


@pytest.fixture
def browser(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
            # ORM calls made while Playwright's loop ran used a connection of that
            # context (asgiref's Local): closed here, or the test database cannot be
            # dropped at the end ("being accessed by other users").
            connections.close_all()
