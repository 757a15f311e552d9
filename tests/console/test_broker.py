"""The broker transport (console/broker.py): kombu's Redis one, one client per channel."""

import pytest
from kombu import Connection, Exchange, Producer, Queue
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from console import broker
from console.celery import app
from tests.integration.stack import free_port

QUEUE = Queue("test-broker", Exchange("test-broker"), "test-broker")


def test_the_celery_app_publishes_through_it():
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, broker.Transport)
        assert connection.transport.driver_type == "redis"  # Celery's checks still see Redis


def test_a_channel_sends_its_commands_through_one_client_and_its_messages_arrive(settings):
    with Connection(settings.CELERY_BROKER_URL, transport=broker.Transport) as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as again:
            assert first is again
        producer = Producer(channel, exchange=QUEUE.exchange, routing_key="test-broker")
        try:
            for n in range(3):
                producer.publish({"n": n}, declare=[QUEUE], serializer="json")
            bound = QUEUE(channel)
            assert [bound.get(no_ack=True).payload["n"] for _ in range(3)] == [0, 1, 2]
        finally:
            QUEUE(channel).delete()
        # Pools dropped (kombu does so when it closes a channel): a client of the new pool.
        channel._disconnect_pools()
        with channel.conn_or_acquire() as after:
            assert after is not first and after.connection_pool is channel.pool


def test_a_publish_to_an_unreachable_redis_raises_as_before():
    # dispatch.enqueue catches it, and the clock sends the instance again.
    url = f"redis://127.0.0.1:{free_port()}/0"
    with Connection(url, transport=broker.Transport, connect_timeout=1) as connection:
        producer = Producer(connection, exchange=QUEUE.exchange, routing_key="test-broker")
        with pytest.raises((OperationalError, RedisConnectionError)):
            producer.publish({"n": 1}, declare=[QUEUE], retry=False)
