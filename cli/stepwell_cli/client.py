"""Stepwell's HTTP API over urllib: JSON in and out, a Bearer token, and errors that carry
the API's `detail` (see API.md)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

# An answer larger than this is not one the API gives; refuse it rather than hold it.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class ApiError(Exception):
    """An answer that is not 2xx, or no answer: `status` 0 when the server was not reached."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(format_detail(detail))
        self.status = status
        self.detail = detail


def format_detail(detail: Any) -> str:
    """The API's `detail` as one readable text: validation errors one per line."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "\n".join(format_item(item) for item in detail)
    return json.dumps(detail)


def format_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    if "line" in item:  # a validation error in workflow code
        return f"line {item['line']}, column {item.get('column', 0)}: {item.get('message', '')}"
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    return f"{where}: {item.get('msg', item)}" if where else str(item.get("msg", item))


class Client:
    """One API base URL and token; every call answers the decoded JSON or raises ApiError."""

    def __init__(self, url: str, token: str, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.last_status = 0  # of the last answer: 201 and 200 can mean different things

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Client:
        environ = os.environ if environ is None else environ
        url, token = environ.get("STEPWELL_URL", ""), environ.get("STEPWELL_TOKEN", "")
        if not url or not token:
            missing = [n for n, v in (("STEPWELL_URL", url), ("STEPWELL_TOKEN", token)) if not v]
            raise ApiError(0, f"set {' and '.join(missing)} in the environment")
        return cls(url, token)

    def call(
        self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
    ) -> Any:
        url = f"{self.url}/api/v1{path}"
        if query:
            pairs = {k: v for k, v in query.items() if v is not None}
            url += "?" + urllib.parse.urlencode(pairs) if pairs else ""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        return self._send(request)

    def _send(self, request: urllib.request.Request) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                self.last_status = answer.status
                return decode(answer.read(MAX_ANSWER_BYTES + 1))
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, detail_of(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, f"cannot reach {self.url}: {reason}") from None

    def get(self, path: str, **query: Any) -> Any:
        return self.call("GET", path, query=query)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body)

    def put(self, path: str, body: Any) -> Any:
        return self.call("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def websocket_url(self, path: str) -> str:
        parts = urllib.parse.urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path + path, "", ""))


def decode(raw: bytes) -> Any:
    if len(raw) > MAX_ANSWER_BYTES:
        raise ApiError(0, f"the answer is over {MAX_ANSWER_BYTES} bytes")
    return json.loads(raw) if raw.strip() else None


def detail_of(exc: urllib.error.HTTPError) -> Any:
    """The `detail` of an error answer, or its status line when the body is not the API's."""
    try:
        doc = json.loads(exc.read(MAX_ANSWER_BYTES))
    except (ValueError, OSError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(doc, dict) and "detail" in doc:
        return doc["detail"]
    return f"HTTP {exc.code} {exc.reason}"


def quote(segment: str) -> str:
    """A path segment (an instance id may hold ':' and '/', as schedule starts do)."""
    return urllib.parse.quote(segment, safe="")
