"""The webhook endpoints: a secret shown once, pages without secrets, 422s naming the
field, a count quota (429), deliveries newest first, resend, audit, and isolation."""

import base64

import pytest

from tenants.models import AuditLog
from tests.api.conftest import Api
from tests.factories import make_token
from webhooks import deliveries
from webhooks.models import MAX_ATTEMPTS, Delivery, Webhook

URL = "http://127.0.0.1:9/hook"
EVENTS = ["instance.complete", "instance.errored"]


def create(api: Api, url=URL, events=EVENTS):
    return api.call("post", "/webhooks", {"url": url, "events": events})


def deliveries_of(webhook_id: int, n: int) -> list[int]:
    for i in range(n):
        deliveries.record([webhook_id], "instance.complete", i, f"job-{i}", "{}")
    return list(Delivery.objects.filter(webhook_id=webhook_id).values_list("pk", flat=True))


def test_a_webhook_is_made_with_a_secret_shown_once(alice):
    status, made = create(alice)
    assert status == 201
    assert made["url"] == URL and made["events"] == EVENTS and made["created_at"]
    secret = made["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    assert Webhook.objects.get(pk=made["id"]).secret == secret
    status, page = alice.call("get", "/webhooks")
    assert status == 200 and page["next_cursor"] is None
    assert page["items"] == [{k: v for k, v in made.items() if k != "secret"}]
    assert secret not in str(page)


def test_creating_deleting_and_resending_are_audited_with_the_token(alice, acme):
    made = create(alice)[1]
    (pk,) = deliveries_of(made["id"], 1)
    path = f"/webhooks/{made['id']}/deliveries/{pk}/resend"
    assert alice.call("post", path)[0] == 202
    assert alice.request("delete", f"/webhooks/{made['id']}").status_code == 204
    entries = AuditLog.objects.filter(tenant=acme).order_by("id")
    assert [e.action for e in entries] == [
        "webhook.created",
        "webhook.delivery_resent",
        "webhook.deleted",
    ]
    assert all(e.actor_token is not None for e in entries)
    assert entries[0].details == {"url": URL, "events": EVENTS}
    assert made["secret"] not in str([e.details for e in entries])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://127.0.0.1/x", "events": EVENTS}, "url"),
        ({"url": "http://10.0.0.1/", "events": EVENTS}, "url"),  # not a listed host
        ({"url": "http://169.254.169.254/", "events": EVENTS}, "url"),
        ({"url": "", "events": EVENTS}, "url"),
        ({"url": URL, "events": []}, "events"),
        ({"url": URL, "events": ["instance.exploded"]}, "events"),
        ({"url": URL, "events": "instance.complete"}, "events"),
        ({"events": EVENTS}, "url"),
        ({"url": URL}, "events"),
    ],
)
def test_a_bad_webhook_is_a_422_naming_the_field(alice, body, field):
    status, answer = alice.call("post", "/webhooks", body)
    assert status == 422
    assert [p["field"] for p in answer["detail"]] == [field]
    assert not Webhook.objects.exists()


def test_a_host_that_resolves_to_a_private_address_is_refused_unless_allowed(alice, settings):
    settings.STEPWELL_WEBHOOK_ALLOW_PRIVATE = False
    status, answer = create(alice, url="http://localhost:8080/hook")
    assert status == 422 and "loopback or private" in answer["detail"][0]["msg"]
    settings.STEPWELL_WEBHOOK_ALLOW_PRIVATE = True
    assert create(alice, url="http://localhost:8080/hook")[0] == 201


def test_over_the_webhook_quota_is_a_429(alice, bob, settings):
    settings.STEPWELL_MAX_WEBHOOKS_PER_TENANT = 2
    assert [create(alice)[0] for _ in range(2)] == [201, 201]
    status, answer = create(alice)
    assert status == 429 and "at most 2" in answer["detail"]
    assert create(bob)[0] == 201  # a quota per tenant
    made = alice.call("get", "/webhooks")[1]["items"][0]
    alice.request("delete", f"/webhooks/{made['id']}")
    assert create(alice)[0] == 201


def test_deleting_a_webhook_drops_its_pending_deliveries(alice):
    made = create(alice)[1]
    deliveries_of(made["id"], 2)
    assert alice.request("delete", f"/webhooks/{made['id']}").status_code == 204
    assert not Delivery.objects.exists()
    assert alice.request("delete", f"/webhooks/{made['id']}").status_code == 404


def test_deliveries_come_newest_first_in_pages(alice):
    made = create(alice)[1]
    pks = deliveries_of(made["id"], 3)
    status, first = alice.call("get", f"/webhooks/{made['id']}/deliveries?limit=2")
    assert status == 200 and len(first["items"]) == 2
    rest = alice.call("get", f"/webhooks/{made['id']}/deliveries?cursor={first['next_cursor']}")
    ids = [d["id"] for d in first["items"] + rest[1]["items"]]
    assert ids == sorted(pks, reverse=True) and rest[1]["next_cursor"] is None
    item = first["items"][0]
    assert item["event"] == "instance.complete" and item["instance"] == "job-2"
    assert item["status"] == "pending" and item["attempts"] == 0
    assert item["status_code"] is None and item["error"] is None
    assert item["delivered_at"] is None and item["next_attempt_at"]


def test_a_bad_cursor_is_a_422_naming_it(alice):
    made = create(alice)[1]
    status, answer = alice.call("get", f"/webhooks/{made['id']}/deliveries?cursor=x")
    assert status == 422 and answer["detail"][0]["field"] == "cursor"


def test_resend_makes_a_finished_delivery_due_now(alice):
    made = create(alice)[1]
    (pk,) = deliveries_of(made["id"], 1)
    Delivery.objects.filter(pk=pk).update(next_attempt_at=None, attempts=13, error="gave up")
    status, answer = alice.call("post", f"/webhooks/{made['id']}/deliveries/{pk}/resend")
    assert status == 202 and answer["detail"]
    delivery = Delivery.objects.get(pk=pk)
    assert delivery.next_attempt_at is not None and delivery.max_attempts == 14


def test_bob_cannot_see_delete_or_resend_what_is_acmes(alice, bob):
    made = create(alice)[1]
    (pk,) = deliveries_of(made["id"], 1)
    assert bob.call("get", "/webhooks")[1] == {"items": [], "next_cursor": None}
    assert bob.request("get", f"/webhooks/{made['id']}/deliveries").status_code == 404
    assert bob.request("delete", f"/webhooks/{made['id']}").status_code == 404
    resend = f"/webhooks/{made['id']}/deliveries/{pk}/resend"
    assert bob.request("post", resend).status_code == 404
    # Nor through a webhook of his own.
    his = create(bob)[1]
    assert bob.request("post", f"/webhooks/{his['id']}/deliveries/{pk}/resend").status_code == 404
    assert Webhook.objects.filter(pk=made["id"]).exists()
    assert Delivery.objects.get(pk=pk).max_attempts == MAX_ATTEMPTS


def test_a_read_only_token_may_list_but_not_change(client, acme, alice):
    made = create(alice)[1]
    reader = Api(client, make_token(acme, "reader", read_only=True))
    assert reader.call("get", "/webhooks")[0] == 200
    assert create(reader)[0] == 403
    assert reader.request("delete", f"/webhooks/{made['id']}").status_code == 403
