"""LOG_FORMAT=json in real processes: the worker's and the clock's lines are JSON, Celery's
own included, and the engine's name the activation they belong to."""

import json

import pytest

from execution import workflows
from tests.factories import upload
from tests.integration.conftest import running_stack
from tests.integration.stack import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

NAP = """
def run(event, step):
    step.do("before", lambda: 1)
    step.sleep("nap", "1 second")
    return step.do("after", lambda: 2)
"""


def json_lines(text: str) -> list[dict]:
    """The process's log lines (Celery's start-up banner, printed, is not logging)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_worker_and_clock_write_json_lines_with_the_ids_of_the_run(settings, acme):
    with running_stack(settings, LOG_FORMAT="json", LOG_LEVEL="DEBUG") as stack:
        instance, _ = workflows.start_instance(upload(acme, "nap", NAP).workflow)

        def done():
            instance.refresh_from_db()
            return instance.is_terminal

        wait_until(done, 60, interval=0.1, what="the instance to finish")
        worker, clock = stack.workers[0].log(), stack.clock.log()
    assert instance.status == "complete", stack.logs()
    ids = {"tenant": acme.pk, "instance": instance.pk}
    lines = json_lines(worker)
    assert any(line["logger"].startswith("celery") for line in lines), worker[-2000:]
    engine = [line for line in lines if line["logger"] == "execution.engine"]
    assert {line["step"] for line in engine} >= {0, 1, 2}, worker[-2000:]
    for line in engine:
        assert line.items() >= {**ids, "instance_key": instance.key}.items(), line
        assert len(line["activation"]) == 32
    # The clock wakes the sleeper: it names what it sends; every line it writes is JSON.
    assert all(line.startswith("{") for line in clock.splitlines()), clock[-2000:]
    sent = [line for line in json_lines(clock) if line["logger"] == "execution.dispatch"]
    assert sent and all(line.items() >= ids.items() for line in sent), clock[-2000:]
