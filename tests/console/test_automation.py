"""The console's schedules and triggers: the workflow page lists them with the next fire and
recent fires; members add, edit, pause and delete them; viewers cannot; bob gets 404."""

from datetime import UTC, datetime

import pytest

from execution import schedules
from execution.models import Schedule, Trigger
from execution.schedules import Spec, save_schedule
from execution.triggers import add_trigger
from tenants.models import AuditLog
from tests.factories import WAITER, upload

FORM = {"cron": "", "every": "", "timezone": "UTC", "overlap": "skip", "payload": "{}"}


@pytest.fixture
def waiter(acme):
    return upload(acme, "waiter", WAITER).workflow


def test_the_workflow_page_lists_schedules_fires_and_triggers(alice, waiter):
    schedule, _ = save_schedule(waiter, "nightly", Spec(cron="0 9 * * *", timezone="Asia/Tokyo"))
    add_trigger(waiter, "order.paid")
    Schedule.objects.update(next_fire_at=datetime(2026, 1, 1, tzinfo=UTC))
    schedules.sweep(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
    page = alice.get("/workflows/waiter/").content.decode()
    assert "nightly" in page and "0 9 * * *" in page and "Asia/Tokyo" in page
    schedule.refresh_from_db()
    assert schedule.next_fire_at.strftime("%Y-%m-%d %H:%M:%S") in page
    # 09:00 in Tokyo is midnight UTC: a recent fire, linked to its instance.
    assert "schedule:nightly:20260101T000000Z" in page
    assert "order.paid" in page


def test_a_member_creates_edits_pauses_and_deletes_a_schedule(alice, waiter):
    made = alice.post(
        "/workflows/waiter/schedules/_new/", {**FORM, "name": "hourly", "every": "1 hour"}
    )
    assert made.status_code == 302 and made["Location"] == "/workflows/waiter/#schedules"
    assert Schedule.objects.get().every == 3600
    edit = alice.get("/workflows/waiter/schedules/hourly/")
    assert edit.status_code == 200 and b"No fires yet" in edit.content
    alice.post("/workflows/waiter/schedules/hourly/", {**FORM, "cron": "*/30 * * * *"})
    assert Schedule.objects.get().cron == "*/30 * * * *"
    alice.post("/workflows/waiter/schedules/hourly/pause/")
    assert Schedule.objects.get().paused and Schedule.objects.get().next_fire_at is None
    alice.post("/workflows/waiter/schedules/hourly/resume/")
    assert Schedule.objects.get().next_fire_at is not None
    alice.post("/workflows/waiter/schedules/hourly/delete/")
    assert not Schedule.objects.exists()
    actions = set(AuditLog.objects.filter(target_type="schedule").values_list("action", flat=True))
    assert actions == {
        "schedule.created",
        "schedule.replaced",
        "schedule.paused",
        "schedule.resumed",
        "schedule.deleted",
    }
    assert not AuditLog.objects.filter(target_type="schedule", actor__isnull=True).exists()


def test_a_bad_schedule_is_shown_again_with_the_field_named(alice, waiter):
    answer = alice.post("/workflows/waiter/schedules/_new/", {**FORM, "name": "x", "every": "5"})
    assert answer.status_code == 422
    assert b"shortest interval of 10 s" in answer.content and not Schedule.objects.exists()
    answer = alice.post("/workflows/waiter/schedules/_new/", {**FORM, "name": "x", "cron": "0 3"})
    assert answer.status_code == 422 and b"5 fields" in answer.content


def test_a_member_adds_and_removes_triggers(alice, waiter):
    alice.post("/workflows/waiter/triggers/", {"event_type": "order.paid"})
    assert list(Trigger.objects.values_list("event_type", flat=True)) == ["order.paid"]
    alice.post("/workflows/waiter/triggers/order.paid/delete/")
    assert not Trigger.objects.exists()
    assert AuditLog.objects.filter(action="trigger.deleted").exists()


def test_a_viewer_changes_no_schedule_or_trigger(carol, waiter):
    save_schedule(waiter, "nightly", Spec(cron="0 3 * * *"))
    assert carol.get("/workflows/waiter/schedules/nightly/").status_code == 200
    changes = [
        ("/workflows/waiter/schedules/_new/", {**FORM, "name": "x", "every": "60"}),
        ("/workflows/waiter/schedules/nightly/pause/", {}),
        ("/workflows/waiter/schedules/nightly/delete/", {}),
        ("/workflows/waiter/triggers/", {"event_type": "go"}),
    ]
    for url, data in changes:
        assert carol.post(url, data).status_code == 403, url
    assert not Schedule.objects.get().paused and not Trigger.objects.exists()


def test_bob_gets_404_for_acmes_schedules_and_triggers(bob, waiter):
    save_schedule(waiter, "nightly", Spec(cron="0 3 * * *"))
    add_trigger(waiter, "order.paid")
    for url in (
        "/workflows/waiter/schedules/nightly/",
        "/workflows/waiter/schedules/_new/",
    ):
        assert bob.get(url).status_code == 404, url
    for url in (
        "/workflows/waiter/schedules/nightly/pause/",
        "/workflows/waiter/schedules/nightly/delete/",
        "/workflows/waiter/triggers/",
        "/workflows/waiter/triggers/order.paid/delete/",
    ):
        assert bob.post(url, {"event_type": "x"}).status_code == 404, url
    assert Schedule.objects.count() == 1 and Trigger.objects.count() == 1
