"""Attempts, against real receivers on loopback: signed per Standard Webhooks, the same
webhook-id on every retry with a fresh timestamp and signature, the backoff kept in the
database, the sweep's claims, giving up, and resending."""

import itertools
import json
from datetime import timedelta

import pytest
from celery import current_app
from django.utils import timezone
from standardwebhooks import Webhook as Verifier

from tests.webhooks.receiver import receiving, reply, statuses
from webhooks import addresses, client, deliveries
from webhooks.models import MAX_ATTEMPTS, Delivery, Webhook
from webhooks.subscriptions import create_webhook, resend_delivery

BODY = json.dumps({"type": "instance.complete", "instance": {"id": "job-1"}})


@pytest.fixture
def sent(monkeypatch):
    """What the sweep sends to the webhooks queue, kept here instead: (id, lease)."""
    queue = []
    monkeypatch.setattr(
        deliveries, "enqueue", lambda ids, lease: queue.extend((i, lease) for i in ids)
    )
    return queue


def delivery_to(tenant, url, **fields) -> Delivery:
    webhook = Webhook.objects.create(tenant=tenant, url=url, events=["instance.complete"])
    deliveries.record([webhook.pk], "instance.complete", 1, "job-1", BODY)
    delivery = Delivery.objects.get(webhook=webhook)
    Delivery.objects.filter(pk=delivery.pk).update(**fields)
    delivery.refresh_from_db()
    return delivery


def run_due(sent, django_capture_on_commit_callbacks) -> None:
    """A clock's sweep, then the tasks it sent, as a webhooks worker runs them."""
    with django_capture_on_commit_callbacks(execute=True):
        deliveries.sweep()
    while sent:
        pk, lease = sent.pop(0)
        deliveries.attempt(pk, lease)


def make_due(delivery: Delivery) -> None:
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


def test_a_delivery_is_signed_so_that_standard_webhooks_verifies_it(
    acme, sent, django_capture_on_commit_callbacks
):
    with receiving() as receiver:
        delivery = delivery_to(acme, receiver.url)
        run_due(sent, django_capture_on_commit_callbacks)
    (got,) = receiver.received
    assert Verifier(delivery.webhook.secret).verify(got.body, got.headers) == json.loads(BODY)
    assert got.headers["webhook-id"] == str(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.state == "delivered" and delivery.attempts == 1
    assert delivery.status_code == 200 and delivery.next_attempt_at is None
    assert delivery.error == ""


def test_another_secret_does_not_verify(acme, sent, django_capture_on_commit_callbacks):
    with receiving() as receiver:
        delivery_to(acme, receiver.url)
        run_due(sent, django_capture_on_commit_callbacks)
    (got,) = receiver.received
    other = Webhook(tenant=acme, url="http://127.0.0.1/").secret
    with pytest.raises(Exception, match="signature"):
        Verifier(other).verify(got.body, got.headers)


def test_every_retry_has_the_same_id_and_a_fresh_timestamp_and_signature(
    acme, sent, django_capture_on_commit_callbacks, monkeypatch
):
    with receiving(statuses(500, 502)) as receiver:
        delivery = delivery_to(acme, receiver.url)
        start = timezone.now()
        for n in range(3):
            # Each attempt a minute after the last (as the clock goes, in this test).
            later = start + timedelta(minutes=n)
            monkeypatch.setattr(deliveries.timezone, "now", lambda t=later: t)
            make_due(delivery)
            run_due(sent, django_capture_on_commit_callbacks)
    assert [r.headers["webhook-id"] for r in receiver.received] == [str(delivery.pk)] * 3
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.received]
    assert stamps == [int((start + timedelta(minutes=n)).timestamp()) for n in range(3)]
    assert len({r.headers["webhook-signature"] for r in receiver.received}) == 3
    assert len({r.body for r in receiver.received}) == 1  # the body is fixed
    delivery.refresh_from_db()
    assert delivery.state == "delivered" and delivery.attempts == 3


def test_a_failed_attempt_is_due_again_after_the_backoff_kept_in_the_database(
    acme, sent, django_capture_on_commit_callbacks
):
    with receiving(lambda h: reply(h, 503, b"busy")) as receiver:
        delivery = delivery_to(acme, receiver.url)
        before = timezone.now()
        run_due(sent, django_capture_on_commit_callbacks)
    delivery.refresh_from_db()
    assert delivery.state == "pending" and delivery.attempts == 1
    assert delivery.status_code == 503 and delivery.error == "HTTP 503: busy"
    wait = delivery.next_attempt_at - before
    assert timedelta(seconds=5) <= wait < timedelta(seconds=10)
    # Not due yet: the next sweep sends nothing.
    run_due(sent, django_capture_on_commit_callbacks)
    assert len(receiver.received) == 1


def test_the_backoff_starts_within_ten_seconds_and_goes_on_for_more_than_a_day():
    delays = [deliveries.retry_delay(n) for n in range(1, MAX_ATTEMPTS)]
    assert delays[0] == timedelta(seconds=5)
    assert [d.total_seconds() for d in delays[:4]] == [5, 15, 45, 135]
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert max(delays) == timedelta(hours=6)
    assert sum(delays, timedelta()) >= timedelta(hours=24)
    assert sum(delays[:-1], timedelta()) < timedelta(hours=24)  # no longer than needed


def test_it_gives_up_after_the_last_attempt_and_a_resend_makes_exactly_one_more(
    acme, sent, django_capture_on_commit_callbacks
):
    with receiving(lambda h: reply(h, 500)) as receiver:
        delivery = delivery_to(acme, receiver.url, attempts=MAX_ATTEMPTS - 1)
        run_due(sent, django_capture_on_commit_callbacks)
        delivery.refresh_from_db()
        assert delivery.state == "failed" and delivery.next_attempt_at is None
        assert f"gave up after {MAX_ATTEMPTS} attempts" in delivery.error

        resend_delivery(delivery, actor=None)
        run_due(sent, django_capture_on_commit_callbacks)
        delivery.refresh_from_db()
        assert delivery.attempts == MAX_ATTEMPTS + 1
        assert delivery.state == "failed"  # one more attempt, not a new schedule
    assert len(receiver.received) == 2


def test_a_resend_of_a_delivered_delivery_sends_it_again_with_the_same_id(
    acme, sent, django_capture_on_commit_callbacks
):
    with receiving() as receiver:
        delivery = delivery_to(acme, receiver.url)
        run_due(sent, django_capture_on_commit_callbacks)
        resend_delivery(Delivery.objects.get(pk=delivery.pk), actor=None)
        run_due(sent, django_capture_on_commit_callbacks)
    assert [r.headers["webhook-id"] for r in receiver.received] == [str(delivery.pk)] * 2
    delivery.refresh_from_db()
    assert delivery.state == "delivered" and delivery.attempts == 2


def test_an_address_refused_at_delivery_time_is_a_failed_attempt(
    acme, sent, django_capture_on_commit_callbacks, settings
):
    delivery = delivery_to(acme, "http://127.0.0.1:9/hook")
    settings.STEPWELL_WEBHOOK_ALLOW_PRIVATE = False  # the deployment changed its mind
    run_due(sent, django_capture_on_commit_callbacks)
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and delivery.status_code is None
    assert delivery.error.startswith("refused: ") and "loopback or private" in delivery.error
    assert delivery.state == "pending"


def test_the_sweep_claims_a_bounded_batch_and_a_lost_task_is_sent_again_after_its_lease(
    acme, sent, django_capture_on_commit_callbacks
):
    webhook = Webhook.objects.create(tenant=acme, url="http://127.0.0.1:9/", events=["x"])
    for n in range(5):
        deliveries.record([webhook.pk], "instance.complete", n, f"job-{n}", BODY)
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries.sweep(batch=3) == 3
        assert deliveries.sweep(batch=3) == 2
        assert deliveries.sweep(batch=3) == 0  # all claimed, none due
    assert len({pk for pk, _ in sent}) == 5
    # The tasks were lost: once the leases pass, the sweep sends them again.
    Delivery.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries.sweep() == 5


def test_a_task_whose_claim_was_taken_does_nothing(acme, sent, django_capture_on_commit_callbacks):
    with receiving() as receiver:
        delivery = delivery_to(acme, receiver.url)
        with django_capture_on_commit_callbacks(execute=True):
            deliveries.sweep()
        ((pk, lease),) = sent
        deliveries.attempt(pk, lease)
        deliveries.attempt(pk, lease)  # the same message twice
        deliveries.attempt(pk + 1000, lease)  # a delivery that is gone
    assert len(receiver.received) == 1
    delivery.refresh_from_db()
    assert delivery.attempts == 1


def test_deliveries_go_to_the_webhooks_queue_never_the_step_workers(settings):
    route = current_app.amqp.router.route({}, deliveries.DELIVER, args=[1, "x"])
    assert route["queue"].name == settings.STEPWELL_WEBHOOK_QUEUE == "webhooks"
    step_route = current_app.amqp.router.route({}, "stepwell.advance", args=[1])
    assert step_route["queue"].name == "stepwell"


def test_enqueue_names_the_webhooks_queue(monkeypatch):
    calls = []
    task = current_app.tasks[deliveries.DELIVER]
    monkeypatch.setattr(task, "apply_async", lambda **kw: calls.append(kw))
    lease = timezone.now()
    deliveries.enqueue([7], lease)
    assert calls == [{"args": [7, lease.isoformat()], "queue": "webhooks"}]


@pytest.fixture
def hooks_test_resolves(settings, monkeypatch):
    """`hooks.test` is a listed host; what it resolves to is up to the test, in turn."""
    settings.STEPWELL_WEBHOOK_HOSTS = ["hooks.test"]
    answers, asked = [], []

    def resolve(host, port):
        assert host == "hooks.test"
        asked.append(host)
        return answers.pop(0)

    monkeypatch.setattr(addresses, "resolve", resolve)
    return answers, asked


def test_a_name_that_resolves_elsewhere_at_delivery_time_is_refused_then(
    acme, sent, django_capture_on_commit_callbacks, hooks_test_resolves
):
    answers, _ = hooks_test_resolves
    answers += [["127.0.0.1"], ["169.254.169.254"]]  # rebound to the metadata service
    with receiving() as receiver:
        url = f"http://hooks.test:{receiver.port}/hook"
        webhook = create_webhook(acme, url, ["instance.complete"], actor=None)
        deliveries.record([webhook.pk], "instance.complete", 1, "job-1", BODY)
        run_due(sent, django_capture_on_commit_callbacks)
    assert receiver.received == []
    delivery = Delivery.objects.get()
    assert "169.254.169.254" in delivery.error and delivery.state == "pending"


def test_an_attempt_connects_to_the_address_it_checked_and_resolves_once(
    acme, sent, django_capture_on_commit_callbacks, hooks_test_resolves, monkeypatch
):
    answers, asked = hooks_test_resolves
    answers += [["127.0.0.1"]]
    connected = []
    create_connection = client.socket.create_connection

    def recording(address, *args, **kwargs):
        connected.append(address)
        return create_connection(address, *args, **kwargs)

    monkeypatch.setattr(client.socket, "create_connection", recording)
    with receiving() as receiver:
        webhook = Webhook.objects.create(
            tenant=acme, url=f"http://hooks.test:{receiver.port}/in", events=["x"]
        )
        deliveries.record([webhook.pk], "instance.complete", 1, "job-1", BODY)
        run_due(sent, django_capture_on_commit_callbacks)
    (got,) = receiver.received
    assert connected == [("127.0.0.1", receiver.port)] and asked == ["hooks.test"]
    assert got.headers["Host"] == f"hooks.test:{receiver.port}" and got.path == "/in"
