"""The webhook endpoints of API.md (`/api/v1/webhooks`)."""

from __future__ import annotations

from datetime import datetime

from django.http import Http404, HttpRequest
from ninja import Path, Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import Field, field_validator

from lib import pages
from lib.api_errors import AUTH_ERRORS, WRITE_ERRORS, Detail, FieldErrorsOut
from tenants.audit import request_actor
from tenants.auth import require_write
from webhooks.addresses import Refused
from webhooks.models import EVENTS, Delivery, Webhook
from webhooks.subscriptions import (
    WebhookQuotaExceeded,
    create_webhook,
    delete_webhook,
    resend_delivery,
)

router = Router(tags=["webhooks"])

NOT_FOUND = {404: Detail}


class WebhookIn(Schema):
    url: str = Field(
        min_length=1,
        max_length=2000,
        description="http(s); its host must not resolve to a loopback, private, "
        "link-local or metadata address",
    )
    events: list[str] = Field(
        min_length=1,
        max_length=len(EVENTS),
        description="instance.{status}: " + ", ".join(EVENTS),
    )

    @field_validator("events")
    @classmethod
    def known_events(cls, value: list[str]) -> list[str]:
        unknown = [e for e in value if e not in EVENTS]
        if unknown:
            raise ValueError(f"unknown events {unknown}; known: {', '.join(EVENTS)}")
        return value


class WebhookOut(Schema):
    id: int
    url: str
    events: list[str]
    created_at: datetime


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="whsec_…: the signing key (Standard Webhooks); shown this once")


class WebhookPageOut(Schema):
    items: list[WebhookOut]
    next_cursor: str | None


class DeliveryOut(Schema):
    id: int = Field(description="the webhook-id header of every attempt")
    event: str
    instance: str = Field(description="the instance id")
    status: str = Field(description="pending, delivered or failed (gave up)")
    attempts: int
    status_code: int | None = Field(description="of the last attempt; null: no answer")
    delivered_at: datetime | None
    next_attempt_at: datetime | None
    error: str | None = Field(description="what went wrong in the last attempt")
    created_at: datetime


class DeliveryPageOut(Schema):
    items: list[DeliveryOut]
    next_cursor: str | None


class PageQuery(Schema):
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(
        default=None, pattern=pages.CURSOR_PATTERN, description="a next_cursor"
    )

    @field_validator("cursor")
    @classmethod
    def cursor_is_a_position(cls, value: str | None) -> str | None:
        if value is not None:
            pages.decode(value)  # a ValueError is a 422 naming the field
        return value


ID = Field(ge=1, lt=2**63)


class WebhookPath(Schema):
    id: int = ID


class DeliveryPath(Schema):
    id: int = ID
    delivery: int = ID


class AcceptedOut(Schema):
    detail: str


def webhook_out(webhook: Webhook) -> dict:
    return {
        "id": webhook.pk,
        "url": webhook.url,
        "events": webhook.events,
        "created_at": webhook.created_at,
    }


def delivery_out(delivery: Delivery) -> dict:
    return {
        "id": delivery.pk,
        "event": delivery.event,
        "instance": delivery.instance_key,
        "status": delivery.state,
        "attempts": delivery.attempts,
        "status_code": delivery.status_code,
        "delivered_at": delivery.delivered_at,
        "next_attempt_at": delivery.next_attempt_at,
        "error": delivery.error or None,
        "created_at": delivery.created_at,
    }


def url_refused(message: str) -> dict:
    return {
        "detail": [{"type": "value_error", "loc": ["body", "url"], "field": "url", "msg": message}]
    }


def get_webhook(request: HttpRequest, pk: int) -> Webhook:
    webhook = Webhook.objects.for_tenant(request.auth.tenant).filter(pk=pk).first()
    if webhook is None:
        raise Http404(f"no webhook {pk}")
    return webhook


@router.post(
    "/webhooks", response={201: WebhookCreatedOut, **WRITE_ERRORS, 422: FieldErrorsOut, 429: Detail}
)
def create_webhook_route(request, body: WebhookIn):
    """A webhook: a signed `POST url` for each status change of the tenant's instances
    named in `events`. The answer's `secret` is shown only here. 422 (naming `url`) for
    a URL that may not be used; 429 over the tenant's webhook quota."""
    require_write(request)
    try:
        webhook = create_webhook(
            request.auth.tenant, body.url, body.events, **request_actor(request)
        )
    except Refused as exc:
        return Status(422, url_refused(str(exc)))
    except WebhookQuotaExceeded as exc:
        raise HttpError(429, str(exc)) from exc
    return Status(201, {**webhook_out(webhook), "secret": webhook.secret})


@router.get("/webhooks", response={200: WebhookPageOut, **AUTH_ERRORS})
def list_webhooks(request, query: Query[PageQuery]):
    """The tenant's webhooks, newest first, without their secrets."""
    qs = Webhook.objects.for_tenant(request.auth.tenant)
    return pages.page(qs, query.limit, query.cursor, webhook_out)


@router.delete("/webhooks/{id}", response={204: None, **AUTH_ERRORS, 403: Detail, **NOT_FOUND})
def delete_webhook_route(request, path: Path[WebhookPath]):
    """Delete the webhook; its pending deliveries are not sent."""
    require_write(request)
    delete_webhook(get_webhook(request, path.id), **request_actor(request))
    return Status(204, None)


@router.get(
    "/webhooks/{id}/deliveries", response={200: DeliveryPageOut, **AUTH_ERRORS, **NOT_FOUND}
)
def list_deliveries(request, path: Path[WebhookPath], query: Query[PageQuery]):
    """The webhook's deliveries, newest first: each with its attempts, the last answer's
    status code or error, and when it is tried next (null once delivered or given up)."""
    qs = Delivery.objects.filter(webhook=get_webhook(request, path.id))
    return pages.page(qs, query.limit, query.cursor, delivery_out)


@router.post(
    "/webhooks/{id}/deliveries/{delivery}/resend",
    response={202: AcceptedOut, **AUTH_ERRORS, 403: Detail, **NOT_FOUND},
)
def resend_route(request, path: Path[DeliveryPath]):
    """One more attempt of the delivery, now (within the clock's next sweep), with the
    same `webhook-id` and its body as first fixed."""
    require_write(request)
    webhook = get_webhook(request, path.id)
    delivery = Delivery.objects.filter(webhook=webhook, pk=path.delivery).first()
    if delivery is None:
        raise Http404(f"no delivery {path.delivery}")
    delivery.webhook = webhook
    resend_delivery(delivery, **request_actor(request))
    return Status(202, {"detail": "one more attempt is due now"})
