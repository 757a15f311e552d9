"""An instance's stored history (its steps' results, errors and logs) has a quota."""

import importlib

import pytest
from django.db import connection

from execution import runs, twins, workflows
from execution.kinds import history_size
from execution.models import Instance
from tests.driver import activate_once
from tests.factories import set_quota, upload

STEPS = """
def shout(n):
    print("step", n, "says", "x" * 50)
    return "y" * 300

def run(event, step):
    for n in range(event.payload["steps"]):
        step.do(f"s{n}", lambda: shout(n))
    return "done"
"""

FLAKY = """
import os


def flaky():
    print("attempt", "a" * 100)
    if not os.path.exists(FLAG):
        open(FLAG, "w").close()
        raise RuntimeError("first attempt fails " + "z" * 200)
    return {"ok": True}

def run(event, step):
    step.do("flaky", flaky, retries={"limit": 2, "delay": 0})
    return step.do("after", lambda: "w" * 100)
"""


# The engine runs here, in this process (tests/driver.py), for every test.
pytestmark = pytest.mark.usefixtures("driver")


def start(tenant, code, **payload):
    instance, _ = workflows.start_instance(upload(tenant, "flow", code).workflow, payload=payload)
    return instance


def stored_history(instance) -> int:
    return sum(history_size(step) for step in instance.steps.all())


def test_the_running_total_is_what_the_steps_hold(driver, acme):
    instance = driver.run(start(acme, STEPS, steps=5))

    assert instance.status == "complete"
    assert instance.history_bytes == stored_history(instance) > 5 * 300


def test_a_retried_step_counts_once_in_the_running_total(driver, acme, tmp_path):
    instance = driver.run(start(acme, FLAKY.replace("FLAG", repr(str(tmp_path / "flag")))))

    assert instance.status == "complete"
    assert instance.steps.get(name="flaky").attempts == 2
    assert instance.history_bytes == stored_history(instance)


def test_the_record_inside_a_transaction_keeps_the_same_total(driver, acme):
    # The ORM twin of the one-statement record maintains the total too.
    instance = start(acme, STEPS, steps=1)
    driver.queue.clear()

    with twins.portable():
        assert activate_once(instance.pk)
    instance.refresh_from_db()

    assert instance.steps.get().status == "complete"
    assert instance.history_bytes == stored_history(instance) > 300


def test_past_the_quota_the_instance_errors_and_the_message_names_the_limit(driver, acme):
    set_quota(acme, history_bytes=1000)

    instance = driver.run(start(acme, STEPS, steps=10))

    assert instance.status == "errored"
    assert instance.error["type"] == "HistoryTooLarge"
    assert "over its limit of 1000 bytes" in instance.error["message"]
    # The step that went past it is kept; none ran after it.
    assert instance.steps.count() == 3
    assert instance.history_bytes == stored_history(instance) > 1000


def test_an_instance_already_past_the_quota_errors_at_its_next_activation(driver, acme):
    set_quota(acme, history_bytes=1000)
    instance = start(acme, STEPS, steps=1)
    Instance.objects.filter(pk=instance.pk).update(history_bytes=5000)

    instance = driver.run(instance)

    assert instance.status == "errored"
    assert instance.error["type"] == "HistoryTooLarge"
    assert "over its limit of 1000 bytes" in instance.error["message"]
    assert not instance.steps.exists()


def test_a_restart_starts_the_count_again(driver, acme):
    instance = driver.run(start(acme, STEPS, steps=2))
    assert instance.history_bytes > 0

    runs.restart(instance)
    instance.refresh_from_db()

    assert instance.history_bytes == 0


def test_the_migration_counts_the_history_of_existing_instances(driver, acme):
    instance = driver.run(start(acme, STEPS, steps=4))
    Instance.objects.filter(pk=instance.pk).update(history_bytes=0)
    migration = importlib.import_module(
        "execution.migrations.0006_instance_history_and_sandbox_failures"
    )

    with connection.cursor() as cursor:
        cursor.execute(migration.COUNT_HISTORY)
    instance.refresh_from_db()

    # The database writes JSON a little differently (its spacing), hence approx.
    assert instance.history_bytes == pytest.approx(stored_history(instance), rel=0.05)


WAITS = """
def run(event, step):
    paid = step.wait_for_event("paid", "payment")
    step.do("after", lambda: len(paid["note"]))
"""


def test_what_a_wait_receives_counts_and_can_take_the_instance_past_the_quota(driver, acme):
    set_quota(acme, history_bytes=1000)
    instance = driver.run(start(acme, WAITS))
    assert instance.status == "waiting"

    workflows.send_event(instance, "payment", {"note": "n" * 2000})
    instance = driver.run(instance)

    assert instance.status == "errored"
    assert "over its limit of 1000 bytes" in instance.error["message"]
    assert instance.history_bytes == stored_history(instance) > 2000
    assert list(instance.steps.values_list("name", flat=True)) == ["paid"]
