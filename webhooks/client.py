"""One webhook attempt: a POST to a checked address, bounded in time and in what it reads.

Written on sockets and http.client's response parser rather than a full client, so
that the bounds are plain to see: the whole attempt (connect, TLS, send, read) has one
wall-clock deadline, every socket call waits at most what is left of it, and at most
`max_read` bytes of the answer (status line and headers included) are ever read.
Redirects are answers like any other: never followed.
"""

from __future__ import annotations

import http.client
import io
import select
import socket
import ssl
import time
from dataclasses import dataclass

from webhooks.addresses import Target


class AttemptFailed(Exception):
    """The attempt got no HTTP answer: the message says why."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # its start, within the read limit


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise AttemptFailed("no answer within the deadline")
        return left


class CappedReader(io.RawIOBase):
    """The socket's bytes up to `limit` in all, each read within the deadline."""

    def __init__(self, sock: socket.socket, limit: int, deadline: Deadline):
        self.sock, self.left, self.deadline = sock, limit, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left <= 0:
            return 0  # as if the peer had closed: the parser stops here
        self.sock.settimeout(self.deadline.left())
        try:
            n = self.sock.recv_into(memoryview(buffer)[: min(len(buffer), self.left)])
        except TimeoutError:
            raise AttemptFailed("no answer within the deadline") from None
        self.left -= n
        return n


class ParserSocket:
    """What http.client.HTTPResponse reads from: makefile() only."""

    def __init__(self, reader: CappedReader):
        self.reader = reader

    def makefile(self, mode: str, *args, **kwargs):
        return io.BufferedReader(self.reader, buffer_size=4096)


def post(
    target: Target, body: bytes, headers: dict[str, str], *, deadline: float, max_read: int
) -> Answer:
    """POST `body` to `target`; the answer's status and the start of its body, or
    AttemptFailed. Never longer than `deadline` seconds, never more than `max_read` bytes."""
    clock = Deadline(deadline)
    try:
        sock = socket.create_connection((target.ip, target.port), timeout=clock.left())
    except TimeoutError:
        raise AttemptFailed("could not connect within the deadline") from None
    except OSError as exc:
        raise AttemptFailed(f"could not connect: {exc.strerror or exc}") from None
    try:
        if target.scheme == "https":
            sock = tls(sock, target.host, clock)
        sock.settimeout(clock.left())
        sock.sendall(request(target, body, headers))  # one timeout for all of it
        return answer(sock, clock, max_read)
    except TimeoutError:
        raise AttemptFailed("no answer within the deadline") from None
    except ssl.SSLError as exc:
        raise AttemptFailed(f"TLS failed: {exc.reason or exc}") from None
    except (http.client.HTTPException, ValueError) as exc:
        raise AttemptFailed(f"not an HTTP answer: {exc!r}"[:300]) from None
    except OSError as exc:
        raise AttemptFailed(f"the connection failed: {exc.strerror or exc}") from None
    finally:
        sock.close()


def tls(sock: socket.socket, host: str, clock: Deadline) -> ssl.SSLSocket:
    """TLS over the connected socket, the certificate checked against `host` (not the IP);
    the handshake driven without blocking, so that a trickling peer cannot stretch it."""
    wrapped = ssl.create_default_context().wrap_socket(
        sock, server_hostname=host, do_handshake_on_connect=False
    )
    wrapped.setblocking(False)
    while True:
        try:
            wrapped.do_handshake()
            return wrapped
        except ssl.SSLWantReadError:
            select.select([wrapped], [], [], clock.left())
        except ssl.SSLWantWriteError:
            select.select([], [wrapped], [], clock.left())


def request(target: Target, body: bytes, headers: dict[str, str]) -> bytes:
    default_port = {"http": 80, "https": 443}[target.scheme]
    host = f"[{target.host}]" if ":" in target.host else target.host
    if target.port != default_port:
        host += f":{target.port}"
    lines = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {host}",
        "User-Agent: Stepwell-Webhooks/1",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def answer(sock: socket.socket, clock: Deadline, max_read: int) -> Answer:
    reader = CappedReader(sock, max_read, clock)
    response = http.client.HTTPResponse(ParserSocket(reader))
    try:
        response.begin()
    except http.client.RemoteDisconnected:
        if reader.left <= 0:
            raise AttemptFailed(f"the answer's headers are over {max_read} bytes") from None
        raise
    if 200 <= response.status < 300:
        return Answer(response.status, b"")  # its body says nothing we keep
    # The start of a refusal's body, for the delivery log: what there is in time.
    try:
        start = response.read(min(1024, reader.left))
    except http.client.IncompleteRead as exc:
        start = exc.partial
    except AttemptFailed:
        start = b""
    return Answer(response.status, start)
