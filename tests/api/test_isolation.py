"""Every route: bob of globex gets 404 for each object of acme and learns nothing from lists;
revoked, expired and malformed tokens get 401; a read-only token gets 403 on writes.

The tables below are checked against the live OpenAPI schema, so a new route
without an isolation test fails here.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from console.api import api
from execution.models import Schedule, Trigger
from execution.schedules import Spec, save_schedule
from execution.triggers import add_trigger
from execution.workflows import start_instance
from tenants.models import ApiToken
from tenants.secrets import set_secret, values_for
from tenants.tokens import create_token, revoke_token
from tests.api.conftest import Api
from tests.factories import make_token, upload
from webhooks import deliveries
from webhooks.models import Delivery, Webhook

ACME_SECRET = "acme-secret-value"
CODE = """
def run(event, step):
    return step.wait_for_event("go", "go")
"""

SCHEDULE = "/workflows/{name}/schedules/{schedule}"
TRIGGER = "/workflows/{name}/triggers/{event_type}"
HOOK_URL = "http://127.0.0.1:9/hook"
HOOK_EVENTS = ["instance.complete"]

# Each route, with a request for acme's objects: (method, path, body).
REQUESTS = {
    ("GET", "/workflows"): ("get", "/workflows", None),
    ("PUT", "/workflows/{name}"): ("put", "/workflows/adder", {"code": CODE}),
    ("GET", "/workflows/{name}"): ("get", "/workflows/adder", None),
    ("GET", "/workflows/{name}/versions/{sha256}"): (
        "get",
        "/workflows/adder/versions/{acme_sha}",
        None,
    ),
    ("POST", "/workflows/{name}/validate"): ("post", "/workflows/adder/validate", {"code": CODE}),
    ("POST", "/workflows/{name}/instances"): ("post", "/workflows/adder/instances", {}),
    ("GET", "/instances"): ("get", "/instances", None),
    ("GET", "/instances/{id}"): ("get", "/instances/secret", None),
    ("POST", "/instances/{id}/events"): ("post", "/instances/secret/events", {"type": "go"}),
    ("GET", "/instances/{id}/events"): ("get", "/instances/secret/events", None),
    ("POST", "/instances/{id}/pause"): ("post", "/instances/secret/pause", None),
    ("POST", "/instances/{id}/resume"): ("post", "/instances/secret/resume", None),
    ("POST", "/instances/{id}/terminate"): ("post", "/instances/secret/terminate", None),
    ("POST", "/instances/{id}/restart"): ("post", "/instances/secret/restart", None),
    ("POST", "/instances/{id}/rerun"): ("post", "/instances/secret/rerun", {}),
    ("GET", "/instances/{id}/history"): ("get", "/instances/secret/history", None),
    ("GET", "/instances/{id}/runs"): ("get", "/instances/secret/runs", None),
    ("GET", "/tokens"): ("get", "/tokens", None),
    ("POST", "/tokens"): ("post", "/tokens", {"name": "mine"}),
    ("DELETE", "/tokens/{id}"): ("delete", "/tokens/{acme_token}", None),
    ("PUT", SCHEDULE): ("put", "/workflows/adder/schedules/nightly", {"every": 60}),
    ("DELETE", SCHEDULE): ("delete", "/workflows/adder/schedules/nightly", None),
    ("GET", "/schedules"): ("get", "/schedules", None),
    ("GET", "/schedules/{schedule}/fires"): ("get", "/schedules/nightly/fires", None),
    ("PUT", TRIGGER): ("put", "/workflows/adder/triggers/order.paid", {}),
    ("GET", "/workflows/{name}/triggers"): ("get", "/workflows/adder/triggers", None),
    ("DELETE", TRIGGER): ("delete", "/workflows/adder/triggers/order.paid", None),
    ("POST", "/events"): ("post", "/events", {"type": "order.paid"}),
    ("GET", "/secrets"): ("get", "/secrets", None),
    ("PUT", "/secrets/{name}"): ("put", "/secrets/ACME_KEY", {"value": "bobs-value-1"}),
    ("DELETE", "/secrets/{name}"): ("delete", "/secrets/ACME_KEY", None),
    ("GET", "/webhooks"): ("get", "/webhooks", None),
    ("POST", "/webhooks"): ("post", "/webhooks", {"url": HOOK_URL, "events": HOOK_EVENTS}),
    ("DELETE", "/webhooks/{id}"): ("delete", "/webhooks/{acme_webhook}", None),
    ("GET", "/webhooks/{id}/deliveries"): ("get", "/webhooks/{acme_webhook}/deliveries", None),
    ("POST", "/webhooks/{id}/deliveries/{delivery}/resend"): (
        "post",
        "/webhooks/{acme_webhook}/deliveries/{acme_delivery}/resend",
        None,
    ),
}
# Routes that name one object of acme: bob gets 404.
NOT_FOUND_FOR_BOB = {
    ("GET", "/workflows/{name}"),
    ("GET", "/workflows/{name}/versions/{sha256}"),
    ("GET", "/instances/{id}/events"),
    ("POST", "/workflows/{name}/instances"),
    ("GET", "/instances/{id}"),
    ("POST", "/instances/{id}/events"),
    ("POST", "/instances/{id}/pause"),
    ("POST", "/instances/{id}/resume"),
    ("POST", "/instances/{id}/terminate"),
    ("POST", "/instances/{id}/restart"),
    ("POST", "/instances/{id}/rerun"),
    ("GET", "/instances/{id}/history"),
    ("GET", "/instances/{id}/runs"),
    ("DELETE", "/tokens/{id}"),
    ("PUT", SCHEDULE),
    ("DELETE", SCHEDULE),
    ("GET", "/schedules/{schedule}/fires"),
    ("PUT", TRIGGER),
    ("GET", "/workflows/{name}/triggers"),
    ("DELETE", TRIGGER),
    ("DELETE", "/secrets/{name}"),
    ("DELETE", "/webhooks/{id}"),
    ("GET", "/webhooks/{id}/deliveries"),
    ("POST", "/webhooks/{id}/deliveries/{delivery}/resend"),
}
WRITES = {
    ("PUT", "/workflows/{name}"),
    ("POST", "/workflows/{name}/instances"),
    ("POST", "/instances/{id}/events"),
    ("POST", "/instances/{id}/pause"),
    ("POST", "/instances/{id}/resume"),
    ("POST", "/instances/{id}/terminate"),
    ("POST", "/instances/{id}/restart"),
    ("POST", "/instances/{id}/rerun"),
    ("POST", "/tokens"),
    ("DELETE", "/tokens/{id}"),
    ("PUT", SCHEDULE),
    ("DELETE", SCHEDULE),
    ("PUT", TRIGGER),
    ("DELETE", TRIGGER),
    ("POST", "/events"),
    ("PUT", "/secrets/{name}"),
    ("DELETE", "/secrets/{name}"),
    ("POST", "/webhooks"),
    ("DELETE", "/webhooks/{id}"),
    ("POST", "/webhooks/{id}/deliveries/{delivery}/resend"),
}


def schema_routes() -> set[tuple[str, str]]:
    paths = api.get_openapi_schema(path_prefix="")["paths"]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops}


@pytest.fixture
def acme_objects(acme):
    workflow = upload(acme, "adder", CODE).workflow
    instance, _ = start_instance(workflow, payload={"secret": "acme's"}, key="secret")
    token, _ = create_token(acme, "acme's deploy key")
    save_schedule(workflow, "nightly", Spec(every=3600))
    add_trigger(workflow, "order.paid")
    set_secret(acme, "ACME_KEY", ACME_SECRET)
    webhook = Webhook.objects.create(tenant=acme, url=HOOK_URL, events=HOOK_EVENTS)
    deliveries.record([webhook.pk], "instance.complete", instance.pk, instance.key, "{}")
    return {
        "workflow": workflow,
        "instance": instance,
        "token": token,
        "webhook": webhook,
        "delivery": webhook.deliveries.get(),
    }


def send(api_client: Api, route, acme_objects):
    method, path, body = REQUESTS[route]
    return api_client.request(method, acme_path(path, acme_objects), body)


def acme_path(path: str, acme_objects) -> str:
    sha = acme_objects["workflow"].current_version.sha256
    return path.format(
        acme_token=acme_objects["token"].pk,
        acme_sha=sha,
        acme_webhook=acme_objects["webhook"].pk,
        acme_delivery=acme_objects["delivery"].pk,
    )


def test_every_route_has_an_isolation_test():
    assert set(REQUESTS) == schema_routes()
    assert schema_routes() >= NOT_FOUND_FOR_BOB and schema_routes() >= WRITES


@pytest.mark.parametrize("route", sorted(NOT_FOUND_FOR_BOB))
def test_bob_gets_404_for_each_object_of_acme(bob, acme, acme_objects, route):
    response = send(bob, route, acme_objects)
    assert response.status_code == 404
    assert "acme" not in response.content.decode()
    instance = acme_objects["instance"]
    instance.refresh_from_db()
    assert instance.status == "queued" and not instance.events.exists()
    assert ApiToken.objects.get(pk=acme_objects["token"].pk).revoked_at is None
    schedule = Schedule.objects.get()
    assert (schedule.tenant, schedule.every) == (acme_objects["workflow"].tenant, 3600)
    assert Trigger.objects.get().event_type == "order.paid"
    assert values_for(acme.pk) == {"ACME_KEY": ACME_SECRET}
    assert Webhook.objects.filter(pk=acme_objects["webhook"].pk).exists()
    delivery = acme_objects["delivery"]
    assert Delivery.objects.get(pk=delivery.pk).next_attempt_at == delivery.next_attempt_at


def test_bob_sees_none_of_acme_in_any_list(bob, acme_objects):
    assert bob.call("get", "/workflows") == (200, [])
    assert bob.call("get", "/instances") == (200, {"items": [], "next_cursor": None})
    assert bob.call("get", "/instances?workflow=adder") == (200, {"items": [], "next_cursor": None})
    assert bob.call("get", "/schedules") == (200, {"items": [], "next_cursor": None})
    names = {t["name"] for t in bob.call("get", "/tokens")[1]}
    assert names == {"bob's"}
    assert bob.call("get", "/secrets") == (200, {"items": [], "next_cursor": None})
    assert bob.call("get", "/webhooks") == (200, {"items": [], "next_cursor": None})


def test_bobs_writes_under_acmes_names_touch_only_globex(bob, globex, acme_objects):
    status, body = bob.call("put", "/workflows/adder", {"code": CODE + "\n"})
    assert status == 201 and [
        v["sha256"] for v in bob.call("get", "/workflows/adder")[1]["versions"]
    ] == [body["version"]["sha256"]]
    assert acme_objects["workflow"].versions.count() == 1
    # The same instance id is bob's own, and says nothing about acme's.
    status, inst = bob.call("post", "/workflows/adder/instances", {"id": "secret"})
    assert status == 201 and inst["payload"] == {}
    made = bob.call("post", "/tokens", {"name": "mine"})[1]
    assert ApiToken.objects.get(pk=made["id"]).tenant == globex
    assert bob.call("put", "/secrets/ACME_KEY", {"value": "bobs-value-1"})[0] == 201
    assert values_for(globex.pk) == {"ACME_KEY": "bobs-value-1"}
    assert values_for(acme_objects["workflow"].tenant_id) == {"ACME_KEY": ACME_SECRET}


def test_validate_answers_the_same_whether_or_not_acme_has_the_workflow(bob, acme_objects):
    ours = bob.call("post", "/workflows/adder/validate", {"code": CODE})
    unknown = bob.call("post", "/workflows/nobody-has-this/validate", {"code": CODE})
    assert ours == unknown == (200, {"ok": True, "errors": [], "flags": []})


def bad_tokens(acme) -> dict[str, str]:
    revoked, raw_revoked = create_token(acme, "revoked")
    revoke_token(revoked)
    _, raw_expired = create_token(acme, "expired", expires_at=timezone.now() - timedelta(1))
    return {
        "revoked": raw_revoked,
        "expired": raw_expired,
        "malformed": "sw_" + "!" * 40,
        "unknown": "sw_" + "a" * 43,
        "not ours": "ghp_0123456789",
    }


@pytest.mark.parametrize("route", sorted(REQUESTS))
def test_revoked_expired_and_malformed_tokens_get_401_on_every_route(
    client, acme, acme_objects, route
):
    for kind, raw in bad_tokens(acme).items():
        response = send(Api(client, raw), route, acme_objects)
        assert (kind, response.status_code) == (kind, 401)
        assert response.json() == {"detail": "Unauthorized"}
    method, path, _ = REQUESTS[route]
    anonymous = getattr(client, method)("/api/v1" + acme_path(path, acme_objects))
    assert anonymous.status_code == 401


@pytest.mark.parametrize("route", sorted(WRITES))
def test_a_read_only_token_gets_403_on_every_write(client, acme, acme_objects, route):
    reader = Api(client, make_token(acme, "reader", read_only=True))
    response = send(reader, route, acme_objects)
    assert response.status_code == 403
    assert response.json() == {"detail": "this token is read-only"}


@pytest.mark.parametrize("route", sorted(set(REQUESTS) - WRITES))
def test_a_read_only_token_may_use_every_other_route(client, acme, acme_objects, route):
    reader = Api(client, make_token(acme, "reader", read_only=True))
    assert send(reader, route, acme_objects).status_code == 200
