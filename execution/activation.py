"""What one activation of an instance holds: its lease, its code, its input and history."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from execution.models import Step
from tenants.models import Quota


@dataclass
class Activation:
    instance_pk: int
    instance_key: str
    tenant_id: int
    token: str  # the lease's owner
    generation: int
    tenant_slug: str
    code: str
    code_sha256: str
    input: dict
    quota: Quota  # read when the instance was claimed
    pending: Step | None  # the unresolved do step being retried, if any
    history_bytes: int = 0  # Instance.history_bytes as the activation began
    # The do step's row as it is now written, if this activation showed it as running.
    marked: Step | None = None
    on_progress: Callable[[dict], None] | None = None
    # The tenant's secrets, decrypted when the activation was claimed: handed to its jail
    # alone, and redacted from all it sends back (execution.redaction); never stored.
    secrets: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    # How long the do step it ran took inside the jail, as the runtime measured it (0.0
    # if it ran none): the rest of the activation's time is the platform's overhead.
    step_seconds: float = 0.0
    # Warm mode's sticky execution: the child that ran the step before this activation,
    # paused, for this activation to resume (execution.sandbox.kept.KeptChild); whoever
    # holds the activation resumes or closes it.
    kept: object | None = dataclasses.field(default=None, repr=False)
    # A kept child runs ahead with its step's result as it sent it (stepwell/_step.py):
    # False when redaction changed that result, so that what the child did next may
    # differ from a replay's, and neither it nor what it answered past the step is used.
    ran_ahead_as_recorded: bool = True

    @property
    def sandbox_mode(self) -> str:
        # Benchmarks only; get_sandbox refuses "unsandboxed" without STEPWELL_BENCH_UNSANDBOXED=1.
        return settings.STEPWELL_BENCH_SANDBOX_MODE or self.quota.sandbox_mode

    def next_index(self) -> int:
        """The index of the step this activation is expected to run."""
        return self.pending.index if self.pending is not None else len(self.input["history"])

    def row_for(self, index: int) -> Step | None:
        """The stored row of step `index`, as far as this activation knows it."""
        for step in (self.marked, self.pending):
            if step is not None and step.index == index:
                return step
        return None

    def then(self, step: Step, grown: int = 0) -> Activation:
        """The next activation of the same instance under the same lease, `step` recorded
        (its history `grown` bytes larger)."""
        # The history is handed on, not copied: a kept lease's next activation costs the
        # same at step 2,000 as at step 2 (this one is done with it once recorded). A step
        # being retried replaces its own entry.
        history = self.input["history"]
        if step.index == len(history):
            history.append(step.as_history())
        else:
            history = [*history[: step.index], step.as_history()]
        return dataclasses.replace(
            self,
            input={**self.input, "history": history, "now": timezone.now().isoformat()},
            pending=None,
            marked=None,
            on_progress=None,
            step_seconds=0.0,
            kept=None,
            ran_ahead_as_recorded=True,
            history_bytes=self.history_bytes + grown,
        )


class Next(enum.Enum):
    """What record() tells the worker when it does not hand it the next Activation."""

    DONE = "done"  # the instance is not the worker's to run now
    AGAIN = "again"  # ready again, but its lease was given back: claim it anew
