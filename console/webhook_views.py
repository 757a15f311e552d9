"""The console's webhooks page: list, create (its secret shown once), delete, and each
webhook's delivery log with a resend button. The rules are webhooks.subscriptions'."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from console.forms import WebhookForm
from console.tenancy import tenant_required, writer_required
from lib import pages
from tenants.audit import request_actor
from webhooks.addresses import Refused
from webhooks.api import delivery_out
from webhooks.models import Delivery, Webhook
from webhooks.subscriptions import (
    WebhookQuotaExceeded,
    create_webhook,
    delete_webhook,
    resend_delivery,
)

LOG_PAGE = 50


@tenant_required
def webhook_list(request):
    form = WebhookForm(request.POST or None)
    created = None
    if request.method == "POST":
        if not request.membership.can_write:
            return render(request, "console/forbidden.html", status=403)
        if form.is_valid():
            created = make_webhook(request, form)
            if created is not None:
                form = WebhookForm()
    webhooks = Webhook.objects.for_tenant(request.tenant)
    context = {"form": form, "webhooks": webhooks, "created": created}
    return render(request, "console/webhooks.html", context)


def make_webhook(request, form: WebhookForm) -> Webhook | None:
    """The new webhook, or None with the reason on the form."""
    try:
        return create_webhook(
            request.tenant,
            form.cleaned_data["url"],
            form.cleaned_data["events"],
            **request_actor(request),
        )
    except Refused as exc:
        form.add_error("url", str(exc))
    except WebhookQuotaExceeded as exc:
        form.add_error(None, str(exc))
    return None


def get_webhook(request, pk: int) -> Webhook:
    return get_object_or_404(Webhook.objects.for_tenant(request.tenant), pk=pk)


@writer_required
@require_POST
def webhook_delete(request, pk):
    webhook = get_webhook(request, pk)
    delete_webhook(webhook, **request_actor(request))
    messages.success(request, f"Deleted the webhook to {webhook.url}.")
    return redirect(reverse("webhooks"))


@tenant_required
def webhook_detail(request, pk):
    webhook = get_webhook(request, pk)
    try:
        log = pages.page(
            Delivery.objects.filter(webhook=webhook),
            LOG_PAGE,
            request.GET.get("cursor") or None,
            delivery_out,
        )
    except ValueError:
        log = pages.page(Delivery.objects.filter(webhook=webhook), LOG_PAGE, None, delivery_out)
    return render(request, "console/webhook_detail.html", {"webhook": webhook, "log": log})


@writer_required
@require_POST
def delivery_resend(request, pk, delivery):
    webhook = get_webhook(request, pk)
    found = get_object_or_404(Delivery.objects.filter(webhook=webhook), pk=delivery)
    found.webhook = webhook
    resend_delivery(found, **request_actor(request))
    messages.success(request, f"Delivery {found.pk} will be sent again now.")
    return redirect(reverse("webhook_detail", args=[webhook.pk]))
