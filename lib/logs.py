"""Logs that follow one run across processes: the ids of what is being done, on every line.

The web (a request's tenant), the clock (the tenant and instance it sends) and the
worker (the activation: tenant, instance, step and the activation's token) bind the
ids they know with `bound(...)` at the one place that work starts; a filter on the
handler copies them onto every record, whichever logger wrote it. Context variables
keep them per thread and per asyncio task, so threads serving other requests never
see them.

`LOG_FORMAT=json` writes one JSON object per line (time, level, logger, message,
exception, and the ids); otherwise the familiar text line, with the ids appended.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

# In the order they are appended to a text line.
IDS = ("tenant", "instance", "instance_key", "step", "activation")

_ids: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("stepwell_log_ids")


def current() -> dict[str, Any]:
    """The ids bound here, as a new dict."""
    return dict(_ids.get({}))


@contextlib.contextmanager
def bound(**ids: Any) -> Iterator[None]:
    """Add `ids` (None values are skipped) to every log line written inside the block."""
    token = _ids.set({**_ids.get({}), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _ids.reset(token)


def bind(**ids: Any) -> None:
    """Add `ids` for the rest of the enclosing `bound` block (or of the thread, outside one):
    for what is learned midway, such as a request's tenant once its token is read."""
    _ids.set({**_ids.get({}), **{k: v for k, v in ids.items() if v is not None}})


class ContextFilter(logging.Filter):
    """Copy the bound ids onto each record (`record.ids`); on a handler, so that the
    records of every logger that reaches it get them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "ids"):
            record.ids = _ids.get({})
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback is a string field, never extra lines."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        data.update(getattr(record, "ids", None) or {})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The plain line, with `key=value` for each bound id at its end."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = getattr(record, "ids", None)
        if not ids:
            return line
        tail = " ".join(f"{name}={ids[name]}" for name in IDS if name in ids)
        head, newline, rest = line.partition("\n")  # before a traceback, if any
        return f"{head} [{tail}]{newline}{rest}"


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def logging_config(log_format: str, level: str) -> dict:
    """Django's LOGGING for `LOG_FORMAT` ("text" or "json"). Uvicorn's and Celery's
    loggers go to the same handler, so their lines have the same shape."""
    if log_format not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be text or json, not {log_format!r}")
    formatter = (
        {"()": JsonFormatter}
        if log_format == "json"
        else {"()": TextFormatter, "format": TEXT_FORMAT}
    )
    handler = {
        "class": "logging.StreamHandler",
        "formatter": log_format,
        "filters": ["ids"],
    }
    # Uvicorn configures these with handlers of its own before Django starts.
    own = {"handlers": ["console"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"ids": {"()": ContextFilter}},
        "formatters": {log_format: formatter},
        "handlers": {"console": handler},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "uvicorn": {**own, "level": level},
            "uvicorn.error": {**own, "level": level},
            "uvicorn.access": {**own, "level": level},
        },
    }


class RequestIdsMiddleware:
    """A request's ids last as long as the request: its thread serves others next. The
    views bind what they learn (the tenant of a token or session, an instance)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with bound():
            return self.get_response(request)
