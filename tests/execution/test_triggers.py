"""execution/triggers.py: one event id starts its workflows once, even sent at once."""

import threading

import pytest
from django.db import connection

from execution import triggers
from execution.models import Instance, TenantEvent
from tenants.models import Tenant


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks of PostgreSQL")
def test_the_same_event_id_sent_at_once_starts_each_workflow_once(driver, acme, waiter):
    triggers.add_trigger(waiter, "order.paid")
    senders = 4
    barrier = threading.Barrier(senders)
    answers, errors = [], []

    def send():
        try:
            tenant = Tenant.objects.get(pk=acme.pk)
            barrier.wait()
            event, _ = triggers.publish(tenant, "order.paid", {"n": 1}, "same")
            answers.append((event.key, event.started, event.skipped))
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert answers == [("same", ["event:waiter:same"], [])] * senders
    assert TenantEvent.objects.count() == 1
    assert list(Instance.objects.values_list("key", flat=True)) == ["event:waiter:same"]
