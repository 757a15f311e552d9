"""Celery's hard time limit on real workers: a task past it is killed and its instance recovered."""

import time
from pathlib import Path

import pytest

from execution import dispatch
from tests.factories import set_quota
from tests.integration.conftest import running_stack
from tests.integration.stack import wait_until
from tests.integration.test_durability import finished, start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

LIMIT_SECONDS = 3
# Each attempt waits for the same moment; attempts cut at the limit come nearer to it
# each time, and one that starts late enough finishes.
WAITS_FOR_A_MOMENT = """
import time

def run(event, step):
    def slow():
        while time.time() < event.payload["until"]:
            time.sleep(0.05)
        return "done"
    return step.do("slow", slow, retries={"limit": 10, "delay": "0 seconds"})
"""


@pytest.fixture
def stack_with_a_short_time_limit(transactional_db, settings, monkeypatch):
    # Celery writes the limit into each message from the sending process's settings:
    # this test process sends nothing, so every message comes from the stack's clock.
    monkeypatch.setattr(dispatch, "enqueue", lambda pk: None)
    with running_stack(settings, STEPWELL_TASK_TIME_LIMIT=str(LIMIT_SECONDS)) as stack:
        yield stack


def test_a_task_past_the_hard_limit_is_killed_and_its_instance_finishes_later(
    stack_with_a_short_time_limit, acme
):
    stack = stack_with_a_short_time_limit
    (worker,) = stack.workers
    set_quota(acme, sandbox_mode="fresh")  # a jail in milliseconds: the limit is all the step's
    pool = pool_processes(worker)
    instance = start(acme, "hangs", WAITS_FOR_A_MOMENT, {"until": time.time() + 8})
    instance = finished(instance, timeout=90, stack=stack)
    assert (instance.status, instance.output) == ("complete", "done")
    log = worker.log()
    assert f"Hard time limit ({LIMIT_SECONDS}s) exceeded for stepwell.advance" in log
    assert worker.proc.poll() is None  # the worker itself lives on, with a new pool process
    replaced = wait_until(
        lambda: (now := pool_processes(worker)) != pool and len(now) == len(pool) and now,
        30,
        what="the killed pool process to be replaced",
    )
    assert len(pool - replaced) == 1


def pool_processes(worker) -> set[int]:
    pid = worker.proc.pid
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
