"""The console pages: what members see, what viewers cannot do, and bob's 404s."""

import pytest
from django.contrib.auth import get_user_model

from execution.models import CodeVersion, Instance
from execution.workflows import start_instance
from tenants.models import ApiToken, AuditLog, Membership
from tests.console.conftest import ORDER_FLOW
from tests.factories import set_quota, upload

BROKEN = "def run(event, step):\n    x = (\n    return 1\n"


@pytest.fixture
def orders(acme):
    return upload(acme, "orders", ORDER_FLOW).workflow


@pytest.fixture
def instance(orders):
    instance, _ = start_instance(orders, payload={"items": [1, 2]})
    return instance


def test_signing_in_leads_to_the_tenant_overview(acme, client):
    response = client.post("/login/", {"username": "alice", "password": "pw-alice-123!"})
    assert response.status_code == 302
    page = client.get("/")
    assert page.status_code == 200
    assert b"Quota usage" in page.content
    assert b"Acme" in page.content


def test_anonymous_visitors_are_sent_to_sign_in(client):
    response = client.get("/instances/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_a_user_without_a_tenant_is_told_so(db, client):
    user = get_user_model().objects.create_user("dave", password="pw-dave-123!")
    client.force_login(user)
    assert client.get("/").url == "/no-tenant/"
    assert b"not a member" in client.get("/no-tenant/").content


def test_the_tenant_switcher_changes_what_a_user_of_two_tenants_sees(alice, orders, globex):
    user = get_user_model().objects.get(username="alice")
    Membership.objects.create(tenant=globex, user=user)
    assert b"orders" in alice.get("/workflows/").content
    alice.post("/tenant/", {"tenant": "globex"})
    assert b"orders" not in alice.get("/workflows/").content
    assert alice.get("/workflows/orders/").status_code == 404
    assert alice.post("/tenant/", {"tenant": "nope"}).status_code == 404


@pytest.mark.parametrize(
    "wanted",
    [
        "https://evil.example/",
        "//evil.example/",
        "///evil.example/",
        "/\\evil.example/",
        "\\\\evil.example",
        "https:/evil.example",
        "javascript:alert(1)",
        " //evil.example",
        "",
    ],
)
def test_the_tenant_switcher_goes_home_rather_than_off_site(alice, globex, wanted):
    Membership.objects.create(tenant=globex, user=get_user_model().objects.get(username="alice"))
    response = alice.post("/tenant/", {"tenant": "globex", "next": wanted})
    assert (response.status_code, response.url) == (302, "/")


def test_the_tenant_switcher_returns_to_a_page_of_this_site(alice, globex):
    Membership.objects.create(tenant=globex, user=get_user_model().objects.get(username="alice"))
    response = alice.post("/tenant/", {"tenant": "globex", "next": "/instances/?status=failed"})
    assert response.url == "/instances/?status=failed"


def test_the_workflows_list_shows_the_current_version(alice, orders):
    page = alice.get("/workflows/")
    assert b"orders" in page.content
    assert orders.current_version.sha256[:12].encode() in page.content


def test_saving_code_makes_a_new_version(alice, acme):
    response = alice.post("/workflows/_new/", {"name": "greet", "code": ORDER_FLOW})
    assert response.status_code == 302
    assert response.url == "/workflows/greet/"
    assert CodeVersion.objects.filter(tenant=acme, workflow__name="greet").count() == 1


def test_invalid_code_is_refused_with_its_line(alice, acme):
    response = alice.post("/workflows/_new/", {"name": "greet", "code": BROKEN})
    assert response.status_code == 422
    assert response.context["errors"][0]["line"] in (2, 3)
    assert b'data-line="' in response.content
    assert not CodeVersion.objects.filter(tenant=acme).exists()


def test_a_py_file_can_be_uploaded(alice, acme):
    from django.core.files.uploadedfile import SimpleUploadedFile

    file = SimpleUploadedFile("flow.py", ORDER_FLOW.encode(), "text/x-python")
    response = alice.post("/workflows/_new/", {"name": "from-file", "code": "", "file": file})
    assert response.status_code == 302
    assert CodeVersion.objects.get(workflow__name="from-file").code == ORDER_FLOW


def test_the_editor_checks_code_without_saving(alice, acme):
    answer = alice.post("/workflows/_validate/", {"code": BROKEN}).json()
    assert answer["ok"] is False
    assert answer["errors"][0]["line"] in (2, 3)
    flagged = alice.post("/workflows/_validate/", {"code": "import socket\n" + ORDER_FLOW}).json()
    assert flagged["ok"] is True
    assert flagged["flags"][0]["line"] == 1


def test_the_history_diffs_two_versions_and_shows_moderation(alice, acme, orders):
    old = orders.current_version
    upload(acme, "orders", ORDER_FLOW.replace("cool-off", "rest"))
    CodeVersion.objects.filter(pk=old.pk).update(status="quarantined", status_reason="mines coins")
    page = alice.get("/workflows/orders/versions/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "mines coins" in text
    assert "quarantined" in text
    assert '<span class="d-del">-    step.sleep(&quot;cool-off&quot;' in text
    assert '<span class="d-add">+    step.sleep(&quot;rest&quot;' in text


def test_starting_an_instance_with_a_payload_opens_its_page(alice, orders):
    response = alice.post("/workflows/orders/start/", {"payload": '{"items": [4]}', "key": "o-1"})
    assert response.status_code == 302
    assert response.url == "/instances/o-1/"
    assert Instance.objects.get(key="o-1").payload == {"items": [4]}


def test_a_payload_that_is_not_a_json_object_is_refused(alice, orders):
    response = alice.post("/workflows/orders/start/", {"payload": "[1, 2"})
    assert response.status_code == 200
    assert b"not valid JSON" in response.content
    assert not Instance.objects.exists()


def test_the_instances_list_filters_by_status(alice, instance):
    assert instance.key.encode() in alice.get("/instances/").content
    assert instance.key.encode() in alice.get("/instances/?status=queued").content
    assert instance.key.encode() not in alice.get("/instances/?status=complete").content
    rows = alice.get("/instances/?partial=1&status=queued")
    assert rows.content.strip().startswith(b"<tr")


def test_the_instance_page_carries_the_instance_json(alice, instance):
    page = alice.get(f"/instances/{instance.key}/")
    assert page.status_code == 200
    assert page.context["data"]["id"] == instance.key
    assert page.context["data"]["seq"] == 1
    data = alice.get(f"/instances/{instance.key}/data/").json()
    assert data["status"] == "queued"
    assert data["payload"] == {"items": [1, 2]}


def test_an_event_can_be_sent_from_the_page(alice, instance):
    response = alice.post(
        f"/instances/{instance.key}/events/",
        {"type": "approved", "payload": '{"by": "alice"}'},
        headers={"x-requested-with": "fetch"},
    )
    assert response.status_code == 202
    assert instance.events.get().payload == {"by": "alice"}


@pytest.mark.parametrize(
    ("payload", "words"),
    [('{"by": "\\u0000"}', "a NUL character"), ("[NaN]", "a number that is not finite")],
)
def test_an_event_payload_that_cannot_be_stored_is_refused_saying_why(
    alice, instance, payload, words
):
    response = alice.post(
        f"/instances/{instance.key}/events/",
        {"type": "approved", "payload": payload},
        headers={"x-requested-with": "fetch"},
    )
    assert response.status_code == 400
    assert words in response.content.decode()
    assert not instance.events.exists()


def test_pause_resume_terminate_and_restart_call_the_engine(alice, instance):
    url = f"/instances/{instance.key}/"
    assert alice.post(url + "pause/").status_code == 302
    instance.refresh_from_db()
    assert instance.status == "paused"
    assert alice.post(url + "resume/", headers={"x-requested-with": "fetch"}).status_code == 200
    assert alice.post(url + "terminate/").status_code == 302
    instance.refresh_from_db()
    assert instance.status == "terminated"
    conflict = alice.post(url + "terminate/", headers={"x-requested-with": "fetch"})
    assert conflict.status_code == 409
    assert alice.post(url + "restart/").status_code == 302
    instance.refresh_from_db()
    assert instance.status == "queued"
    assert alice.post(url + "explode/").status_code == 404


def test_a_restart_from_the_page_is_held_to_the_running_quota_once(alice, acme, orders):
    set_quota(acme, running_instances=2)
    finished, _ = start_instance(orders, key="finished")
    alice.post("/instances/finished/terminate/")
    start_instance(orders, key="other")
    assert alice.post("/instances/finished/restart/").status_code == 302  # 2 of 2 running
    finished.refresh_from_db()
    assert finished.status == "queued"
    alice.post("/instances/other/terminate/")
    start_instance(orders, key="third")  # the one place left: the restart took one, not two
    alice.post("/instances/finished/terminate/")
    alice.post("/instances/other/restart/")
    refused = alice.post("/instances/finished/restart/", headers={"x-requested-with": "fetch"})
    assert refused.status_code == 429 and b"running instances quota" in refused.content


def test_starts_from_the_page_are_held_to_the_starts_per_minute_quota(alice, acme, orders):
    set_quota(acme, instance_starts_per_minute=2)
    url = f"/workflows/{orders.name}/start/"
    for _ in range(2):
        assert alice.post(url, {"payload": "{}"}).status_code == 302
    refused = alice.post(url, {"payload": "{}"})
    assert refused.status_code == 200 and b"instance starts per minute quota" in refused.content
    assert Instance.objects.filter(workflow=orders).count() == 2


def test_a_token_is_shown_once_and_audited(alice, acme):
    page = alice.post("/tokens/", {"name": "ci", "expires_in_days": "30"})
    raw = page.context["created"]
    assert raw.startswith("sw_")
    assert raw.encode() in page.content
    token = ApiToken.objects.get(tenant=acme, name="ci")
    assert token.expires_at is not None
    assert raw.encode() not in alice.get("/tokens/").content
    assert AuditLog.objects.filter(
        tenant=acme, action="token.created", target_type="token", target_id=str(token.pk)
    ).exists()
    assert alice.post(f"/tokens/{token.pk}/revoke/").status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditLog.objects.filter(action="token.revoked", target_id=str(token.pk)).exists()


def test_viewers_read_everything_and_change_nothing(carol, instance, orders):
    assert carol.get(f"/instances/{instance.key}/").status_code == 200
    assert carol.get("/workflows/orders/").status_code == 200
    edit = carol.post("/workflows/orders/", {"name": "orders", "code": ORDER_FLOW})
    assert edit.status_code == 403
    assert carol.post("/workflows/orders/start/", {"payload": "{}"}).status_code == 403
    assert carol.post(f"/instances/{instance.key}/pause/").status_code == 403
    assert carol.post(f"/instances/{instance.key}/events/", {"type": "x"}).status_code == 403
    assert carol.post("/tokens/", {"name": "mine"}).status_code == 403
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize(
    "path",
    [
        "/workflows/orders/",
        "/workflows/orders/versions/",
        "/workflows/orders/start/",
        "/instances/{key}/",
        "/instances/{key}/data/",
    ],
)
def test_bob_gets_404_for_acmes_pages(bob, instance, path):
    assert bob.get(path.format(key=instance.key)).status_code == 404


@pytest.mark.parametrize("action", ["events", "pause", "resume", "terminate", "restart"])
def test_bob_gets_404_for_acmes_instance_actions(bob, instance, action):
    response = bob.post(f"/instances/{instance.key}/{action}/", {"type": "approved"})
    assert response.status_code == 404
    instance.refresh_from_db()
    assert instance.status == "queued"
    assert not instance.events.exists()


def test_bob_gets_404_revoking_acmes_token(bob, acme):
    from tenants.tokens import create_token

    token, _ = create_token(acme, "acme-ci")
    assert bob.post(f"/tokens/{token.pk}/revoke/").status_code == 404
    assert bob.get("/tokens/").content.count(b"acme-ci") == 0
    token.refresh_from_db()
    assert token.revoked_at is None


def test_the_console_holds_token_creation_to_the_tenant_cap(alice, acme, settings):
    settings.STEPWELL_MAX_TOKENS_PER_TENANT = 2
    assert alice.post("/tokens/", {"name": "one"}).status_code == 200
    assert alice.post("/tokens/", {"name": "two"}).status_code == 200
    page = alice.post("/tokens/", {"name": "three"})
    assert b"the limit is 2" in page.content
    assert b"token-value" not in page.content
    assert set(ApiToken.objects.filter(tenant=acme).values_list("name", flat=True)) == {
        "one",
        "two",
    }
    assert AuditLog.objects.filter(tenant=acme, action="token.created").count() == 2


def test_bobs_lists_show_nothing_of_acme(bob, instance):
    assert instance.key.encode() not in bob.get("/instances/").content
    assert b"orders" not in bob.get("/workflows/").content


def test_the_start_form_says_which_quota_is_exhausted(alice, acme, orders):
    from tenants.models import Quota

    Quota.objects.filter(tenant=acme).update(running_instances=0)
    response = alice.post("/workflows/orders/start/", {"payload": "{}"})
    assert response.status_code == 200
    assert b"running instances quota" in response.content
    assert not Instance.objects.exists()


def test_the_quota_panel_counts_what_the_tenant_uses(alice, instance):
    meters = {m.label: m for m in alice.get("/").context["meters"]}
    assert meters["Unfinished instances"].used == 1
    assert meters["Starts in the last minute"].used == 1
    assert meters["Events in the last minute"].used == 0
