"""A tenant's webhooks and their deliveries."""

from __future__ import annotations

import base64
import secrets

from django.db import models
from django.utils import timezone

from tenants.models import Tenant

SECRET_PREFIX = "whsec_"
# An instance's statuses (execution.models.Instance.Status, which this app may not import;
# tests/webhooks/test_subscriptions.py checks the two agree).
INSTANCE_STATUSES = (
    "queued",
    "running",
    "paused",
    "sleeping",
    "waiting",
    "complete",
    "errored",
    "terminated",
)
EVENTS = tuple(f"instance.{status}" for status in INSTANCE_STATUSES)
# Attempts of a delivery before it gives up (webhooks.deliveries.retry_delay: 28.5 hours).
MAX_ATTEMPTS = 13


def new_secret() -> str:
    """`whsec_` and the base64 of 32 random bytes, the Standard Webhooks form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class WebhookQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant) -> WebhookQuerySet:
        return self.filter(tenant=tenant)


class Webhook(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhooks")
    url = models.CharField(max_length=2000)
    # Event names (EVENTS); a JSON list, so that the same code runs on SQLite.
    events = models.JSONField(default=list)
    # Signing needs the key itself, so it cannot be stored as a hash. It is never shown
    # again after creation (API and console).
    secret = models.CharField(max_length=100, default=new_secret)
    created_at = models.DateTimeField(default=timezone.now)

    objects = WebhookQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="webhook_listing")]

    def __str__(self) -> str:
        return self.url


class DeliveryQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant) -> DeliveryQuerySet:
        return self.filter(webhook__tenant=tenant)


class Delivery(models.Model):
    """One event for one webhook. Its `id` is the `webhook-id` header of every attempt.

    Pending while `next_attempt_at` is set (the sweep sends it once that passes);
    delivered when `delivered_at` is set; failed when neither is (it gave up).
    """

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=50)
    # The instance, by id (retention deletes its deliveries with it) and by key (its
    # public id); no foreign key: this app sits below execution.
    instance_id = models.BigIntegerField(db_index=True)
    instance_key = models.CharField(max_length=250)  # execution.models.MAX_KEY_LENGTH
    # The JSON text sent, fixed when the change happened.
    body = models.TextField()
    attempts = models.PositiveIntegerField(default=0)
    # No attempt is made past this many; a resend of a finished delivery allows one more.
    max_attempts = models.PositiveIntegerField(default=MAX_ATTEMPTS)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["webhook", "-created_at", "-id"], name="delivery_log"),
            # The sweep's: pending deliveries only, by when they are due.
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due",
                condition=models.Q(next_attempt_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} of {self.instance_key} to webhook {self.webhook_id}"

    @property
    def state(self) -> str:
        if self.delivered_at is not None and self.next_attempt_at is None:
            return "delivered"
        if self.next_attempt_at is not None:
            return "pending"
        return "failed"
