"""The console's webhooks page: create (secret shown once), delete, the delivery log and
resend; audited; viewers read only; another tenant's webhooks are a 404."""

from django.contrib.auth import get_user_model

from tenants.models import AuditLog, Membership
from tests.console.conftest import client_for
from webhooks import deliveries
from webhooks.models import Delivery, Webhook

URL = "http://127.0.0.1:9/hook"


def make(client, url=URL, events=("instance.complete",)):
    return client.post("/webhooks/", {"url": url, "events": list(events)})


def test_a_webhook_is_made_on_the_page_with_its_secret_shown_once(alice, acme):
    page = make(alice)
    webhook = Webhook.objects.get(tenant=acme)
    assert page.status_code == 200 and page.context["created"] == webhook
    assert webhook.secret.encode() in page.content
    assert webhook.events == ["instance.complete"]
    listed = alice.get("/webhooks/")
    assert URL.encode() in listed.content and webhook.secret.encode() not in listed.content
    entry = AuditLog.objects.get(action="webhook.created")
    assert entry.actor.username == "alice" and entry.tenant == acme


def test_a_refused_url_is_shown_on_its_field(alice):
    page = make(alice, url="http://169.254.169.254/")
    assert page.status_code == 200 and not Webhook.objects.exists()
    assert "not one of STEPWELL_WEBHOOK_HOSTS" in page.context["form"].errors["url"][0]


def test_the_quota_is_shown_and_holds(alice, settings):
    settings.STEPWELL_MAX_WEBHOOKS_PER_TENANT = 1
    make(alice)
    page = make(alice)
    assert b"webhook quota exceeded" in page.content and Webhook.objects.count() == 1


def test_the_delivery_log_resend_and_delete(alice, acme):
    make(alice)
    webhook = Webhook.objects.get(tenant=acme)
    deliveries.record([webhook.pk], "instance.complete", 1, "job-1", "{}")
    delivery = Delivery.objects.get()
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=None, error="gave up")
    log = alice.get(f"/webhooks/{webhook.pk}/")
    assert log.status_code == 200 and b"job-1" in log.content and b"failed" in log.content
    resend = alice.post(f"/webhooks/{webhook.pk}/deliveries/{delivery.pk}/resend/")
    assert resend.status_code == 302
    assert Delivery.objects.get(pk=delivery.pk).next_attempt_at is not None
    assert alice.post(f"/webhooks/{webhook.pk}/delete/").status_code == 302
    assert not Webhook.objects.exists()
    actions = set(AuditLog.objects.values_list("action", flat=True))
    assert {"webhook.delivery_resent", "webhook.deleted"} <= actions


def test_bob_gets_404_for_acmes_webhook_and_its_deliveries(alice, bob, acme):
    make(alice)
    webhook = Webhook.objects.get(tenant=acme)
    deliveries.record([webhook.pk], "instance.complete", 1, "job-1", "{}")
    delivery = Delivery.objects.get()
    assert bob.get(f"/webhooks/{webhook.pk}/").status_code == 404
    assert bob.post(f"/webhooks/{webhook.pk}/delete/").status_code == 404
    resend = f"/webhooks/{webhook.pk}/deliveries/{delivery.pk}/resend/"
    assert bob.post(resend).status_code == 404
    assert URL.encode() not in bob.get("/webhooks/").content
    assert Webhook.objects.filter(pk=webhook.pk).exists()


def test_a_viewer_sees_the_page_but_changes_nothing(acme):
    carol = get_user_model().objects.create_user("carol")
    Membership.objects.create(tenant=acme, user=carol, role=Membership.Role.VIEWER)
    viewer = client_for("carol")
    assert viewer.get("/webhooks/").status_code == 200
    assert make(viewer).status_code == 403 and not Webhook.objects.exists()
