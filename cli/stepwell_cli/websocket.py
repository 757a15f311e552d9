"""A minimal WebSocket client (RFC 6455) on the standard library: enough to follow one
instance's progress stream. Text messages only; answers pings; closes politely.

Everything the server sends is bounded: a frame or message over MAX_MESSAGE_BYTES ends
the connection rather than filling memory.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import ssl
import struct
import urllib.parse

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_HANDSHAKE_BYTES = 64 * 1024

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketError(OSError):
    """The connection failed or broke the protocol: a dropped stream, to be resumed."""


class Closed(Exception):
    """The server closed the connection; `code` is its close code (1005 if none)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def connect(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> WebSocket:
    """Open `url` (ws:// or wss://) and finish the opening handshake."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if secure else 80)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
        if secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    except OSError as exc:
        raise WebSocketError(f"cannot connect to {host}:{port}: {exc}") from None
    ws = WebSocket(sock)
    try:
        ws.handshake(parts, headers or {})
    except BaseException:
        ws.abort()
        raise
    return ws


class WebSocket:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.closed = False

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def handshake(self, parts: urllib.parse.SplitResult, headers: dict[str, str]) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, answer = self._read_head()
        if status != 101:
            raise WebSocketError(f"the server refused the WebSocket: HTTP {status}")
        if answer.get("sec-websocket-accept") != accept_key(key):
            raise WebSocketError("the server's Sec-WebSocket-Accept does not match the key")

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HANDSHAKE_BYTES:
                raise WebSocketError("the handshake answer is too long")
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(status_line.split()[1])
        except (IndexError, ValueError):
            raise WebSocketError(f"not an HTTP answer: {status_line[:100]!r}") from None
        fields = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        return status, fields

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except OSError as exc:  # a timeout included: the stream has gone quiet for too long
            raise WebSocketError(f"the connection broke: {exc}") from None
        if not chunk:
            raise WebSocketError("the connection was dropped without a close frame")
        self.buffer += chunk

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _frame(self) -> tuple[bool, int, bytes]:
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._take(8))
        if length > MAX_MESSAGE_BYTES:
            raise WebSocketError(f"a frame of {length} bytes is over the limit")
        mask = self._take(4) if second & 0x80 else None
        payload = self._take(length)
        if mask:  # servers must not mask, but unmasking costs nothing
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(first & 0x80), first & 0x0F, payload

    def recv(self) -> str:
        """The next text message; pings are answered on the way. Raises Closed at the
        server's close, WebSocketError when the connection breaks."""
        parts: list[bytes] = []
        size = 0
        while True:
            fin, opcode, payload = self._frame()
            if opcode == PING:
                self.send_frame(PONG, payload)
            elif opcode == PONG:
                continue
            elif opcode == CLOSE:
                raise self._closed_by_server(payload)
            elif opcode in (TEXT, BINARY, CONTINUATION):
                size += len(payload)
                if size > MAX_MESSAGE_BYTES:
                    raise WebSocketError(f"a message over {MAX_MESSAGE_BYTES} bytes")
                parts.append(payload)
                if fin:
                    return b"".join(parts).decode("utf-8", errors="replace")
            else:
                raise WebSocketError(f"unknown WebSocket opcode {opcode}")

    def _closed_by_server(self, payload: bytes) -> Closed:
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        reason = payload[2:125].decode("utf-8", errors="replace")
        if not self.closed:
            with contextlib.suppress(OSError):  # echo the close, as the protocol asks
                self.send_frame(CLOSE, payload[:2])
        self.abort()
        return Closed(code, reason)

    def send_frame(self, opcode: int, payload: bytes = b"") -> None:
        """One final frame, masked as a client's must be."""
        head = bytes([0x80 | opcode])
        length = len(payload)
        if length < 126:
            head += bytes([0x80 | length])
        elif length < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", length)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_text(self, text: str) -> None:
        self.send_frame(TEXT, text.encode())

    def close(self, code: int = 1000) -> None:
        if self.closed:
            return
        with contextlib.suppress(OSError):
            self.send_frame(CLOSE, struct.pack("!H", code))
        self.abort()

    def abort(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()
