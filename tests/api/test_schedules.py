"""The schedule endpoints: PUT (201, 200, 409, 422 naming the field, 429), the pages of
schedules and fires, DELETE, the audit log, and bob seeing none of acme's."""

from datetime import UTC, datetime

from execution import schedules
from execution.models import Schedule
from tenants.models import AuditLog
from tests.factories import WAITER, set_quota, upload

PATH = "/workflows/waiter/schedules/nightly"


def test_a_schedule_is_created_then_replaced(alice, waiter):
    status, made = alice.call("put", PATH, {"cron": "0 3 * * *", "timezone": "Europe/Paris"})
    assert status == 201
    assert made["name"] == "nightly" and made["workflow"] == "waiter"
    assert (made["cron"], made["every"], made["timezone"]) == ("0 3 * * *", None, "Europe/Paris")
    assert (made["overlap"], made["paused"], made["payload"]) == ("skip", False, {})
    fires_at = datetime.fromisoformat(made["next_fire_at"])
    assert fires_at.astimezone(UTC).hour in (1, 2) and made["last_fire_at"] is None
    status, replaced = alice.call(
        "put", PATH, {"every": "1 hour", "payload": {"x": 1}, "overlap": "allow"}
    )
    assert status == 200
    assert (replaced["cron"], replaced["every"], replaced["payload"]) == (None, 3600, {"x": 1})
    status, paused = alice.call("put", PATH, {"every": 3600, "paused": True})
    assert status == 200 and paused["paused"] and paused["next_fire_at"] is None
    actions = list(AuditLog.objects.filter(target_type="schedule").values_list("action", flat=True))
    assert sorted(actions) == ["schedule.created", "schedule.replaced", "schedule.replaced"]
    assert AuditLog.objects.filter(actor_token__isnull=False, details__name="nightly").exists()


def test_bad_schedules_are_422_naming_the_field(alice, waiter):
    cases = [
        ({}, "cron"),
        ({"cron": "0 3 * * *", "every": 60}, "cron"),
        ({"cron": "0 3 * *"}, "cron"),
        ({"every": 5}, "every"),
        ({"every": "whenever"}, "every"),
        ({"every": True}, "every"),
        ({"every": 60, "timezone": "Atlantis/Capital"}, "timezone"),
        ({"every": 60, "overlap": "queue"}, "overlap"),
        ({"every": 60, "payload": [1]}, "payload"),
    ]
    for body, field in cases:
        status, answer = alice.call("put", PATH, body)
        assert (body, status) == (body, 422)
        assert field in [e["field"] for e in answer["detail"]], (body, answer)
    assert not Schedule.objects.exists()


def test_a_schedule_name_on_another_workflow_is_409(alice, acme, waiter):
    upload(acme, "other", WAITER)
    assert alice.call("put", PATH, {"every": 60})[0] == 201
    status, body = alice.call("put", "/workflows/other/schedules/nightly", {"every": 60})
    assert status == 409 and "another workflow" in body["detail"]


def test_over_the_schedules_quota_a_new_schedule_is_429(alice, acme, waiter):
    set_quota(acme, schedules=1)
    assert alice.call("put", PATH, {"every": 60})[0] == 201
    assert alice.call("put", PATH, {"every": 120})[0] == 200
    status, body = alice.call("put", "/workflows/waiter/schedules/second", {"every": 60})
    assert status == 429 and "schedules quota" in body["detail"]


def test_schedules_are_listed_by_name_a_page_at_a_time(alice, waiter):
    for name in ("c", "a", "b"):
        alice.call("put", f"/workflows/waiter/schedules/{name}", {"every": 60})
    status, first = alice.call("get", "/schedules?limit=2")
    assert status == 200 and [s["name"] for s in first["items"]] == ["a", "b"]
    _, rest = alice.call("get", f"/schedules?limit=2&cursor={first['next_cursor']}")
    assert [s["name"] for s in rest["items"]] == ["c"] and rest["next_cursor"] is None
    assert alice.call("get", "/schedules?workflow=nope")[1]["items"] == []


def test_fires_are_listed_newest_first_with_what_each_did(alice, waiter):
    alice.call("put", PATH, {"every": 60})
    schedule = Schedule.objects.get()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    Schedule.objects.update(next_fire_at=start)
    for minute in range(3):
        schedules.sweep(start.replace(minute=minute))
    status, page = alice.call("get", "/schedules/nightly/fires?limit=2")
    assert status == 200
    assert [(f["instance"], f["skipped"]) for f in page["items"]] == [
        (None, "overlap"),
        (None, "overlap"),
    ]
    _, rest = alice.call("get", f"/schedules/nightly/fires?cursor={page['next_cursor']}")
    assert [(f["instance"], f["skipped"]) for f in rest["items"]] == [
        ("schedule:nightly:20260101T000000Z", None)
    ]
    assert schedule.fires.count() == 3


def test_deleting_a_schedule_is_204_and_audited(alice, waiter):
    alice.call("put", PATH, {"every": 60})
    assert alice.request("delete", PATH).status_code == 204
    assert not Schedule.objects.exists()
    assert AuditLog.objects.filter(action="schedule.deleted", details__name="nightly").exists()
    assert alice.request("delete", PATH).status_code == 404


def test_bob_sees_and_touches_none_of_acmes_schedules(alice, bob, globex, waiter):
    alice.call("put", PATH, {"every": 60})
    assert bob.call("get", "/schedules") == (200, {"items": [], "next_cursor": None})
    assert bob.request("get", "/schedules/nightly/fires").status_code == 404
    assert bob.request("delete", PATH).status_code == 404
    assert bob.request("put", PATH, {"every": 60}).status_code == 404
    upload(globex, "waiter", WAITER)
    # The same name is bob's own, and says nothing about acme's.
    assert bob.call("put", PATH, {"every": 120})[0] == 201
    assert Schedule.objects.get(tenant=globex).every == 120
    assert Schedule.objects.exclude(tenant=globex).get().every == 60


def test_a_fire_of_a_schedule_with_the_longest_name_is_readable_by_its_id(alice, waiter):
    name = "s" * 100
    assert alice.call("put", f"/workflows/waiter/schedules/{name}", {"every": 60})[0] == 201
    Schedule.objects.update(next_fire_at=datetime(2026, 1, 1, tzinfo=UTC))
    schedules.sweep(datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC))
    key = f"schedule:{name}:20260101T000000Z"
    status, instance = alice.call("get", f"/instances/{key}")
    assert status == 200 and instance["id"] == key and len(key) > 100
