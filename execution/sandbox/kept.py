"""Sticky execution: a warm jail's child kept alive between an instance's steps.

After a completed do step the child pauses instead of exiting (runtime/zygote.py,
stepwell/_keep.py). The engine records the step; while it holds the instance's lease and
the next step is due at once, it resumes the child with the step's result as recorded,
and the workflow goes on where it stands, without a fork or a replay of its history.
Each step is still recorded before the next begins. The jail stays leased to this
worker the whole time; the child is ended (close()) as soon as the engine stops, and
whenever anything about it is not exactly as expected the engine falls back on a fresh
child that replays, which is always correct.
"""

import contextlib
import dataclasses
import logging
import signal
import time

from execution.sandbox.job import watch_notes
from execution.sandbox.outcome import JailExit, classify
from execution.sandbox.protocol import dumps_following
from execution.sandbox.result import SandboxRequest, SandboxResult, Status, failure
from execution.sandbox.warm_jail import WarmJail
from execution.sandbox.warm_step import StepRun

logger = logging.getLogger(__name__)

# The child's CPU rlimit counts all its steps: it is resumed only while it has spent less
# than this share of one step's limit, so every step keeps at least the rest of it.
KEEP_CPU_SHARE = 0.1


class KeptChild:
    def __init__(self, jail: WarmJail, lease: contextlib.ExitStack, cpu_seconds: float) -> None:
        self.jail = jail
        self._lease = lease  # the pool's lease of the jail: given back by close()
        self.cpu_seconds = cpu_seconds  # what the child has spent so far
        self.closed = False

    def resume(self, request: SandboxRequest, output, now: str) -> SandboxResult | None:
        """The next step in the kept child, going on with `output` (the last step's result
        as recorded) at `now`; None if it cannot be resumed (it is closed then, and the
        caller runs the activation as usual)."""
        if self.closed:
            return None
        if (
            request.limits != self.jail.limits
            or self.cpu_seconds >= KEEP_CPU_SHARE * request.limits.cpu_seconds
            or not self.jail.alive
        ):
            self.close()
            return None
        try:
            following = dumps_following(output, now)
        except (TypeError, ValueError):
            self.close()
            return None
        started = time.monotonic()
        try:
            step = self.jail.resume(following, watch_notes(request.on_progress))
        except Exception as exc:  # as WarmSandbox.run: a sandbox failure, never an exception
            logger.exception("a kept child of tenant %s failed to resume", request.tenant)
            self.jail.kill()
            self._give_back()
            message = f"the sandbox failed: {exc}"
            return failure(Status.SANDBOX_FAILURE, "SandboxFailure", message, started)
        if not step.delivered:  # the jail was gone: nothing of the step ran
            self._give_back()
            return None
        self.cpu_seconds += step.run.cpu_seconds
        result = result_of(step, request)
        if step.kept:
            return dataclasses.replace(result, kept=self)
        self._give_back()
        return result

    def close(self) -> None:
        """End the child and give the jail back to its pool."""
        if self.closed:
            return
        try:
            self.jail.end_kept()
        finally:
            self._give_back()

    def _give_back(self) -> None:
        self.closed = True
        self._lease.close()


def result_of(step: StepRun, request: SandboxRequest) -> SandboxResult:
    """Classify as fresh mode does; a jail lost for no fault of the step is a sandbox failure."""
    run = step.run
    # Without the zygote's word, what the host saw itself decides (the jail was killed).
    jail_exit = step.exit or JailExit(True, None, signal.SIGKILL, False)
    result = classify(
        run,
        request.limits,
        oom=step.oom,
        peak_memory_bytes=run.maxrss_bytes or None,
        jail_exit=jail_exit,
    )
    if step.exit is None and not (run.over_cap or run.deadline_hit or step.oom):
        # The engine retries a sandbox failure, a few times in a row at most; the notes stay.
        message = f"the sandbox failed: its warm jail was lost during the step ({step.lost})"
        result = dataclasses.replace(
            result,
            status=Status.SANDBOX_FAILURE,
            error={"type": "SandboxFailure", "message": message},
        )
    return result
