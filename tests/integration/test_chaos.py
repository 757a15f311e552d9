"""`make chaos` in small: a mixed workflow while workers are SIGKILLed and Redis restarts.

The workflows and the checks are those of bench/chaos.py; this run has no PostgreSQL
restart (the test database lives on the shared cluster) and drives the engine
through Python calls instead of HTTP.
"""

import random
import time

import pytest

from bench import chaos
from execution import workflows
from execution.models import Instance, Step
from tests.factories import upload
from tests.integration.stack import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

INSTANCES = 20
# Seconds after the first start: what happens then.
SCHEDULE = [(4, "kill"), (10, "kill"), (16, "redis"), (22, "kill")]


def kill_one_worker(stack, rng) -> None:
    victim = rng.choice(stack.workers)
    victim.kill()  # SIGKILL to the worker, its pool and its jails
    victim.proc.wait(10)
    stack.workers.remove(victim)
    stack.start_worker()


def send_late_events(tenant, keys: list[str], sent: set[str]) -> None:
    waiting = Step.objects.filter(
        instance__tenant=tenant,
        instance__key__in=[k for k in keys if k not in sent],
        name="approval",
        status="waiting",
    ).select_related("instance")
    for step in waiting:
        n = step.instance.payload["n"]
        workflows.send_event(step.instance, chaos.EVENT_TYPE, chaos.approval_payload(n))
        sent.add(step.instance.key)


def test_a_mixed_workflow_loses_nothing_to_killed_workers_and_a_redis_restart(stack, acme):
    rng = random.Random(7)
    stack.start_worker()
    upload(acme, chaos.CHILD, chaos.CHILD_CODE)
    parent = upload(acme, chaos.PARENT, chaos.PARENT_CODE).workflow
    keys, sent = [], set()
    began = time.monotonic()
    for n in range(INSTANCES):
        key = f"chaos-{n}"
        instance, _ = workflows.start_instance(parent, payload=chaos.parent_payload(n, 1), key=key)
        keys.append(key)
        if n % 2 == 0:  # the event before the wait; the others get it once they wait
            workflows.send_event(instance, chaos.EVENT_TYPE, chaos.approval_payload(n))
            sent.add(key)
    schedule = list(SCHEDULE)
    deadline = began + 150

    def all_ended() -> bool:
        return Instance.objects.filter(
            tenant=acme, key__in=keys, status__in=Instance.TERMINAL_STATUSES
        ).count() == len(keys)

    while not (not schedule and all_ended()):
        elapsed = time.monotonic() - began
        if schedule and elapsed >= schedule[0][0]:
            _, fault = schedule.pop(0)
            if fault == "kill":
                kill_one_worker(stack, rng)
            else:
                stack.redis.restart(down_for=1.5)
        dead = [w for w in stack.workers if w.proc.poll() is not None]
        assert not dead, f"{dead[0].name} died by itself:\n{dead[0].log()[-3000:]}"
        send_late_events(acme, keys, sent)
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.2)

    found = chaos.violations(keys, acme)
    assert not found, "\n".join(found)
    assert Instance.objects.filter(tenant=acme, status="complete").count() == 2 * INSTANCES
    assert all(w.proc.poll() is None for w in stack.workers)


def test_the_checks_catch_a_step_recorded_twice_and_a_gap_in_progress(stack, acme):
    """The chaos checks themselves: a run without faults passes, a tampered one does not."""
    upload(acme, chaos.CHILD, chaos.CHILD_CODE)
    parent = upload(acme, chaos.PARENT, chaos.PARENT_CODE).workflow
    instance, _ = workflows.start_instance(parent, payload=chaos.parent_payload(1, 0.5), key="k")
    workflows.send_event(instance, chaos.EVENT_TYPE, chaos.approval_payload(1))
    wait_until(
        lambda: Instance.objects.filter(tenant=acme, status="complete").count() == 2,
        90,
        interval=0.2,
        what="the parent and its child",
    )
    assert chaos.violations(["k"], acme) == []

    step = Step.objects.get(instance=instance, name="a")
    step.output = {**step.output, "nonce": 0.5}  # as if it ran again and was recorded again
    step.save()
    instance.progress.filter(seq=3).delete()
    found = "\n".join(chaos.violations(["k"], acme))
    assert "recorded twice" in found
    assert "gap" in found
    assert "resumed" not in found


def test_the_checks_catch_a_timer_that_fired_twice(stack, acme):
    """As if a second clock woke the sleeper again: one more resume from the sleep step,
    in sequence, so that only the resumption check can see it."""
    child = upload(acme, chaos.CHILD, chaos.CHILD_CODE).workflow
    instance, _ = workflows.start_instance(child, payload={"n": 1, "sleep": 0.5}, key="k")
    wait_until(
        lambda: Instance.objects.filter(tenant=acme, status="complete").count() == 1,
        60,
        interval=0.2,
        what="the instance",
    )
    instance.refresh_from_db()
    assert chaos.check_instance(instance, chaos.CHILD_VALUES) == []

    resumed = instance.progress.get(type="instance.resumed")
    instance.progress.create(seq=instance.last_seq + 1, type=resumed.type, data=resumed.data)
    Instance.objects.filter(pk=instance.pk).update(last_seq=instance.last_seq + 1)
    instance.refresh_from_db()
    found = chaos.check_instance(instance, chaos.CHILD_VALUES)
    assert found == [
        "k: sleep step 'breathe' suspended 1 times and resumed 2 times, expected once each"
    ]
