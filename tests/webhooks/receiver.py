"""A real HTTP receiver on loopback for the webhook tests: http.server in a thread,
answering each request as its `answer` function says, and keeping what it got."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


class Receiver:
    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None] | None = None):
        self.answer = answer or ok
        self.received: list[Received] = []
        self.stop = threading.Event()  # set at the end: hanging answers give up
        self.sent_bytes = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                receiver.received.append(Received(self.path, dict(self.headers), body))
                self.receiver = receiver
                receiver.answer(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def ok(handler: BaseHTTPRequestHandler) -> None:
    reply(handler, 200, b"thanks")


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"") -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def statuses(*codes: int) -> Callable:
    """Answers with these status codes in turn, then 200."""
    left = list(codes)

    def answer(handler):
        reply(handler, left.pop(0) if left else 200, b"not yet")

    return answer


@contextlib.contextmanager
def receiving(answer=None) -> Iterator[Receiver]:
    with Receiver(answer) as receiver:
        yield receiver
