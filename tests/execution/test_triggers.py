"""execution/triggers.py: one event id starts its workflows once, even sent at once."""

import pytest
from django.db import connection

from execution import triggers
from execution.models import Instance, TenantEvent
from tenants.models import Tenant
from tests.threads import at_once


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks of PostgreSQL")
def test_the_same_event_id_sent_at_once_starts_each_workflow_once(driver, acme, waiter):
    triggers.add_trigger(waiter, "order.paid")
    tenant = Tenant.objects.get(pk=acme.pk)

    def send():
        event, _ = triggers.publish(tenant, "order.paid", {"n": 1}, "same")
        return (event.key, event.started, event.skipped)

    answers, errors = at_once(4, send)
    assert errors == []
    assert answers == [("same", ["event:waiter:same"], [])] * 4
    assert TenantEvent.objects.count() == 1
    assert list(Instance.objects.values_list("key", flat=True)) == ["event:waiter:same"]
