"""LOG_FORMAT=json in real processes: the web's, the worker's and the clock's lines are
JSON, Celery's and uvicorn's own included, and each names the run it belongs to."""

import json
import urllib.request

import pytest

from execution.models import Instance
from tests.factories import make_token, upload
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
    """The process's log lines (Celery's start-up banner, printed, is not logging; nor
    are the few lines of uvicorn's supervisor, which never loads Django)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def start_over_http(web, token: str) -> None:
    request = urllib.request.Request(
        f"{web.url}/api/v1/workflows/nap/instances",
        data=json.dumps({"id": "nap-1"}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 201


def test_web_worker_and_clock_write_json_lines_with_the_ids_of_the_run(settings, acme):
    upload(acme, "nap", NAP)
    token = make_token(acme)
    with running_stack(settings, LOG_FORMAT="json", LOG_LEVEL="DEBUG") as stack:
        web = stack.start_web()
        start_over_http(web, token)
        instance = Instance.objects.get(key="nap-1")

        def done():
            instance.refresh_from_db()
            return instance.is_terminal

        wait_until(done, 60, interval=0.1, what="the instance to finish")
        logs = {p.name: p.log() for p in stack.processes()}
    assert instance.status == "complete", logs
    ids = {"tenant": acme.pk, "instance": instance.pk}

    def sent(name: str) -> list[dict]:
        lines = json_lines(logs[name])
        return [line for line in lines if line["logger"] == "execution.dispatch"]

    # The web sends the new instance to a worker, within the request its token named;
    # on a busy machine the clock's sweep may send it first (it is due at once), and its
    # line names the instance just as well.
    web_lines = json_lines(logs["web"])
    assert any(line["logger"].startswith("uvicorn") for line in web_lines), logs["web"]
    assert sent("web") or sent("clock"), (logs["web"][-2000:], logs["clock"][-2000:])
    assert all(line.items() >= ids.items() for line in sent("web"))
    lines = json_lines(logs["worker1"])
    assert any(line["logger"].startswith("celery") for line in lines), logs["worker1"][-2000:]
    engine = [line for line in lines if line["logger"] == "execution.engine"]
    assert {line["step"] for line in engine} >= {0, 1, 2}, logs["worker1"][-2000:]
    for line in engine:
        assert line.items() >= {**ids, "instance_key": "nap-1"}.items(), line
        assert len(line["activation"]) == 32
    # The clock wakes the sleeper: it names what it sends; every line it writes is JSON.
    clock = logs["clock"]
    assert all(line.startswith("{") for line in clock.splitlines()), clock[-2000:]
    assert sent("clock") and all(line.items() >= ids.items() for line in sent("clock")), clock
