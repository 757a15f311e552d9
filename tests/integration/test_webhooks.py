"""Webhook deliveries on real processes: the clock's sweep sends a due delivery to the
`webhooks` queue, and the Procfile's webhooks worker (no step worker runs here) posts it,
signed, to a receiver on loopback."""

import json

import pytest
from django.db import connection
from standardwebhooks import Webhook as Verifier

from tests.integration.stack import Stack, current_database_url, wait_until
from tests.webhooks.receiver import receiving
from webhooks import deliveries
from webhooks.models import Delivery, Webhook

pytestmark = pytest.mark.integration


@pytest.fixture
def bare_stack(transactional_db):
    """A Redis of its own and no process yet: the test starts what it needs."""
    if connection.vendor != "postgresql":
        pytest.skip("the integration suite runs against PostgreSQL")
    stack = Stack(current_database_url())
    try:
        stack.redis.start()
        yield stack
    finally:
        stack.stop()


def test_the_webhooks_worker_sends_what_the_clock_finds_due(bare_stack, acme):
    bare_stack.start_webhooks()
    bare_stack.start_clock()
    body = json.dumps({"type": "instance.complete", "instance": {"id": "job-1"}})
    with receiving() as receiver:
        webhook = Webhook.objects.create(tenant=acme, url=receiver.url, events=["x"])
        deliveries.record([webhook.pk], "instance.complete", 1, "job-1", body)
        wait_until(lambda: receiver.received, 30, what="the delivery")
        delivery = Delivery.objects.get()
        wait_until(
            lambda: Delivery.objects.get().delivered_at, 10, what="the delivery to be recorded"
        )
    (got,) = receiver.received
    assert Verifier(webhook.secret).verify(got.body, got.headers) == json.loads(body)
    assert got.headers["webhook-id"] == str(delivery.pk)
    assert "stepwell.deliver_webhook" in bare_stack.workers[0].log()
