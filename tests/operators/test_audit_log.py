"""The audit log: read-only in the admin, and each tenant's own slice for its owners."""

import pytest
from django.urls import reverse

from tenants.audit import audit, audit_log_for
from tenants.models import AuditLog
from tests.factories import make_tenant

LOG = reverse("admin:tenants_auditlog_changelist")


@pytest.fixture
def entry(acme, operator):
    return audit(
        "tenant.suspended", actor=operator, tenant=acme, target=acme, reason="unpaid invoice"
    )


def test_the_audit_log_lists_who_when_what_and_why(staff_client, entry):
    html = staff_client.get(LOG).content.decode()
    assert "ops" in html and "tenant.suspended" in html and "unpaid invoice" in html
    assert staff_client.get(LOG, {"action": "tenant.suspended"}).status_code == 200
    assert staff_client.get(LOG, {"q": "unpaid"}).context["cl"].result_count == 1


def test_the_audit_log_cannot_be_added_to_changed_or_deleted(staff_client, entry):
    change = reverse("admin:tenants_auditlog_change", args=[entry.pk])
    assert staff_client.get(reverse("admin:tenants_auditlog_add")).status_code == 403
    assert staff_client.get(change).status_code == 200
    assert staff_client.post(change, {"reason": "nothing happened"}).status_code == 403
    delete = reverse("admin:tenants_auditlog_delete", args=[entry.pk])
    assert staff_client.get(delete).status_code == 403
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    response = staff_client.post(LOG, {"action": "delete_selected", "_selected_action": [entry.pk]})
    assert response.status_code == 200
    entry.refresh_from_db()
    assert entry.reason == "unpaid invoice"
    assert AuditLog.objects.count() == 1


def test_a_tenant_sees_only_its_own_audit_entries(acme, entry, operator):
    globex = make_tenant("globex", "bob")
    audit("tenant.suspended", actor=operator, tenant=globex, target=globex, reason="x")
    assert list(audit_log_for(acme)) == [entry]
