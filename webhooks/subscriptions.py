"""Creating and deleting a tenant's webhooks, and resending a delivery: each audited."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tenants.audit import audit
from tenants.models import Tenant
from webhooks import deliveries
from webhooks.addresses import check
from webhooks.models import Delivery, Webhook


class WebhookQuotaExceeded(Exception):
    """The tenant has the most webhooks allowed; the message names the limit."""


def create_webhook(tenant: Tenant, url: str, events: list[str], **actor) -> Webhook:
    """A new webhook of `url` for `events`, its secret made here. Refused (from
    webhooks.addresses) when the URL may not be used; WebhookQuotaExceeded at the limit.
    `actor` is tenants.audit.request_actor's."""
    check(url)  # before the transaction: resolving a name may take a while
    with transaction.atomic():
        # Two creations at once must not both take the last place.
        Tenant.objects.select_for_update(no_key=True).filter(pk=tenant.pk).first()
        limit = settings.STEPWELL_MAX_WEBHOOKS_PER_TENANT
        if Webhook.objects.filter(tenant=tenant).count() >= limit:
            raise WebhookQuotaExceeded(f"webhook quota exceeded: at most {limit} per tenant")
        webhook = Webhook.objects.create(
            tenant=tenant, url=url, events=list(dict.fromkeys(events)), created_at=timezone.now()
        )
        audit(
            "webhook.created",
            tenant=tenant,
            target=webhook,
            url=webhook.url,
            events=webhook.events,
            **actor,
        )
    return webhook


@transaction.atomic
def delete_webhook(webhook: Webhook, **actor) -> None:
    """The webhook and its deliveries, pending ones included, go."""
    audit("webhook.deleted", tenant=webhook.tenant, target=webhook, url=webhook.url, **actor)
    webhook.delete()


@transaction.atomic
def resend_delivery(delivery: Delivery, **actor) -> None:
    deliveries.resend(delivery)
    audit(
        "webhook.delivery_resent",
        tenant=delivery.webhook.tenant,
        target=delivery,
        webhook=delivery.webhook_id,
        event=delivery.event,
        instance=delivery.instance_key,
        **actor,
    )
