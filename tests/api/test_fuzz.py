"""Schemathesis against the live OpenAPI schema: no input gives a 500 or an off-schema answer.

Each operation gets a bounded number of generated requests, valid and invalid,
made with a real token of a tenant that has a workflow, an instance, a spare
token, a schedule and a trigger; about half the generated paths are pointed at those real objects.
"""

import zlib

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from execution.schedules import Spec, save_schedule
from execution.triggers import add_trigger
from execution.workflows import start_instance
from tenants.models import ApiToken
from tenants.secrets import set_secret
from tests.factories import make_token, upload
from webhooks import deliveries
from webhooks.models import Webhook

EXAMPLES_PER_OPERATION = 25

CODE = """
def run(event, step):
    got = step.wait_for_event("go", "go")
    return got
"""


def without_closing_connections(app):
    """As Django's test client does: requests must not close the connection that
    holds the test's transaction."""

    def wsgi(environ, start_response):
        signals.request_started.disconnect(close_old_connections)
        signals.request_finished.disconnect(close_old_connections)
        try:
            return app(environ, start_response)
        finally:
            signals.request_started.connect(close_old_connections)
            signals.request_finished.connect(close_old_connections)

    return wsgi


schema = schemathesis.openapi.from_wsgi(
    "/api/v1/openapi.json", without_closing_connections(get_wsgi_application())
)
schema.config.generation.update(
    max_examples=EXAMPLES_PER_OPERATION,
    no_shrink=True,
    deterministic=True,
    database="none",
    # The token is always a real one; bad tokens have their own tests.
    with_security_parameters=False,
)
# Schema-valid requests these operations refuse, with 422, for reasons a schema
# cannot say: code without a run(), an expiry in the past, a secret over its size in bytes,
# a restart from a step the instance does not have or on a version of another workflow,
# a schedule's cron or every that never fires or fires too often for the tenant's quota,
# a webhook URL whose host is not on the test's STEPWELL_WEBHOOK_HOSTS (127.0.0.1 and
# localhost: so no generated URL is ever resolved or called; nothing is sent here, as no
# sweep runs).
SEMANTIC_422 = {
    ("PUT", "/api/v1/workflows/{name}"),
    ("POST", "/api/v1/tokens"),
    ("PUT", "/api/v1/secrets/{name}"),
    ("PUT", "/api/v1/workflows/{name}/schedules/{schedule}"),
    ("POST", "/api/v1/instances/{id}/restart"),
    ("POST", "/api/v1/webhooks"),
}


def holds_nul(value) -> bool:
    """Whether a JSON value has a NUL character in any string or key. The API refuses
    those everywhere with 422 (PostgreSQL's text and jsonb cannot hold them), a rule a
    schema cannot state, so schema-valid bodies with one are not "valid data"."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    return False


@pytest.fixture
def fuzz_token(acme):
    return make_token(acme, "fuzzer")


@pytest.fixture
def real_objects(acme):
    workflow = upload(acme, "adder", CODE).workflow
    instance, _ = start_instance(workflow, payload={"x": 1}, key="job-1")
    spare = ApiToken.objects.get(prefix=make_token(acme, "spare")[:10])
    save_schedule(workflow, "nightly", Spec(cron="0 3 * * *"))
    add_trigger(workflow, "order.paid")
    set_secret(acme, "FUZZ_KEY", "a-real-secret-value")
    webhook = Webhook.objects.create(
        tenant=acme, url="http://127.0.0.1:9/hook", events=["instance.complete"]
    )
    deliveries.record([webhook.pk], "instance.complete", instance.pk, instance.key, "{}")
    return {
        "name": workflow.name,
        "instance": instance.key,
        "token": spare.pk,
        "schedule": "nightly",
        "event_type": "order.paid",
        "secret": "FUZZ_KEY",
        "sha256": workflow.current_version.sha256,
        "webhook": webhook.pk,
        "delivery": webhook.deliveries.get().pk,
    }


def point_at_real_objects(case, real: dict) -> None:
    """Swap about half the valid generated path parameters for the ids of real objects."""
    if case.meta and case.meta.is_negative_at(ParameterLocation.PATH):
        return
    params = dict(case.path_parameters or {})
    for key, value in params.items():
        if zlib.crc32(repr(value).encode()) % 2:
            continue
        if key == "name":
            params[key] = real["secret" if "/secrets/" in case.path else "name"]
        elif key == "delivery":
            params[key] = real["delivery"]
        elif key == "id":
            owner = {"/tokens/": "token", "/webhooks/": "webhook"}
            params[key] = real[next((v for k, v in owner.items() if k in case.path), "instance")]
        elif key in ("schedule", "event_type"):
            params[key] = real[key]
        elif key == "sha256":
            params[key] = real["sha256"]
    if params:
        case.path_parameters = params


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_500_or_an_answer_off_its_schema(case, fuzz_token, real_objects):
    point_at_real_objects(case, real_objects)
    excluded = []
    if (case.method.upper(), case.path) in SEMANTIC_422 or holds_nul(case.body):
        excluded.append(positive_data_acceptance)
    case.call_and_validate(
        headers={"Authorization": f"Bearer {fuzz_token}"}, excluded_checks=excluded
    )
