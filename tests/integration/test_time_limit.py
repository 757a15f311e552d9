"""Celery's hard time limit on real workers: a task past it is killed and its instance recovered."""

import time

import pytest

from execution.tasks import advance
from tests.integration.conftest import running_stack
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
    # Celery writes the limit into each message from the sender's settings: this test
    # process sends the first message, the stack's clock the later ones.
    monkeypatch.setattr(advance, "time_limit", LIMIT_SECONDS)
    with running_stack(settings, STEPWELL_TASK_TIME_LIMIT=str(LIMIT_SECONDS)) as stack:
        yield stack


def test_a_task_past_the_hard_limit_is_killed_and_its_instance_finishes_later(
    stack_with_a_short_time_limit, acme
):
    stack = stack_with_a_short_time_limit
    (worker,) = stack.workers
    instance = start(acme, "hangs", WAITS_FOR_A_MOMENT, {"until": time.time() + 8})
    instance = finished(instance, timeout=90, stack=stack)
    assert (instance.status, instance.output) == ("complete", "done")
    log = worker.log()
    assert f"Hard time limit ({LIMIT_SECONDS}s) exceeded for stepwell.advance" in log
    assert "exited with 'signal 9 (SIGKILL)'" in log  # the pool process, replaced
    assert worker.proc.poll() is None  # the worker itself lives on
