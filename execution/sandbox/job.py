"""How every sandbox mode opens a run: the request checked and encoded as the job a jail
reads, refused with a result when it cannot run, and its progress notes watched.

Each mode starts a run this way, so a bad input or a broken set-up is the same
SandboxResult whichever mode met it.
"""

import logging
import time
from collections.abc import Callable

from execution.sandbox.config import SandboxSetupError
from execution.sandbox.protocol import NoteWatcher, dumps_job
from execution.sandbox.result import SandboxRequest, SandboxResult, Status, failure

logger = logging.getLogger(__name__)


class Refused(Exception):
    """A request that ends before any jail runs; `result` says why."""

    def __init__(self, result: SandboxResult):
        super().__init__(result.error)
        self.result = result


def open_job(request: SandboxRequest, prepare, *, secrets: bool = True) -> tuple[bytes, float]:
    """Ready the sandbox and encode the job: (job bytes, start time), or Refused.

    The job holds the request's secrets unless `secrets` is False: a warm jail's zygote
    reads the job, and must never hold them (its child gets them apart, warm_step)."""
    if not isinstance(request, SandboxRequest):
        raise TypeError("run() takes a SandboxRequest")
    started = time.monotonic()
    try:
        prepare()
        held = request.secrets if secrets else None
        return dumps_job(request.mode, request.input, held), started
    except (TypeError, ValueError) as exc:
        raise Refused(
            failure(Status.ERROR, "BadInput", f"the input is not JSON: {exc}", started)
        ) from None
    except (SandboxSetupError, OSError) as exc:
        logger.exception("sandbox set-up failed")
        raise Refused(
            failure(Status.SANDBOX_FAILURE, "SandboxFailure", str(exc), started)
        ) from None


def watch_notes(
    callback: Callable[[dict], None] | None,
) -> Callable[[bytearray], None] | None:
    """A result-channel watcher that passes progress notes to `callback`, or None."""
    if callback is None:
        return None

    def safe(note: dict) -> None:
        try:
            callback(note)
        except Exception:
            logger.exception("a progress callback failed; the step goes on")

    return NoteWatcher(safe).feed
