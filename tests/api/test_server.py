"""The Procfile's `web` process for real: the API and a WebSocket through one uvicorn."""

import http.client
import json
import os
import re
import shlex
import socket
import subprocess

import pytest
from django.conf import settings
from websockets.sync.client import connect

from tests.factories import make_token, upload
from tests.integration.stack import ROOT, VENV_BIN, current_database_url, free_port, wait_until

CODE = """
def run(event, step):
    return step.wait_for_event("go", "go")
"""


def web_argv(port: int) -> list[str]:
    line = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    values = {"PORT": str(port), "WEB_CONCURRENCY": "1"}  # one process: quicker to start
    command = re.sub(r"\$\{(\w+):-[^}]*\}", lambda m: values[m[1]], line.removeprefix("web:"))
    argv = shlex.split(command)
    return [str(VENV_BIN / argv[0]), *argv[1:]]


@pytest.fixture
def web(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": current_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "test-" + "x" * 40,
        "DEBUG": "false",
        "STEPWELL_CELERY_EAGER": "false",  # the start's message waits in Redis; no worker here
        "STEPWELL_VAR_DIR": str(tmp_path),
    }
    log = (tmp_path / "web.log").open("w")
    proc = subprocess.Popen(web_argv(port), cwd=ROOT, env=env, stdout=log, stderr=log)

    def answers() -> bool:
        assert proc.poll() is None, (tmp_path / "web.log").read_text()
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False

    try:
        wait_until(answers, 30, what="uvicorn to listen")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.mark.django_db(transaction=True)
def test_the_procfile_web_serves_the_api_and_live_websockets(acme, web):
    token = make_token(acme)
    upload(acme, "waiter", CODE)
    conn = http.client.HTTPConnection("127.0.0.1", web, timeout=10)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn.request("POST", "/api/v1/workflows/waiter/instances", json.dumps({"id": "w1"}), headers)
    answer = conn.getresponse()
    assert answer.status == 201
    assert json.loads(answer.read())["status"] == "queued"
    conn.request("POST", "/api/v1/workflows/waiter/instances", json.dumps({"id": "w1"}), headers)
    again = conn.getresponse()  # the same keep-alive connection
    assert (again.status, json.loads(again.read())["id"]) == (200, "w1")

    url = f"ws://127.0.0.1:{web}/ws/instances/w1/"
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        snapshot = json.loads(ws.recv(timeout=10))
    assert snapshot["type"] == "snapshot" and snapshot["instance"]["id"] == "w1"
    assert snapshot["seq"] == 1
