"""A minimal WebSocket client (RFC 6455, text frames only) for tests against a real server.

The project has no WebSocket client library; this is the smallest honest one: a real
TCP connection, the HTTP upgrade, masked client frames, unmasked server frames.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct


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

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise Closed(None)
            data += chunk
        return data

    def recv(self) -> dict:
        """The next JSON text message; raises Closed on a close frame."""
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        payload = self._read(length)
        opcode = first & 0x0F
        if opcode == 0x8:
            raise Closed(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None)
        if opcode != 0x1:
            return self.recv()
        return json.loads(payload)

    def close(self) -> None:
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(struct.pack("!H", 1000)))
        with contextlib.suppress(OSError):
            self.sock.sendall(bytes([0x88, 0x80 | len(body)]) + mask + body)
        self.sock.close()
