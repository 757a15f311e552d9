"""The console's secrets page: the tenant's secret names and dates, set (a write-only
field) and delete. Values go in and never come back out, as in the API."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from console.forms import SecretForm
from console.tenancy import tenant_required, writer_required
from tenants.audit import request_actor
from tenants.models import Secret
from tenants.secrets import SecretQuotaExceeded, SecretsNotConfigured, delete_secret, set_secret


@tenant_required
def secret_list(request):
    form = SecretForm(request.POST or None)
    if request.method == "POST":
        if not request.membership.can_write:
            return render(request, "console/forbidden.html", status=403)
        if form.is_valid():
            name = form.cleaned_data["name"]
            try:
                _, created = set_secret(
                    request.tenant, name, form.cleaned_data["value"], **request_actor(request)
                )
            except (SecretQuotaExceeded, SecretsNotConfigured) as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"{'Created' if created else 'Replaced'} {name}.")
                return redirect(reverse("secrets"))  # so no reload posts the value again
    secrets = Secret.objects.for_tenant(request.tenant).only("name", "created_at", "updated_at")
    return render(request, "console/secrets.html", {"form": form, "secrets": secrets})


@writer_required
@require_POST
def secret_delete(request, name):
    if delete_secret(request.tenant, name, **request_actor(request)):
        messages.success(request, f"Deleted {name}.")
    return redirect(reverse("secrets"))
