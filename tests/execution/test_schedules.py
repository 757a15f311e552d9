"""execution/schedules.py: what a fire starts, what it skips and why, and that two clocks
never start one fire twice."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from execution import schedules
from execution.models import Instance, Schedule, ScheduleFire
from execution.schedules import BadField, NameTaken, Spec, save_schedule
from tenants.models import Tenant
from tests.factories import WAITER, set_quota, upload
from tests.threads import at_once

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def owed(schedule: Schedule, when: datetime) -> Schedule:
    """The schedule as if its next fire fell at `when` (the clock has not run since)."""
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=when)
    schedule.refresh_from_db()
    return schedule


def every_minute(workflow, name="tick", **spec) -> Schedule:
    schedule, _ = save_schedule(workflow, name, Spec(every=60, payload={"n": 1}, **spec))
    return owed(schedule, T0)


def test_a_fire_starts_one_instance_with_the_schedules_id_and_payload(waiter):
    schedule = every_minute(waiter)
    assert schedules.sweep(at(1)) == 1
    instance = Instance.objects.get()
    assert instance.key == "schedule:tick:20260101T120000Z"
    assert instance.payload == {"n": 1} and instance.workflow == waiter
    schedule.refresh_from_db()
    assert (schedule.last_fire_at, schedule.next_fire_at) == (T0, at(60))
    assert schedule.last_instance == instance
    fire = ScheduleFire.objects.get()
    assert (fire.instance_key, fire.skipped, fire.missed) == (instance.key, "", 0)
    assert schedules.sweep(at(59)) == 0


def test_overlap_skip_records_a_skipped_fire_while_the_last_instance_runs(waiter):
    every_minute(waiter)
    schedules.sweep(at(0))
    schedules.sweep(at(60))
    assert Instance.objects.count() == 1
    latest = ScheduleFire.objects.first()
    assert (latest.fire_at, latest.skipped, latest.instance_key) == (at(60), "overlap", "")
    Instance.objects.update(status=Instance.Status.COMPLETE)
    schedules.sweep(at(120))
    assert Instance.objects.count() == 2


def test_overlap_allow_starts_while_the_last_instance_runs(waiter):
    every_minute(waiter, overlap="allow")
    schedules.sweep(at(0))
    schedules.sweep(at(60))
    assert Instance.objects.count() == 2


def test_a_fire_over_a_quota_is_recorded_with_the_quota_named(acme, waiter):
    set_quota(acme, running_instances=1)
    every_minute(waiter, overlap="allow")
    schedules.sweep(at(0))
    schedules.sweep(at(60))
    latest = ScheduleFire.objects.first()
    assert latest.skipped == "quota" and "running instances quota" in latest.detail
    assert Instance.objects.count() == 1


def test_a_version_held_for_review_starts_nothing_and_says_so(acme):
    acme.review_policy = Tenant.ReviewPolicy.MANUAL
    acme.save()
    held = upload(acme, "held", WAITER).workflow
    every_minute(held)
    schedules.sweep(at(0))
    fire = ScheduleFire.objects.get()
    assert fire.skipped == "not_approved" and "pending_review" in fire.detail
    assert not Instance.objects.exists()


def test_a_suspended_tenants_schedule_starts_nothing_and_says_so(acme, waiter):
    every_minute(waiter)
    Tenant.objects.filter(pk=acme.pk).update(suspended_at=T0)
    schedules.sweep(at(0))
    assert ScheduleFire.objects.get().skipped == "suspended"
    assert not Instance.objects.exists()


def test_a_schedule_that_cannot_fire_does_not_keep_the_others_from_firing(waiter):
    every_minute(waiter, name="a-broken")
    every_minute(waiter, name="b-good")
    Schedule.objects.filter(name="a-broken").update(every=None, cron="not a cron")
    assert schedules.sweep(at(0)) == 1
    assert Instance.objects.get().key == "schedule:b-good:20260101T120000Z"


def test_after_a_stop_only_the_latest_missed_fire_runs(waiter):
    every_minute(waiter)
    assert schedules.sweep(at(5 * 60 + 30)) == 1
    fire = ScheduleFire.objects.get()
    assert (fire.fire_at, fire.missed) == (at(300), 5)
    assert [i.key for i in Instance.objects.all()] == ["schedule:tick:20260101T120500Z"]
    assert Schedule.objects.get().next_fire_at == at(360)


def test_a_paused_schedule_owes_nothing_and_resumes_after_now(waiter):
    paused, _ = save_schedule(waiter, "tick", Spec(every=60, paused=True))
    assert paused.next_fire_at is None
    owed(paused, T0)
    assert schedules.sweep(at(600)) == 0
    resumed, created = save_schedule(waiter, "tick", Spec(every=60))
    assert not created and resumed.next_fire_at > T0 + timedelta(days=1)


def test_a_replaced_schedule_with_the_same_times_keeps_the_fire_it_owes(waiter):
    every_minute(waiter)
    replaced, _ = save_schedule(waiter, "tick", Spec(every=60, payload={"n": 2}))
    assert replaced.next_fire_at == T0 and replaced.payload == {"n": 2}
    changed, _ = save_schedule(waiter, "tick", Spec(every=120))
    assert changed.next_fire_at > T0 + timedelta(days=1)


def test_the_shortest_interval_is_a_tenant_quota(acme, waiter):
    with pytest.raises(BadField) as every:
        save_schedule(waiter, "fast", Spec(every=5))
    assert every.value.field == "every" and "10 s" in str(every.value)
    set_quota(acme, schedule_min_interval_seconds=600)
    with pytest.raises(BadField) as cron:
        save_schedule(waiter, "fast", Spec(cron="*/5 * * * *"))
    assert cron.value.field == "cron"
    assert save_schedule(waiter, "slow", Spec(cron="*/10 * * * *"))[1]


def test_bad_specs_name_their_field(waiter):
    cases = [
        (Spec(), "cron"),
        (Spec(cron="* * * * *", every=60), "cron"),
        (Spec(cron="* * * *"), "cron"),
        (Spec(every="often"), "every"),
        (Spec(every=60, timezone="Nowhere/Else"), "timezone"),
        (Spec(every=60, overlap="queue"), "overlap"),
    ]
    for spec, field in cases:
        with pytest.raises(BadField) as caught:
            save_schedule(waiter, "bad", spec)
        assert caught.value.field == field


def test_a_schedule_name_is_the_tenants_once(acme, waiter):
    other = upload(acme, "other", WAITER).workflow
    save_schedule(waiter, "nightly", Spec(cron="0 3 * * *"))
    with pytest.raises(NameTaken):
        save_schedule(other, "nightly", Spec(cron="0 3 * * *"))


def test_each_schedule_keeps_only_its_newest_fires(waiter, monkeypatch):
    monkeypatch.setattr(schedules, "FIRES_KEPT", 3)
    every_minute(waiter, overlap="allow")
    for minute in range(5):
        schedules.sweep(at(minute * 60))
    assert [f.fire_at for f in ScheduleFire.objects.all()] == [at(240), at(180), at(120)]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks of PostgreSQL")
def test_two_clocks_sweeping_at_once_start_each_fire_once(driver, waiter):
    """Four clocks at once, on their own connections, over five fires."""
    every_minute(waiter, overlap="allow")
    clocks = 4
    for minute in range(5):
        now = at(minute * 60 + 1)
        taken, errors = at_once(clocks, lambda now=now: schedules.sweep(now))
        assert errors == [] and sorted(taken) == [0] * (clocks - 1) + [1]
    keys = sorted(Instance.objects.values_list("key", flat=True))
    assert keys == [f"schedule:tick:20260101T12{m:02d}00Z" for m in range(5)]
    assert ScheduleFire.objects.filter(skipped="").count() == 5
