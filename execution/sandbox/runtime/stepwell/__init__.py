"""Stepwell's workflow SDK, as tenant code sees it inside the sandbox (see SDK.md).

Pure standard library, Python 3.11+: it runs on the sandbox interpreter.
"""

from ._errors import NonRetryableError, StepError, WaitTimeout
from ._step import Event, Step

__all__ = ["Event", "NonRetryableError", "Step", "StepError", "WaitTimeout"]
