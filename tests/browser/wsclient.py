"""A minimal WebSocket client (RFC 6455, text frames only) for tests against a real server.

The project has no WebSocket client library; this is the smallest honest one: a real
TCP connection, the HTTP upgrade, masked client frames, unmasked server frames. It
answers the server's pings, as API.md asks of clients, and counts them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import socket
import struct
import time


class Closed(Exception):
    def __init__(self, code: int | None):
        super().__init__(f"closed with code {code}")
        self.code = code


class WebSocket:
    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = 10):
        assert url.startswith("ws://")
        hostport, _, path = url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port or 80)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET /{path} HTTP/1.1",
            f"Host: {hostport}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("the server closed the handshake")
            head += chunk
        self.status = int(head.split(b" ", 2)[1])
        self.pings = 0

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise Closed(None)
            data += chunk
        return data

    def _frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        return first & 0x0F, self._read(length)

    def _message(self) -> dict | None:
        """The next frame: a JSON text message, or None for a control frame (a ping is
        answered); raises Closed on a close frame."""
        opcode, payload = self._frame()
        if opcode == 0x8:
            raise Closed(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None)
        if opcode == 0x9:
            self.pings += 1
            self._send(0xA, payload)
        return json.loads(payload) if opcode == 0x1 else None

    def recv(self) -> dict:
        """The next JSON text message; raises Closed on a close frame."""
        while (message := self._message()) is None:
            pass
        return message

    def idle(self, seconds: float) -> None:
        """Wait `seconds` with nothing to read but pings (answered); raises Closed if the
        server closes, AssertionError if a message comes."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.sock], [], [], left)[0]:
                message = self._message()
                assert message is None, f"unexpected message while idle: {message}"

    def _send(self, opcode: int, body: bytes) -> None:
        """One masked control frame (a body under 126 bytes, as control frames are)."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(body))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(body)]) + mask + masked)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(0x8, struct.pack("!H", 1000))
        self.sock.close()
