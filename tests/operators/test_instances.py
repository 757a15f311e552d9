"""Instances in the admin: read-only, with their steps, and a staff terminate."""

from django.urls import reverse

from execution import workflows
from tenants.models import AuditLog
from tests.factories import upload
from tests.operators.conftest import SLEEPER, post_action

INSTANCES = reverse("admin:execution_instance_changelist")


def sleeping(driver, tenant, name="sleeper"):
    return driver.run(workflows.start_instance(upload(tenant, name, SLEEPER).workflow)[0])


def test_an_instance_page_is_read_only_and_lists_its_steps(driver, staff_client, acme):
    instance = sleeping(driver, acme)
    url = reverse("admin:execution_instance_change", args=[instance.pk])
    response = staff_client.get(url)
    html = response.content.decode()
    assert response.status_code == 200
    assert "nap" in html and "one" in html
    assert 'name="_save"' not in html
    assert staff_client.post(url, {"status": "complete"}).status_code == 403
    instance.refresh_from_db()
    assert instance.status == "sleeping"


def test_terminating_asks_for_a_reason_first(driver, staff_client, acme):
    instance = sleeping(driver, acme)
    response = post_action(staff_client, INSTANCES, "terminate", [instance.pk])
    assert response.status_code == 200
    assert 'name="reason"' in response.content.decode()
    response = post_action(
        staff_client, INSTANCES, "terminate", [instance.pk], _with_reason="1", reason=" "
    )
    assert response.status_code == 200
    assert "A reason is required." in response.content.decode()
    instance.refresh_from_db()
    assert instance.status == "sleeping"
    assert not AuditLog.objects.exists()


def test_staff_terminate_an_instance_with_a_reason(driver, staff_client, operator, acme):
    instance = sleeping(driver, acme)
    response = post_action(
        staff_client, INSTANCES, "terminate", [instance.pk], _with_reason="1", reason="abuse #12"
    )
    assert response.status_code == 302
    instance.refresh_from_db()
    assert instance.status == "terminated"
    entry = AuditLog.objects.get(action="instance.terminated")
    assert (entry.actor, entry.tenant, entry.reason) == (operator, acme, "abuse #12")


def test_terminate_also_works_from_the_instance_page(driver, staff_client, acme):
    instance = sleeping(driver, acme)
    url = reverse("admin:execution_instance_change", args=[instance.pk])
    data = {"CHANGE_FORM-action": "terminate", "_selected_action": [str(instance.pk)]}
    first = staff_client.post(url, data)
    assert first.status_code == 200
    replayed = dict(first.context["replay"])
    assert replayed["CHANGE_FORM-action"] == "terminate"
    response = staff_client.post(url, {**data, "_with_reason": "1", "reason": "runaway loop"})
    assert response.status_code == 302 and response.url == url
    instance.refresh_from_db()
    assert instance.status == "terminated"
