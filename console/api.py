"""The HTTP API at /api/v1: its routers, its JSON parser and its error answers.

Every error is JSON with `detail`: 401 without a valid token, 403 for a read-only
token's writes, 404 for anything not the tenant's, 413 for a body over
STEPWELL_MAX_BODY_BYTES, 422 naming the field for malformed JSON or a wrong type,
429 naming the quota.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import HttpError, ValidationError
from ninja.parser import Parser

from execution.api import router as execution_router
from execution.event_api import router as event_router
from execution.quotas import QuotaExceeded
from execution.schedule_api import router as schedule_router
from execution.storable import json_problem
from tenants.api import router as tokens_router
from tenants.auth import TokenAuth
from tenants.secrets_api import router as secrets_router
from webhooks.api import router as webhooks_router

logger = logging.getLogger("stepwell.api")

DESCRIPTION = """\
Durable workflows for programs and agents. Authenticate with
`Authorization: Bearer <token>`; tokens are made with `POST /api/v1/tokens` or in
the console, and a read-only token may read and validate but not change anything.

Every error is JSON with a `detail` field: 401 missing, malformed, expired or
revoked token; 403 a read-only token asked to change something; 404 not found (or
another tenant's: the API never tells them apart); 409 the state does not allow
it; 413 a request body over the size limit, or a payload or event payload over
the tenant's payload quota; 422 malformed JSON or a field of the wrong type or
value (each problem with its `loc` and `field`), or invalid workflow code (each
problem with its `line` and `column`); 429 over a tenant quota (running
instances, instance starts per minute, events per minute, active tokens, secrets,
webhooks), with
`detail` naming it.

A step result over the tenant's result size quota is refused by the engine: the
step fails with an error saying so, visible in the instance's `steps`.
"""


class BodyTooLarge(Exception):
    pass


class MalformedBody(Exception):
    pass


def reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def is_empty_form(request) -> bool:
    """Some clients (Django's test client among them) send a POST without a body as an
    empty multipart form: that is no body, not malformed JSON."""
    return request.content_type == "multipart/form-data" and not request.POST and not request.FILES


class StrictJSONParser(Parser):
    """JSON only, within the size limit, and storable as it is."""

    def parse_body(self, request):
        limit = settings.STEPWELL_MAX_BODY_BYTES
        if len(request.body) > limit:
            raise BodyTooLarge(f"the request body is over the limit of {limit} bytes")
        if is_empty_form(request):
            return None  # an optional body is absent; a required one is 422 "missing"
        try:
            data = json.loads(request.body, parse_constant=reject_constant)
        except (ValueError, RecursionError) as exc:
            raise MalformedBody(f"malformed JSON: {exc}") from None
        if data is not None and not isinstance(data, dict):
            # Every body is an object (or null where it is optional): a schema whose fields
            # are all optional took a bare 1 or [] as no fields at all (a start with body 1
            # was 201).
            raise MalformedBody(f"the body is not a JSON object but {type(data).__name__}")
        problem = json_problem(data)
        if problem:
            raise MalformedBody(f"the body holds {problem}, which cannot be stored")
        return data


api = NinjaAPI(
    title="Stepwell API",
    version="1",
    description=DESCRIPTION,
    urls_namespace="api-v1",
    auth=TokenAuth(),
    docs_url="/docs",
    parser=StrictJSONParser(),
)
api.add_router("", execution_router)
api.add_router("", schedule_router)
api.add_router("", event_router)
api.add_router("", tokens_router)
api.add_router("", secrets_router)
api.add_router("", webhooks_router)


def detail(request, status: int, message):
    return api.create_response(request, {"detail": message}, status=status)


def body_error(message: str) -> list[dict]:
    return [{"type": "json_invalid", "loc": ["body"], "field": "", "msg": message}]


@api.exception_handler(Http404)
def not_found(request, exc):
    return detail(request, 404, str(exc) or "not found")


@api.exception_handler(HttpError)
def http_error(request, exc):
    # django-ninja wraps any failure to parse the body in a 400; say what it was.
    cause = exc.__cause__
    if isinstance(cause, BodyTooLarge):
        return detail(request, 413, str(cause))
    if exc.status_code == 400:
        return detail(request, 422, body_error(str(cause or exc)))
    return detail(request, exc.status_code, str(exc))


@api.exception_handler(ValidationError)
def invalid(request, exc):
    return detail(request, 422, [field_error(e) for e in exc.errors])


def field_error(error: dict) -> dict:
    loc = list(error.get("loc", ()))
    if loc[:2] == ["body", "body"]:  # django-ninja adds the name of the view's argument
        loc = loc[1:]
    return {
        "type": error.get("type", "value_error"),
        "loc": loc,
        "field": ".".join(str(p) for p in loc[1:]),
        "msg": error.get("msg", "invalid"),
    }


@api.exception_handler(RequestDataTooBig)
def too_big(request, exc):
    limit = min(settings.STEPWELL_MAX_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    return detail(request, 413, f"the request body is over the limit of {limit} bytes")


@api.exception_handler(QuotaExceeded)
def over_quota(request, exc):
    return detail(request, 429, str(exc))


@api.exception_handler(Exception)
def server_error(request, exc):
    # The request's headers (and so its token) stay out of the log.
    logger.exception("unhandled error in %s %s", request.method, request.path)
    return detail(request, 500, "internal error")
