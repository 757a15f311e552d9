"""HTTP for the ASGI server: Django's request handling on a pool of threads, one hop a request.

Django's own ASGIHandler runs a sync view on a thread started for the request, and each
middleware's process_request and process_response there too, each a hop from the event
loop and back: some twenty hops and a thread start per API request, which under load
cost more than the view itself. Here the whole of Django's sync handler (middleware,
URL routing, view, and the request_started/request_finished signals that give database
connections back to the pool) runs in one call on a long-lived thread, as under a
threaded WSGI server, which is also what Django's test client drives. The event loop
only reads the request body and writes the answer. Streaming answers (files) are sent
chunk by chunk as the thread produces them.
"""

from __future__ import annotations

import asyncio
import io
import sys
from concurrent.futures import ThreadPoolExecutor
from tempfile import SpooledTemporaryFile

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler


def default_threads() -> int:
    """As many threads as the process's database pool has connections: none waits for one."""
    options = settings.DATABASES["default"].get("OPTIONS", {})
    pool = options.get("pool")
    return pool["max_size"] if isinstance(pool, dict) and "max_size" in pool else 8


class ThreadedHTTP:
    """An ASGI application for `http` scopes that runs Django's WSGIHandler on threads."""

    def __init__(self, threads: int | None = None):
        self.handler = WSGIHandler()
        self.executor = ThreadPoolExecutor(
            max_workers=threads or default_threads(), thread_name_prefix="http"
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"ThreadedHTTP cannot serve a {scope['type']!r} scope")
        body = await read_body(receive)
        if body is None:
            return  # the client went away before sending it all
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(
                self.executor, self.respond, scope, body, send, loop
            )
        finally:
            body.close()
        if answer is not None:
            start, content = answer
            await send(start)
            await send({"type": "http.response.body", "body": content})

    def respond(self, scope, body, send, loop):
        """On a pool thread: run Django. Returns (start, content) for the event loop to send,
        or None when a streaming answer was already sent from here."""
        started = {}

        def start_response(status, headers, exc_info=None):
            started["status"] = int(status.split(" ", 1)[0])
            # WSGIHandler gives a cookie a leading space; Django's ASGIHandler strips it.
            started["headers"] = [
                (name.lower().encode("latin1"), value.strip().encode("latin1"))
                for name, value in headers
            ]

        response = self.handler(environ_of(scope, body), start_response)
        try:
            start = {"type": "http.response.start", **started}
            if not getattr(response, "streaming", False):
                return start, b"".join(response)
            self.stream(response, start, send, loop)
            return None
        finally:
            # Sends request_finished, which gives this thread's database connection back.
            response.close()

    @staticmethod
    def stream(response, start, send, loop) -> None:
        def push(message) -> None:
            asyncio.run_coroutine_threadsafe(send(message), loop).result()

        push(start)
        for chunk in response:
            if chunk:
                push({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
        push({"type": "http.response.body"})


async def read_body(receive):
    """The whole request body as a file (spooled to disk past Django's in-memory limit,
    as Django's ASGIHandler does), or None if the client disconnected."""
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    if not message.get("more_body"):
        return io.BytesIO(message.get("body", b""))
    # Closed by the caller once Django has answered.
    body = SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")  # noqa: SIM115
    body.write(message.get("body", b""))
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            body.close()
            return None
        body.write(message.get("body", b""))
    body.seek(0)
    return body


def environ_of(scope, body) -> dict:
    """The WSGI environ (PEP 3333) of an ASGI http scope and its body."""
    script_name = scope.get("root_path", "").encode().decode("latin1")
    path_info = scope["path"].encode().decode("latin1")
    if script_name and path_info.startswith(script_name):
        path_info = path_info[len(script_name) :]
    server = scope.get("server") or ("localhost", 80)
    body.seek(0, io.SEEK_END)
    length = body.tell()
    body.seek(0)
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": scope.get("query_string", b"").decode("latin1"),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1] if server[1] is not None else 80),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if scope.get("client"):
        environ["REMOTE_ADDR"] = scope["client"][0]
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin1").upper().replace("-", "_")
        if name not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            name = "HTTP_" + name
        value = raw_value.decode("latin1")
        if name in environ:
            # Repeated headers join as Django's ASGIHandler joins them (cookies with "; ").
            glue = "; " if name == "HTTP_COOKIE" else ","
            value = environ[name].rstrip("; " if name == "HTTP_COOKIE" else "") + glue + value
        environ[name] = value
    # The body as read, whatever the client declared (or if it sent it chunked).
    environ["CONTENT_LENGTH"] = str(length)
    return environ
