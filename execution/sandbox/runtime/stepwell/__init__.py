"""Stepwell's workflow SDK, as tenant code sees it inside the sandbox (see SDK.md).

Pure standard library, Python 3.11+: it runs on the sandbox interpreter.
Imports are lazy and typing-free because every step starts a fresh interpreter and pays for them
(no dataclasses, typing, contextlib, traceback or re until a path needs them).
"""

from ._errors import NonRetryableError, StepError, WaitTimeout
from ._step import Event, Step

__all__ = ["Event", "NonRetryableError", "Step", "StepError", "WaitTimeout"]
