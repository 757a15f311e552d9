"""Triggers and tenant-wide events: PUT, GET and DELETE triggers; POST /events starts each
triggered workflow once per event id, all or nothing against the quotas, with
moderation as for any start; bob sees and starts none of acme's."""

from execution.models import Instance, TenantEvent, Trigger
from tenants.models import AuditLog, Tenant
from tests.factories import WAITER, set_quota, upload


def trigger(api, workflow: str, event_type: str = "order.paid"):
    return api.call("put", f"/workflows/{workflow}/triggers/{event_type}", {})


def test_a_trigger_is_added_listed_and_removed(alice, waiter):
    status, made = trigger(alice, "waiter")
    assert status == 201 and (made["workflow"], made["event_type"]) == ("waiter", "order.paid")
    assert trigger(alice, "waiter")[0] == 200
    trigger(alice, "waiter", "a.first")
    status, page = alice.call("get", "/workflows/waiter/triggers?limit=1")
    assert status == 200 and [t["event_type"] for t in page["items"]] == ["a.first"]
    _, rest = alice.call("get", f"/workflows/waiter/triggers?cursor={page['next_cursor']}")
    assert [t["event_type"] for t in rest["items"]] == ["order.paid"]
    assert alice.request("delete", "/workflows/waiter/triggers/order.paid").status_code == 204
    assert alice.request("delete", "/workflows/waiter/triggers/order.paid").status_code == 404
    logged = AuditLog.objects.filter(target_type="trigger").values_list("action", flat=True)
    assert sorted(logged) == ["trigger.created", "trigger.created", "trigger.deleted"]


def test_an_event_starts_every_triggered_workflow_once_per_id(alice, acme, waiter):
    upload(acme, "second", WAITER)
    upload(acme, "untriggered", WAITER)
    trigger(alice, "waiter")
    trigger(alice, "second")
    body = {"type": "order.paid", "payload": {"order": 7}, "id": "evt-1"}
    status, answer = alice.call("post", "/events", body)
    assert status == 202
    assert answer["id"] == "evt-1" and answer["skipped"] == []
    assert answer["started"] == ["event:second:evt-1", "event:waiter:evt-1"]
    for key in answer["started"]:
        assert Instance.objects.get(key=key).payload == {"order": 7}
    again = alice.call("post", "/events", {**body, "payload": {"order": 8}})
    assert again == (202, answer)
    assert Instance.objects.count() == 2 and TenantEvent.objects.count() == 1


def test_an_event_without_an_id_gets_one(alice, waiter):
    trigger(alice, "waiter")
    status, answer = alice.call("post", "/events", {"type": "order.paid"})
    assert status == 202 and len(answer["id"]) == 32
    assert answer["started"] == [f"event:waiter:{answer['id']}"]
    assert alice.call("post", "/events", {"type": "nobody.listens"})[1]["started"] == []


def test_a_workflow_whose_version_is_not_approved_is_listed_in_skipped(alice, acme, waiter):
    trigger(alice, "waiter")
    acme.review_policy = Tenant.ReviewPolicy.MANUAL
    acme.save()
    upload(acme, "held", WAITER)
    trigger(alice, "held")
    status, answer = alice.call("post", "/events", {"type": "order.paid", "id": "e"})
    assert status == 202 and answer["started"] == ["event:waiter:e"]
    [skipped] = answer["skipped"]
    assert (skipped["workflow"], skipped["reason"]) == ("held", "not_approved")
    assert "pending_review" in skipped["detail"]


def test_the_starts_of_an_event_are_all_or_nothing_against_the_start_rate(alice, acme, waiter):
    upload(acme, "second", WAITER)
    trigger(alice, "waiter")
    trigger(alice, "second")
    set_quota(acme, instance_starts_per_minute=1)
    status, answer = alice.call("post", "/events", {"type": "order.paid", "id": "big"})
    assert status == 429 and "instance starts per minute quota" in answer["detail"]
    assert not Instance.objects.exists() and not TenantEvent.objects.exists()
    set_quota(acme, instance_starts_per_minute=2)
    status, answer = alice.call("post", "/events", {"type": "order.paid", "id": "big"})
    assert status == 202 and len(answer["started"]) == 2


def test_tenant_events_count_against_the_events_per_minute_quota(alice, acme):
    set_quota(acme, events_per_minute=2)
    for n in range(2):
        assert alice.call("post", "/events", {"type": "ping", "id": f"p{n}"})[0] == 202
    status, answer = alice.call("post", "/events", {"type": "ping", "id": "p2"})
    assert status == 429 and "events per minute quota" in answer["detail"]
    # An id already seen answers what it stored, quota or not.
    assert alice.call("post", "/events", {"type": "ping", "id": "p0"})[0] == 202


def test_over_the_triggers_quota_a_new_trigger_is_429(alice, acme, waiter):
    set_quota(acme, triggers=1)
    assert trigger(alice, "waiter", "one")[0] == 201
    status, answer = trigger(alice, "waiter", "two")
    assert status == 429 and "triggers quota" in answer["detail"]


def test_bad_events_and_triggers_are_422_naming_the_field(alice, waiter):
    cases = [
        ({"type": "no spaces"}, "type"),
        ({}, "type"),
        ({"type": "ok", "id": "not/this"}, "id"),
        ({"type": "ok", "payload": [1]}, "payload"),
    ]
    for body, field in cases:
        status, answer = alice.call("post", "/events", body)
        assert status == 422 and [e["field"] for e in answer["detail"]] == [field], body
    status, answer = alice.call("put", "/workflows/waiter/triggers/-bad", {})
    assert status == 422 and answer["detail"][0]["field"] == "event_type"


def test_bob_neither_sees_nor_starts_acmes_triggered_workflows(alice, bob, globex, waiter):
    trigger(alice, "waiter")
    assert bob.request("get", "/workflows/waiter/triggers").status_code == 404
    assert bob.request("delete", "/workflows/waiter/triggers/order.paid").status_code == 404
    assert bob.request("put", "/workflows/waiter/triggers/order.paid", {}).status_code == 404
    status, answer = bob.call("post", "/events", {"type": "order.paid", "id": "same"})
    assert status == 202 and answer["started"] == [] and not Instance.objects.exists()
    # The same event id is bob's own, and says nothing about acme's.
    status, answer = alice.call("post", "/events", {"type": "order.paid", "id": "same"})
    assert answer["started"] == ["event:waiter:same"]
    assert Trigger.objects.filter(tenant=globex).count() == 0
