"""Tenants in the admin: suspension, quotas with plan defaults, and token revocation."""

from django.forms.models import model_to_dict
from django.urls import reverse
from django.utils import timezone

from execution import workflows
from tenants.models import ApiToken, AuditLog, Membership, Quota
from tenants.tokens import authenticate_token
from tests.factories import make_token, upload
from tests.operators.conftest import SLEEPER, post_action

TENANTS = reverse("admin:tenants_tenant_changelist")
TOKENS = reverse("admin:tenants_apitoken_changelist")


def test_suspending_and_unsuspending_a_tenant_through_the_admin(driver, staff_client, acme):
    raw = make_token(acme)
    instance = driver.run(workflows.start_instance(upload(acme, "s", SLEEPER).workflow)[0])
    assert post_action(staff_client, TENANTS, "suspend", [acme.pk]).status_code == 200
    response = post_action(
        staff_client, TENANTS, "suspend", [acme.pk], _with_reason="1", reason="unpaid invoice"
    )
    assert response.status_code == 302
    acme.refresh_from_db()
    instance.refresh_from_db()
    assert acme.suspended_at is not None
    assert (instance.status, instance.paused_reason) == ("paused", "suspension")
    assert authenticate_token(raw) is None

    response = post_action(
        staff_client, TENANTS, "unsuspend", [acme.pk], _with_reason="1", reason="paid"
    )
    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.suspended_at is None
    assert driver.run(instance).status == "sleeping"
    assert authenticate_token(raw) is not None
    assert list(AuditLog.objects.order_by("id").values_list("action", "reason")) == [
        ("tenant.suspended", "unpaid invoice"),
        ("tenant.unsuspended", "paid"),
    ]


def test_suspending_without_a_reason_does_nothing(staff_client, acme):
    response = post_action(staff_client, TENANTS, "suspend", [acme.pk], _with_reason="1", reason="")
    assert response.status_code == 200
    acme.refresh_from_db()
    assert acme.suspended_at is None
    assert not AuditLog.objects.exists()


def quota_form(quota: Quota, **changes) -> dict:
    data = {**model_to_dict(quota, exclude=["id", "tenant"]), **changes}
    return {name: value for name, value in data.items() if value is not False}


def test_a_quota_edit_is_audited_with_old_and_new_values(staff_client, operator, acme):
    quota = acme.quota_row
    url = reverse("admin:tenants_quota_change", args=[quota.pk])
    assert "Plan default: 256" in staff_client.get(url).content.decode()
    response = staff_client.post(url, quota_form(quota, step_memory_mb=512, network=True))
    assert response.status_code == 302
    quota.refresh_from_db()
    assert (quota.step_memory_mb, quota.network) == (512, True)
    entry = AuditLog.objects.get(action="quota.changed")
    assert (entry.actor, entry.tenant, entry.target_type) == (operator, acme, "quota")
    assert entry.details == {"step_memory_mb": [256, 512], "network": [False, True]}


def test_an_unchanged_quota_save_writes_nothing(staff_client, acme):
    quota = acme.quota_row
    url = reverse("admin:tenants_quota_change", args=[quota.pk])
    assert staff_client.post(url, quota_form(quota)).status_code == 302
    assert not AuditLog.objects.exists()


def split(name: str, when) -> dict:
    """A datetime as the admin's two inputs."""
    when = timezone.localtime(when)
    return {f"{name}_0": when.strftime("%Y-%m-%d"), f"{name}_1": when.strftime("%H:%M:%S")}


def test_a_quota_edit_on_the_tenant_page_is_audited_too(staff_client, operator, acme):
    quota = acme.quota_row
    membership = Membership.objects.get(tenant=acme)
    data = {
        "slug": acme.slug,
        "name": acme.name,
        "review_policy": "manual",
        **split("created_at", acme.created_at),
        "quota_row-TOTAL_FORMS": "1",
        "quota_row-INITIAL_FORMS": "1",
        "quota_row-0-id": str(quota.pk),
        "quota_row-0-tenant": str(acme.pk),
        **{f"quota_row-0-{k}": v for k, v in quota_form(quota, running_instances=5).items()},
        "memberships-TOTAL_FORMS": "1",
        "memberships-INITIAL_FORMS": "1",
        "memberships-0-id": str(membership.pk),
        "memberships-0-tenant": str(acme.pk),
        "memberships-0-user": str(membership.user_id),
        "memberships-0-role": membership.role,
        **split("memberships-0-created_at", membership.created_at),
    }
    response = staff_client.post(reverse("admin:tenants_tenant_change", args=[acme.pk]), data)
    assert response.status_code == 302, response.context["errors"]
    acme.refresh_from_db()
    assert acme.review_policy == "manual"
    entry = AuditLog.objects.get(action="quota.changed")
    assert (entry.actor, entry.details) == (operator, {"running_instances": [1000, 5]})


def test_revoking_a_token_in_the_admin_stops_it_and_is_audited(staff_client, operator, acme):
    raw = make_token(acme, "ci")
    token = ApiToken.objects.get(name="ci")
    assert post_action(staff_client, TOKENS, "revoke", [token.pk]).status_code == 302
    assert authenticate_token(raw) is None
    entry = AuditLog.objects.get(action="token.revoked")
    assert (entry.actor, entry.tenant, entry.target_id) == (operator, acme, str(token.pk))
    assert entry.details == {"name": "ci", "prefix": token.prefix}
    # Revoking again changes nothing and records nothing.
    post_action(staff_client, TOKENS, "revoke", [token.pk])
    assert AuditLog.objects.filter(action="token.revoked").count() == 1


def test_tokens_are_read_only_in_the_admin(staff_client, acme):
    make_token(acme, "ci")
    token = ApiToken.objects.get(name="ci")
    url = reverse("admin:tenants_apitoken_change", args=[token.pk])
    html = staff_client.get(url).content.decode()
    assert token.token_hash not in html
    assert staff_client.post(url, {"name": "renamed"}).status_code == 403
    assert staff_client.get(reverse("admin:tenants_apitoken_add")).status_code == 403
    assert (
        staff_client.get(reverse("admin:tenants_apitoken_delete", args=[token.pk])).status_code
        == 403
    )
