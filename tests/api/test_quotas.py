"""Tenant quotas at the API: 429 naming the limit; sizes over the quota: 413."""

import pytest

from execution import quotas
from execution.workflows import StartError, start_instance
from tests.factories import WAITER, set_quota, upload


def start(api, **body):
    return api.call("post", "/workflows/waiter/instances", body)


def test_over_the_running_instances_quota_a_start_is_429_naming_it(alice, acme, waiter):
    set_quota(acme, running_instances=2)
    assert start(alice, id="a")[0] == 201 and start(alice, id="b")[0] == 201
    status, body = start(alice, id="c")
    assert status == 429
    assert "running instances quota" in body["detail"] and "the limit is 2" in body["detail"]
    # Starting an id that exists is not a new start: still 200.
    assert start(alice, id="a")[0] == 200
    alice.call("post", "/instances/a/terminate")
    assert start(alice, id="c")[0] == 201


def test_restarting_a_finished_instance_counts_against_the_running_quota(alice, acme, waiter):
    set_quota(acme, running_instances=1)
    start(alice, id="a")
    alice.call("post", "/instances/a/terminate")
    start(alice, id="b")
    status, body = alice.call("post", "/instances/a/restart")
    assert status == 429 and "running instances" in body["detail"]


def test_child_starts_by_the_engine_are_held_to_the_running_quota(acme, waiter):
    set_quota(acme, running_instances=1)
    start_instance(waiter, key="parent")
    with pytest.raises(StartError, match="running instances quota"):
        start_instance(waiter, key="child")
    assert issubclass(quotas.QuotaExceeded, StartError)


def test_over_the_starts_per_minute_quota_a_start_is_429_naming_it(alice, acme, waiter):
    set_quota(acme, instance_starts_per_minute=2)
    start(alice)
    start(alice)
    status, body = start(alice)
    assert status == 429 and "instance starts per minute quota" in body["detail"]


def test_over_the_events_per_minute_quota_an_event_is_429_naming_it(alice, acme, waiter):
    set_quota(acme, events_per_minute=2)
    start(alice, id="a")
    for _ in range(2):
        assert alice.call("post", "/instances/a/events", {"type": "ping"})[0] == 202
    status, body = alice.call("post", "/instances/a/events", {"type": "ping"})
    assert status == 429 and "events per minute quota" in body["detail"]


def test_quotas_are_per_tenant(alice, bob, acme, globex, waiter):
    set_quota(acme, instance_starts_per_minute=1)
    upload(globex, "waiter", WAITER)
    start(alice)
    assert start(alice)[0] == 429
    assert start(bob)[0] == 201


def test_an_event_payload_over_the_payload_quota_is_413(alice, acme, waiter):
    set_quota(acme, payload_bytes=50)
    start(alice, id="a")
    status, body = alice.call("post", "/instances/a/events", {"type": "go", "payload": "x" * 60})
    assert status == 413 and "the limit is 50 bytes" in body["detail"]
