"""The outbox: a status change writes its deliveries in its own transaction, one per
webhook that wants it, with the body fixed then; a tenant without webhooks writes none
and keeps the one-statement paths."""

import json

import pytest
from django.db import connection, transaction

from execution import workflows
from execution.api import instance_out
from execution.lifecycle import records, states
from execution.models import Instance
from tests.factories import WAITER, upload
from webhooks import deliveries
from webhooks.models import EVENTS, INSTANCE_STATUSES, Delivery, Webhook

TWO_STEPS = """
def run(event, step):
    a = step.do("one", lambda: 1)
    return {"n": step.do("two", lambda: a + 1)}
"""


def hook(tenant, *events, url="http://127.0.0.1:9/hook") -> Webhook:
    return Webhook.objects.create(tenant=tenant, url=url, events=list(events))


def start(tenant, code=TWO_STEPS, name="two"):
    workflow = upload(tenant, name, code).workflow
    return workflows.start_instance(workflow, payload={"x": 1})[0]


def test_the_event_names_are_the_instance_statuses():
    assert tuple(Instance.Status.values) == INSTANCE_STATUSES
    assert "instance.complete" in EVENTS


def test_each_wanted_change_gets_one_delivery_per_webhook_with_the_instance_as_then(
    driver, acme, globex
):
    every = hook(acme, *EVENTS)
    ends = hook(acme, "instance.complete", "instance.errored")
    hook(globex, *EVENTS)  # another tenant's: nothing of acme's goes there
    instance = driver.run(start(acme))
    assert instance.status == "complete"

    seen = list(
        Delivery.objects.filter(webhook=every).order_by("id").values_list("event", flat=True)
    )
    assert seen[0] == "instance.queued" and seen[-1] == "instance.complete"
    assert "instance.running" in seen
    (end,) = Delivery.objects.filter(webhook=ends)
    assert end.event == "instance.complete" and end.instance_key == instance.key
    assert end.instance_id == instance.pk and end.next_attempt_at is not None
    body = json.loads(end.body)
    expected = json.loads(json.dumps(instance_out(instance), default=str))
    del expected["steps"]
    assert body["type"] == "instance.complete" and set(body) == {"type", "instance"}
    assert body["instance"]["output"] == {"n": 2} and "steps" not in body["instance"]
    assert set(body["instance"]) == set(expected)
    assert body["instance"]["status"] == "complete" and body["instance"]["id"] == instance.key
    assert not Delivery.objects.filter(webhook__tenant__slug="globex").exists()


def test_the_first_body_is_fixed_when_the_change_happens(driver, acme):
    webhook = hook(acme, "instance.queued")
    instance = driver.run(start(acme))
    (queued,) = Delivery.objects.filter(webhook=webhook)
    assert json.loads(queued.body)["instance"]["status"] == "queued"
    assert json.loads(queued.body)["instance"]["output"] is None
    assert instance.status == "complete"


def test_a_tenant_without_webhooks_writes_no_delivery_and_keeps_the_fast_paths(
    driver, acme, monkeypatch
):
    calls = []
    for module, name in [
        (records, "finish_in_one_statement"),
        (workflows, "start_in_one_statement"),
    ]:
        original = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, _o=original, _n=name: calls.append(_n) or _o(*a)
        )
    hook(acme, "instance.paused")  # wants neither a start nor a completion
    instance = driver.run(start(acme))
    assert instance.status == "complete"
    assert not Delivery.objects.exists()
    if records.twins.hand_written():
        # acme's first start: its usage row is dry, a count, then the statement again.
        assert calls == ["start_in_one_statement"] * 2 + ["finish_in_one_statement"]


def test_a_listening_webhook_takes_the_transaction_paths_which_write_deliveries(
    driver, acme, monkeypatch
):
    hook(acme, "instance.queued", "instance.complete")
    # The start's and the end's one statements ask whether a webhook listens, and then
    # change nothing.
    portable, one_statement = [], []
    original = records.finish_portably
    monkeypatch.setattr(records, "finish_portably", lambda *a: portable.append(1) or original(*a))
    original_start = workflows.start_in_one_statement
    monkeypatch.setattr(
        workflows,
        "start_in_one_statement",
        lambda *a: one_statement.append(original_start(*a)) or one_statement[-1],
    )
    assert driver.run(start(acme)).status == "complete"
    assert Delivery.objects.count() == 2
    assert portable == [1]
    if connection.vendor == "postgresql":
        assert one_statement == [workflows.LISTENED]  # it stored nothing: the transaction did


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the condition is PostgreSQL's")
def test_the_end_statements_webhook_condition_agrees_with_listening(acme, globex):
    hook(acme, "instance.paused")
    hook(globex, "instance.complete", "instance.errored")
    for tenant in (acme, globex):
        for event in ("instance.complete", "instance.paused", "instance.running"):
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {deliveries.listening_condition()}", [tenant.pk, event])
                assert cursor.fetchone()[0] == bool(deliveries.listening(tenant.pk, event))


@pytest.mark.django_db(transaction=True)
def test_a_change_that_rolls_back_leaves_no_delivery(acme):
    webhook = hook(acme, "instance.paused")
    instance = start(acme, WAITER, "waiter")
    with pytest.raises(RuntimeError), transaction.atomic():
        locked = Instance.objects.select_for_update().get(pk=instance.pk)
        states.pause(locked, Instance.PauseReason.USER)
        assert Delivery.objects.filter(webhook=webhook).count() == 1
        raise RuntimeError("the change fails after its deliveries were written")
    assert not Delivery.objects.exists()
    instance.refresh_from_db()
    assert instance.status == "queued"


def test_pause_resume_and_terminate_each_announce_their_status(acme):
    webhook = hook(acme, *EVENTS)
    instance = start(acme, WAITER, "waiter")
    workflows.pause(instance)
    workflows.resume(instance)
    workflows.terminate(instance)
    events = list(
        Delivery.objects.filter(webhook=webhook).order_by("id").values_list("event", flat=True)
    )
    assert events == [
        "instance.queued",
        "instance.paused",
        "instance.queued",
        "instance.terminated",
    ]


def test_an_instance_with_the_longest_id_a_schedule_makes_gets_its_delivery(acme):
    """Platform-made ids (schedule:…, event:…) run to 250 characters, beyond a client's 100."""
    hook(acme, "instance.queued")
    workflow = upload(acme, "two", TWO_STEPS).workflow
    key = "schedule:" + "s" * 100 + ":20260101T120000Z" + "x" * 124
    instance = workflows.start_instance(workflow, payload={}, key=key)[0]
    assert len(instance.key) == 250
    assert Delivery.objects.get().instance_key == key
