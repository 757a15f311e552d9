"""Regression test from the chaos run: a Redis restart killed workers that held a message.

A worker takes up to `prefetch multiplier x concurrency` messages ahead of its free
pool processes. Messages taken but not yet started are unacked, and kombu's Redis
transport (ack emulation, kombu 5.7.0) restores them when the connection drops: it
builds a new client from a connection that is already closed, raises
`AttributeError: 'NoneType' object has no attribute 'hostname'`, and Celery ends the
worker with "Unrecoverable error". Every instance then waits for another worker.

The fix turns ack emulation off, so kombu keeps nothing to restore. Whether a restart
hits that moment is a race, so the end-to-end test below may pass without the fix; the
first test checks the fix itself, and fails without it.
"""

import time

import pytest

from execution.models import Instance, Step
from tests.factories import upload
from tests.integration.stack import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BUSY = """
def run(event, step):
    for i in range(4):
        step.do(f"s{i}", lambda: i)
        step.sleep(f"nap{i}", 0.2)
    return step.do("last", lambda: event.payload["n"])
"""


def test_a_message_taken_but_not_acked_leaves_nothing_in_redis_to_restore(settings):
    import redis
    from kombu import Connection, Exchange, Queue

    queue = Queue("stepwell-ack-check", Exchange("stepwell-ack-check"), "stepwell-ack-check")
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    with Connection(settings.CELERY_BROKER_URL, transport_options=options) as connection:
        channel = connection.channel()
        connection.Producer(channel).publish(
            {"n": 1}, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue]
        )
        taken = []
        consumer = connection.Consumer(
            queue, channel=channel, callbacks=[lambda b, m: taken.append(b)]
        )
        with consumer:
            connection.drain_events(timeout=5)
        try:
            assert taken == [{"n": 1}]
            # With ack emulation kombu would hold the message here until the ack.
            assert not client.exists("unacked", "unacked_index")
        finally:
            bindings = [f"_kombu.{kind}.{queue.name}" for kind in ("binding", "binding_permanent")]
            client.delete(queue.name, *bindings)
            channel.close()


def test_workers_holding_reserved_messages_survive_redis_restarts(stack, acme):
    from execution import workflows

    stack.start_worker()
    workflow = upload(acme, "busy", BUSY).workflow
    started = []
    # Which socket notices the lost connection first is a race, so restart a few
    # times while the workers are busy taking messages.
    for round_ in range(5):
        batch = [
            workflows.start_instance(workflow, payload={"n": round_ * 10 + n})[0] for n in range(8)
        ]
        started += batch
        wait_until(
            lambda batch=batch: Step.objects.filter(instance__in=batch).count() >= 8,
            60,
            what="the workers to take the batch",
        )
        time.sleep(0.5)
        stack.redis.restart(down_for=1.0)
        time.sleep(2)
        dead = [w for w in stack.workers if w.proc.poll() is not None]
        assert not dead, (
            f"{dead[0].name} died on Redis restart {round_ + 1}:\n" + dead[0].log()[-3000:]
        )

    def all_done():
        return Instance.objects.filter(
            pk__in=[i.pk for i in started], status="complete"
        ).count() == len(started)

    try:
        wait_until(all_done, 120, interval=0.2, what="every instance to complete")
    except AssertionError:
        raise AssertionError(stack.logs()) from None
    outputs = Step.objects.filter(name="last").values_list("output", flat=True)
    assert sorted(outputs) == sorted(i.payload["n"] for i in started)
