"""Error reports that show the tenant its own code, not the runtime's."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
MAX_MESSAGE_CHARS = 4_000
MAX_TRACEBACK_CHARS = 16_000


def describe(exc: BaseException, type: str | None = None) -> dict[str, str]:
    """The {"type", "message", "traceback"} of an error, for an outcome."""
    return {
        "type": storable(type or _type_name(exc)),
        "message": message_of(exc),
        "traceback": tenant_traceback(exc),
    }


def storable(text: str) -> str:
    """`text` with what the database cannot store written as escapes: a NUL as \\x00,
    a lone surrogate as \\udxxx (the host would refuse the whole error report)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def message_of(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:  # a tenant's __str__ may itself be broken
        message = f"<{_type_name(exc)} whose str() failed>"
    if len(message) > MAX_MESSAGE_CHARS:
        message = (
            f"{message[:MAX_MESSAGE_CHARS]} [{len(message) - MAX_MESSAGE_CHARS} characters cut]"
        )
    return storable(message)


def tenant_traceback(exc: BaseException) -> str:
    """The formatted traceback, chained exceptions included, minus runtime frames."""
    import traceback  # only errors pay for it

    try:
        report = traceback.TracebackException.from_exception(exc)
        _drop_runtime_frames(report, set())
        text = "".join(report.format())
    except Exception:  # never let reporting an error become a second error
        text = f"{_type_name(exc)}: {message_of(exc)}\n"
    if len(text) > MAX_TRACEBACK_CHARS:  # keep the end, where the exception itself is
        text = f"[{len(text) - MAX_TRACEBACK_CHARS} characters cut]\n" + text[-MAX_TRACEBACK_CHARS:]
    return storable(text)


def _drop_runtime_frames(report: Any, seen: set[int]) -> None:
    import traceback

    if report is None or id(report) in seen:
        return
    seen.add(id(report))
    tenant_frames = [frame for frame in report.stack if not is_runtime_file(frame.filename)]
    report.stack = traceback.StackSummary.from_list(tenant_frames)
    for linked in (
        report.__cause__,
        report.__context__,
        *(getattr(report, "exceptions", None) or ()),
    ):
        _drop_runtime_frames(linked, seen)


def is_runtime_file(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE_DIR)


def _type_name(exc: BaseException) -> str:
    return type(exc).__name__
