"""Tenants in the admin: suspension, quotas with plan defaults, and token revocation."""

import json

from django.contrib.auth import get_user_model
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


def test_staff_may_change_the_retention_and_the_change_is_audited(staff_client, acme):
    quota = acme.quota_row
    url = reverse("admin:tenants_quota_change", args=[quota.pk])
    assert staff_client.post(url, quota_form(quota, retention_days="")).status_code == 302
    quota.refresh_from_db()
    assert quota.retention_days is None  # kept for ever
    entry = AuditLog.objects.get(action="quota.changed")
    assert entry.details == {"retention_days": [30, None]}


def test_an_unchanged_quota_save_writes_nothing(staff_client, acme):
    quota = acme.quota_row
    url = reverse("admin:tenants_quota_change", args=[quota.pk])
    assert staff_client.post(url, quota_form(quota)).status_code == 302
    assert not AuditLog.objects.exists()


def split(name: str, when) -> dict:
    """A datetime as the admin's two inputs."""
    when = timezone.localtime(when)
    return {f"{name}_0": when.strftime("%Y-%m-%d"), f"{name}_1": when.strftime("%H:%M:%S")}


def membership_row(membership: Membership | None = None, **fields) -> dict:
    """One row of the tenant page's membership inline: an existing membership's values,
    or a new row from `fields` alone."""
    if membership is not None:
        current = {"id": membership.pk, "user": membership.user_id, "role": membership.role}
        fields = {**current, **fields}
        when = membership.created_at
    else:
        when = timezone.now()
    return {**fields, **split("created_at", when)}


def tenant_page(tenant, rows: list[dict], review_policy=None, **quota_changes) -> dict:
    """The tenant's change page as a browser posts it: its fields, the quota inline, and
    `rows` as the membership inline (rows with an id first, as the page lists them)."""
    quota = tenant.quota_row
    data = {
        "slug": tenant.slug,
        "name": tenant.name,
        "review_policy": review_policy or tenant.review_policy,
        **split("created_at", tenant.created_at),
        "quota_row-TOTAL_FORMS": "1",
        "quota_row-INITIAL_FORMS": "1",
        "quota_row-0-id": str(quota.pk),
        "quota_row-0-tenant": str(tenant.pk),
        **{f"quota_row-0-{k}": v for k, v in quota_form(quota, **quota_changes).items()},
        "memberships-TOTAL_FORMS": str(len(rows)),
        "memberships-INITIAL_FORMS": str(sum("id" in row for row in rows)),
    }
    for i, row in enumerate(rows):
        data.update({f"memberships-{i}-{k}": str(v) for k, v in row.items()})
        data[f"memberships-{i}-tenant"] = str(tenant.pk)
    return data


def test_a_quota_edit_on_the_tenant_page_is_audited_too(staff_client, operator, acme):
    rows = [membership_row(Membership.objects.get(tenant=acme))]
    data = tenant_page(acme, rows, review_policy="manual", running_instances=5)
    response = staff_client.post(reverse("admin:tenants_tenant_change", args=[acme.pk]), data)
    assert response.status_code == 302, response.context["errors"]
    acme.refresh_from_db()
    assert acme.review_policy == "manual"
    entry = AuditLog.objects.get(action="quota.changed")
    assert (entry.actor, entry.details) == (operator, {"running_instances": [1000, 5]})
    policy = AuditLog.objects.get(action="tenant.changed")
    assert (policy.actor, policy.tenant, policy.target_type) == (operator, acme, "tenant")
    assert policy.details == {"review_policy": ["automatic", "manual"]}


def user(username: str):
    return get_user_model().objects.create_user(username, password=f"pw-{username}-123!")


def audited(tenant) -> set[tuple]:
    return {
        (e.action, e.actor.username, e.target_type, json.dumps(e.details, sort_keys=True))
        for e in AuditLog.objects.filter(tenant=tenant).select_related("actor")
    }


def entry(action: str, **details) -> tuple:
    return (action, "ops", "membership", json.dumps(details, sort_keys=True))


def test_membership_grants_changes_and_removals_on_the_tenant_page_are_audited(staff_client, acme):
    alice = Membership.objects.get(tenant=acme)
    carol = Membership.objects.create(tenant=acme, user=user("carol"), role="viewer")
    erin = Membership.objects.create(tenant=acme, user=user("erin"), role="developer")
    dave = user("dave")
    rows = [
        membership_row(alice),
        membership_row(carol, role="developer"),
        membership_row(erin, DELETE="on"),
        membership_row(user=dave.pk, role="owner"),
    ]
    url = reverse("admin:tenants_tenant_change", args=[acme.pk])
    response = staff_client.post(url, tenant_page(acme, rows))
    assert response.status_code == 302, response.context["errors"]
    roles = dict(Membership.objects.filter(tenant=acme).values_list("user__username", "role"))
    assert roles == {"alice": "owner", "carol": "developer", "dave": "owner"}
    assert audited(acme) == {
        entry("membership.changed", user="carol", role=["viewer", "developer"]),
        entry("membership.removed", user="erin", role="developer"),
        entry("membership.granted", user="dave", role="owner"),
    }
    assert AuditLog.objects.get(action="membership.removed").target_id == str(erin.pk)


def test_membership_grants_changes_and_removals_on_their_own_pages_are_audited(staff_client, acme):
    carol = user("carol")
    add = reverse("admin:tenants_membership_add")
    row = membership_row(user=carol.pk, role="viewer")
    response = staff_client.post(add, {"tenant": acme.pk, **row})
    assert response.status_code == 302, response.context["errors"]
    membership = Membership.objects.get(user=carol)
    change = reverse("admin:tenants_membership_change", args=[membership.pk])
    for _ in range(2):  # the second save changes nothing and writes nothing
        response = staff_client.post(change, membership_row(membership, role="owner"))
        assert response.status_code == 302, response.context["errors"]
    delete = reverse("admin:tenants_membership_delete", args=[membership.pk])
    assert staff_client.post(delete, {"post": "yes"}).status_code == 302
    assert not Membership.objects.filter(user=carol).exists()
    assert audited(acme) == {
        entry("membership.granted", user="carol", role="viewer"),
        entry("membership.changed", user="carol", role=["viewer", "owner"]),
        entry("membership.removed", user="carol", role="owner"),
    }


def test_removing_memberships_from_the_list_is_audited_for_each(staff_client, acme):
    memberships = [Membership.objects.create(tenant=acme, user=user(n)) for n in ("carol", "dave")]
    listing = reverse("admin:tenants_membership_changelist")
    pks = [m.pk for m in memberships]
    response = post_action(staff_client, listing, "delete_selected", pks, post="yes")
    assert response.status_code == 302
    assert Membership.objects.filter(tenant=acme).count() == 1
    assert audited(acme) == {
        entry("membership.removed", user="carol", role="developer"),
        entry("membership.removed", user="dave", role="developer"),
    }


def test_revoking_a_token_in_the_admin_stops_it_and_is_audited(staff_client, operator, acme):
    raw = make_token(acme, "ci")
    token = ApiToken.objects.get(name="ci")
    assert post_action(staff_client, TOKENS, "revoke", [token.pk]).status_code == 302
    assert authenticate_token(raw) is None
    entry = AuditLog.objects.get(action="token.revoked")
    assert (entry.actor, entry.tenant, entry.target_id) == (operator, acme, str(token.pk))
    assert entry.details == {"name": "ci", "prefix": token.prefix, "read_only": False}
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
