"""GET /metrics (API.md, "Health") and the middleware that counts HTTP requests.

Access: a request from loopback that came through no proxy (no X-Forwarded-For), or one
with `Authorization: Bearer $STEPWELL_METRICS_TOKEN`. A proxy on the same machine makes
every request look local, which is why the header alone rules loopback out.
"""

from __future__ import annotations

import hmac
import ipaddress
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from execution.tenant_metrics import TenantCollector
from lib import metrics

# Requests that matched no URL share one label: raw paths would let any client mint series.
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def from_loopback(request: HttpRequest) -> bool:
    if "HTTP_X_FORWARDED_FOR" in request.META or "HTTP_FORWARDED" in request.META:
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def has_token(request: HttpRequest) -> bool:
    token = settings.STEPWELL_METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given, token)


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not (has_token(request) or from_loopback(request)):
        detail = "metrics are served to loopback, or with the metrics token"
        return JsonResponse({"detail": detail}, status=403)
    body, content_type = metrics.scrape([TenantCollector()])
    return HttpResponse(body, content_type=content_type)


def route_of(request: HttpRequest) -> str:
    """The URL pattern the request matched ("api/v1/instances/{id}"), not its path."""
    match = getattr(request, "resolver_match", None)
    return (match.route or match.view_name or UNMATCHED) if match is not None else UNMATCHED


class RequestMetrics:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        route = route_of(request)
        method = request.method if request.method in METHODS else "other"
        metrics.HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
        metrics.HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)
        return response
