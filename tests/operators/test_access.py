"""Only staff reach the operators' pages."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from tests.factories import upload

PAGES = [
    "admin:execution_codeversion_changelist",
    "admin:execution_instance_changelist",
    "admin:execution_workflow_changelist",
    "admin:tenants_tenant_changelist",
    "admin:tenants_quota_changelist",
    "admin:tenants_apitoken_changelist",
    "admin:tenants_auditlog_changelist",
]


@pytest.mark.parametrize("name", PAGES)
def test_a_tenant_member_cannot_reach_the_admin(client, acme, name):
    client.force_login(get_user_model().objects.get(username="alice"))
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


def test_a_tenant_member_cannot_post_a_decision(client, acme):
    version = upload(acme, "wf", "def run(event, step):\n    return 1\n").version
    client.force_login(get_user_model().objects.get(username="alice"))
    url = reverse("admin:execution_codeversion_change", args=[version.pk])
    response = client.post(url, {"decision": "rejected", "reason": "mine now"})
    assert response.status_code == 302
    version.refresh_from_db()
    assert version.status == "approved"


def test_staff_without_the_permission_may_look_but_not_decide(client, acme):
    version = upload(acme, "wf", "def run(event, step):\n    return 1\n").version
    viewer = get_user_model().objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_codeversion"))
    client.force_login(viewer)
    url = reverse("admin:execution_codeversion_change", args=[version.pk])
    assert client.get(url).status_code == 200
    assert "Decision" not in client.get(url).content.decode()
    assert client.post(url, {"decision": "rejected", "reason": "x"}).status_code == 403
    version.refresh_from_db()
    assert version.status == "approved"
