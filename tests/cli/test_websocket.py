"""The command's own WebSocket client against an RFC 6455 server (the websockets package):
the handshake, masking, pings answered while idle, fragments, and the close."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from stepwell_cli import websocket
from websockets.sync.server import ServerConnection, serve

IDLE_SECONDS = 1.5


def handler(conn: ServerConnection) -> None:
    headers = conn.request.headers
    conn.send(f"hello {headers.get('Authorization')} {conn.request.path}")
    time.sleep(IDLE_SECONDS)  # pinged every 0.2 s meanwhile: no pong within 0.5 s closes
    conn.send(["frag", "mented"])  # one message in three frames
    conn.send("x" * 70_000)  # a 64-bit length
    conn.close(4000, "done")


def refuse(conn: ServerConnection, request):
    return conn.respond(403, "no\n") if request.path.startswith("/refused") else None


@pytest.fixture
def server() -> Iterator[str]:
    options = {"ping_interval": 0.2, "ping_timeout": 0.5, "process_request": refuse}
    with serve(handler, "127.0.0.1", 0, compression=None, **options) as srv:
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        yield f"ws://127.0.0.1:{srv.socket.getsockname()[1]}"
        srv.shutdown()


def test_it_answers_pings_while_idle_and_reads_every_kind_of_frame(server):
    ws = websocket.connect(f"{server}/ws/x/?after=3", {"Authorization": "Bearer t"}, timeout=5)
    assert ws.recv() == "hello Bearer t /ws/x/?after=3"
    started = time.monotonic()
    assert ws.recv() == "fragmented"  # still connected: the pings were answered
    assert time.monotonic() - started >= IDLE_SECONDS - 0.1
    assert ws.recv() == "x" * 70_000
    with pytest.raises(websocket.Closed) as closed:
        ws.recv()
    assert (closed.value.code, closed.value.reason) == (4000, "done")


def test_a_server_that_is_not_there_is_a_connection_error():
    with pytest.raises(websocket.WebSocketError, match="cannot connect"):
        websocket.connect("ws://127.0.0.1:9/", timeout=2)


def test_a_refused_upgrade_names_the_http_status(server):
    with pytest.raises(websocket.WebSocketError, match="HTTP 403"):
        websocket.connect(f"{server}/refused/", timeout=5)
