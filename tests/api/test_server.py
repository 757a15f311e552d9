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

from tests.browser.wsclient import WebSocket
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


def call(port: int, method: str, path: str, token: str, body: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn.request(method, path, json.dumps(body or {}), headers)
    answer = conn.getresponse()
    return answer.status, json.loads(answer.read())


@pytest.mark.django_db(transaction=True)
def test_idle_websockets_stay_open_a_minute_on_pings_then_carry_the_next_event(acme, web):
    """Both streams, idle for 60 s with the Procfile's uvicorn: the server pings (a client
    that answers stays), and nothing drops the connection (it used to go at about 5 s,
    when the channel layer's blocking read hit redis-py's socket timeout)."""
    token = make_token(acme)
    upload(acme, "waiter", CODE)
    assert call(web, "POST", "/api/v1/workflows/waiter/instances", token, {"id": "idle"})[0] == 201
    headers = {"Authorization": f"Bearer {token}"}
    streams = [
        WebSocket(f"ws://127.0.0.1:{web}/ws/tenant/", headers),
        WebSocket(f"ws://127.0.0.1:{web}/ws/instances/idle/", headers),
    ]
    assert [ws.recv()["type"] for ws in streams] == ["snapshot", "snapshot"]
    for _ in range(60):
        for ws in streams:
            ws.idle(0.5)  # raises Closed if the server hangs up
    assert all(ws.pings >= 2 for ws in streams), [ws.pings for ws in streams]

    assert call(web, "POST", "/api/v1/instances/idle/terminate", token)[0] == 200
    for ws in streams:
        event = ws.recv()
        assert (event["type"], event["instance"], event["status"]) == (
            "instance.status",
            "idle",
            "terminated",
        )
        ws.close()
