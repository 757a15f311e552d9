"""Exceptions that tenant code raises or catches."""


class NonRetryableError(Exception):
    """Raised by a step function to fail its step at once, without retries."""


class StepError(Exception):
    """A step gave up (retries exhausted, or a child workflow errored).

    Raised inside `run` at the same point on every replay.
    """

    def __init__(self, step: str, type: str, message: str) -> None:
        super().__init__(step, type, message)
        self.step = step
        self.type = type
        self.message = message

    def __str__(self) -> str:
        return f"step {self.step!r} failed: {self.type}: {self.message}"


class WaitTimeout(Exception):
    """A `wait_for_event` or `wait_for_workflow` step reached its timeout."""

    def __init__(self, step: str, kind: str = "wait_for_event") -> None:
        super().__init__(step, kind)
        self.step = step
        self.kind = kind

    def __str__(self) -> str:
        return f"step {self.step!r} ({self.kind}) timed out"


class NestedStepError(NonRetryableError):
    """A step function called `step.*`: steps belong in `run`, not inside each other."""
