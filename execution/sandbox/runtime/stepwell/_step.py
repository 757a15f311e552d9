"""The `event` and `step` objects that `run(event, step)` receives, and replay."""

from __future__ import annotations

import _signal  # signal's C core, always loaded (see _capture)

from ._arguments import attempt_timeout, check_text, parse_retries, wait_timeout
from ._attempt import run_attempt
from ._durations import after, format_instant, parse_duration, parse_instant
from ._errors import NestedStepError, StepError, WaitTimeout
from ._keep import keeping, pause
from ._progress import announce
from ._protocol import ActivationInput, ProtocolError, Record, parse_now
from ._results import ResultError, as_json
from ._secrets import Secrets
from .replay import caller_line, compare, message

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

WAITS = ("wait_for_event", "wait_for_workflow")
DEFAULT_WAIT = "24 hours"


class Event:
    """What the instance was started with, and the tenant's secrets for this activation.

    Immutable, compared and printed like the frozen dataclass it was; a plain class
    because dataclasses imports inspect, ast and re. `secrets` takes no part in
    comparing or printing: it is read when the activation starts, never recorded.
    """

    __slots__ = ("instance_id", "payload", "secrets", "timestamp")
    __match_args__ = ("payload", "instance_id", "timestamp")

    def __init__(
        self, payload: Any, instance_id: str, timestamp: str, secrets: Secrets | None = None
    ) -> None:
        object.__setattr__(self, "payload", payload)
        object.__setattr__(self, "instance_id", instance_id)
        object.__setattr__(self, "timestamp", timestamp)
        object.__setattr__(self, "secrets", secrets if secrets is not None else Secrets())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: the event is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: the event is read-only")

    def __repr__(self) -> str:
        return (
            f"Event(payload={self.payload!r}, instance_id={self.instance_id!r}, "
            f"timestamp={self.timestamp!r})"
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.payload, self.instance_id, self.timestamp) == (
            other.payload,
            other.instance_id,
            other.timestamp,
        )

    def __hash__(self) -> int:
        return hash((self.payload, self.instance_id, self.timestamp))


class Suspend(BaseException):
    """Unwinds `run` once this activation's outcome is decided.

    A BaseException, so that tenant code catching Exception lets it through.
    Tenant code that catches BaseException is tampering: the decided outcome
    is kept in `Step` and returned all the same.
    """


class Step:
    """Replays recorded steps and turns the first new one into the activation's outcome."""

    def __init__(self, activation: ActivationInput, secrets: Secrets | None = None) -> None:
        self._activation = activation
        self._secrets = secrets if secrets is not None else Secrets()
        self._next_index = 0
        self._outcome: dict[str, Any] | None = None
        self._ahead: dict[str, Any] | None = None  # a kept step's outcome not yet sent
        self._run_ahead = RunAhead()
        self._running: str | None = None  # the step whose function is running now
        self._nested_call: str | None = None

    def do(
        self, name: str, fn: Callable[[], Any], *, retries: Any = None, timeout: Any = None
    ) -> Any:
        """Run `fn()` once, durably; return its JSON-serialisable result."""
        self._enter("do", name)
        name = check_text(name, "step name")
        if not callable(fn):
            raise TypeError(f"step.do({name!r}, fn): fn must be callable, not {fn!r}")
        policy = parse_retries(retries)
        seconds = attempt_timeout(timeout, self._activation.limits.step_timeout_seconds)
        index, record = self._claim(name, "do", {})
        if record is not None and record.status not in ("failed", "running"):
            return _replay(record)
        outcome = self._execute(index, name, fn, policy, seconds)
        if outcome["status"] == "complete" and keeping():
            return self._kept(outcome)
        self._finish(outcome)

    def sleep(self, name: str, duration: Any) -> None:
        """Suspend the instance for `duration`, counted from this activation."""
        self._enter("sleep", name)
        name = check_text(name, "step name")
        seconds = parse_duration(duration, "sleep duration")
        until = after(self._activation.now, seconds, "sleep duration")
        self._sleep(name, format_instant(until), seconds)

    def sleep_until(self, name: str, when: Any) -> None:
        """Suspend the instance until `when` (aware datetime, ISO string or Unix timestamp)."""
        self._enter("sleep_until", name)
        name = check_text(name, "step name")
        until = format_instant(parse_instant(when, "sleep_until time"))
        self._sleep(name, until, None)

    def wait_for_event(self, name: str, event_type: str, *, timeout: Any = DEFAULT_WAIT) -> Any:
        """Suspend until an event of `event_type` arrives; return its payload."""
        self._enter("wait_for_event", name)
        name = check_text(name, "step name")
        request = {
            "event_type": check_text(event_type, "event_type"),
            "timeout_seconds": wait_timeout(timeout, "wait_for_event timeout"),
        }
        return self._suspend_or_replay(name, "wait_for_event", "wait", request)

    def start_workflow(
        self, name: str, workflow: str, payload: Any, *, instance_id: str | None = None
    ) -> str:
        """Start an instance of another workflow, exactly once; return its id."""
        self._enter("start_workflow", name)
        name = check_text(name, "step name")
        request = {
            "workflow": check_text(workflow, "workflow"),
            "payload": self._payload(payload),
            "instance_id": None if instance_id is None else check_text(instance_id, "instance_id"),
        }
        return self._suspend_or_replay(name, "start_workflow", "start_workflow", request)

    def wait_for_workflow(self, name: str, instance_id: str, *, timeout: Any = DEFAULT_WAIT) -> Any:
        """Suspend until that instance ends; return its output."""
        self._enter("wait_for_workflow", name)
        name = check_text(name, "step name")
        request = {
            "instance_id": check_text(instance_id, "instance_id"),
            "timeout_seconds": wait_timeout(timeout, "wait_for_workflow timeout"),
        }
        return self._suspend_or_replay(name, "wait_for_workflow", "wait_workflow", request)

    # What the engine reads once `run` is over.

    @property
    def outcome(self) -> dict[str, Any] | None:
        """The decided outcome (a new step or non-determinism), if any; a kept step's that
        was not sent yet comes first (whatever happened after it, its record stands)."""
        return self._ahead or self._outcome

    @property
    def decided(self) -> dict[str, Any] | None:
        """The outcome a step call decided (a new step or non-determinism), if any."""
        return self._outcome

    def first_unreached(self) -> Record | None:
        """The first recorded step that this replay did not reach, if any."""
        history = self._activation.history
        return history[self._next_index] if self._next_index < len(history) else None

    # Replay.

    def _enter(self, method: str, name: Any) -> None:
        if self._outcome is not None:  # tenant code swallowed Suspend: stop it again
            raise Suspend
        if self._ahead is not None:
            self._flush_ahead()
        if self._running is not None:
            self._nested_call = f"step.{method}({name!r})"
            raise NestedStepError(
                f"step.{method}({name!r}) was called inside the function of step "
                f"{self._running!r}: call step methods from run(), not from a step function"
            )

    def _claim(self, name: str, kind: str, shape: dict[str, Any]) -> tuple[int, Record | None]:
        """The next index, and its record if there is one; stop on non-determinism."""
        index = self._next_index
        self._next_index += 1
        history = self._activation.history
        record = history[index] if index < len(history) else None
        if record is not None:
            new = {"name": name, "kind": kind, "shape": shape}
            if compare(self._as_called(record), new) is not None:
                self._finish(nondeterminism(record, new, line=caller_line(self)))
        return index, record

    def _as_called(self, record: Record) -> dict[str, Any]:
        """The recorded step as its call was made: a name or shape that held a secret was
        stored with [secret:NAME] in its place."""
        step = record.as_step()
        step["name"] = self._secrets.expand(record.name)
        if step["shape"]:
            step["shape"] = {
                field: self._secrets.expand(value) if isinstance(value, str) else value
                for field, value in step["shape"].items()
            }
        return step

    def _suspend_or_replay(
        self, name: str, kind: str, outcome_kind: str, request: dict[str, Any]
    ) -> Any:
        index, record = self._claim(name, kind, shape_of(kind, request))
        if record is not None and record.status in ("complete", "errored", "timed_out"):
            return _replay(record)
        self._finish(
            {"kind": outcome_kind, "index": index, "name": name, "step_kind": kind, **request}
        )

    def _sleep(self, name: str, until: str, seconds: float | None) -> None:
        request = {"until": until, "duration_seconds": seconds}
        self._suspend_or_replay(name, "sleep", "sleep", request)

    def _execute(
        self, index: int, name: str, fn: Callable[[], Any], retries: dict, timeout: float
    ) -> dict[str, Any]:
        self._running = name
        announce(
            {
                "kind": "intent",
                "index": index,
                "name": name,
                "step_kind": "do",
                "retries": retries,
                "timeout_seconds": timeout,
            }
        )
        try:
            attempt = run_attempt(fn, name, timeout, self._activation.limits)
        finally:
            self._running = None
        if self._nested_call is not None:  # fails the step even if the function hid the error
            attempt.error = attempt.error or {
                "type": NestedStepError.__name__,
                "message": f"{self._nested_call} was called inside the function of step {name!r}",
                "traceback": "",
            }
            attempt.retryable = False
        outcome = {"kind": "step", "index": index, "name": name, "step_kind": "do"}
        if attempt.error is None:
            outcome.update(status="complete", output=attempt.output)
        else:
            outcome.update(status="failed", error=attempt.error, retryable=attempt.retryable)
        outcome.update(
            retries=retries,
            timeout_seconds=timeout,
            logs=attempt.logs,
            duration_ms=attempt.duration_ms,
        )
        return outcome

    def _kept(self, outcome: dict[str, Any]) -> Any:
        """The step is over and this process goes on (stepwell._keep), running ahead: its
        outcome waits, and run() goes on with the step's result as JSON gives it back (what
        the host records, unless it redacts a secret in it: then the host ends this process
        instead of resuming it). The outcome is sent at the next step call, before anything
        of it runs, or within AHEAD_SECONDS if run() does not get there (RunAhead); if run()
        returns first, with its output (`then`), so that the host records both at once."""
        self._ahead = outcome  # what the host reads if the process ends here
        self._run_ahead.start(self)
        return copy_of(outcome["output"])

    def _flush_ahead(self) -> None:
        """Send the outcome waiting since the last step, and wait for the host to have
        recorded it (the pause); a no-op without one. Called at the next step call, and
        from RunAhead's alarm."""
        outcome = self._run_ahead.take(self)
        if outcome is None:
            return
        _, now = pause(outcome)  # the output as recorded: what this process went on with
        try:
            self._activation.now = parse_now(now)
        except ProtocolError as exc:  # a host bug: stop here rather than run on a bad clock
            self._finish({"kind": "error", "error": {"type": "ProtocolError", "message": str(exc)}})

    def hold_ahead(self) -> None:
        """run() is over: an outcome still waiting is answered with what ended it."""
        self._run_ahead.hold()

    def ended(self, end: dict[str, Any]) -> dict[str, Any]:
        """What the activation answers when run() ended with `end` (its output or error):
        with an outcome still waiting, that outcome with `end` as what follows it."""
        outcome = self._run_ahead.take(self)
        return end if outcome is None else {**outcome, "then": end}

    def _payload(self, payload: Any) -> Any:
        try:
            return as_json(payload, self._activation.limits.result_bytes, "the workflow payload")
        except ResultError as exc:
            raise (TypeError if exc.type == "ResultNotSerializable" else ValueError)(
                str(exc)
            ) from None

    def _finish(self, outcome: dict[str, Any]) -> NoReturn:
        self._outcome = outcome
        raise Suspend


def _replay(record: Record) -> Any:
    """A settled step's recorded result, or the exception it recorded."""
    if record.status == "complete":
        return None if record.kind == "sleep" else record.output
    if record.kind == "sleep":  # a sleep has nothing to fail with
        return None
    if record.status == "timed_out" and record.kind in WAITS:
        raise WaitTimeout(record.name, record.kind)
    error = record.error or {}
    default_type = "StepTimeout" if record.status == "timed_out" else "Error"
    raise StepError(
        record.name, str(error.get("type", default_type)), str(error.get("message", ""))
    )


def shape_of(kind: str, request: dict[str, Any]) -> dict[str, Any]:
    """What shapes a suspending call besides its name (see stepwell.replay)."""
    if kind == "wait_for_event":
        return {"event_type": request["event_type"]}
    if kind == "start_workflow":
        return {"workflow": request["workflow"], "instance_id": request["instance_id"]}
    if kind == "wait_for_workflow":
        return {"instance_id": request["instance_id"]}
    if kind == "sleep" and request["duration_seconds"] is not None:
        return {"duration_seconds": request["duration_seconds"]}
    if kind == "sleep":
        return {"until": request["until"]}
    return {}


def nondeterminism(
    recorded: Record, new: dict[str, Any], why: str = "", *, line: int | None = None
) -> dict[str, Any]:
    """The outcome for a replay whose call at a recorded step's position is another step
    (or none: `why` says what happened instead)."""
    before = recorded.as_step()
    text = message(recorded.index, before, new, line, instead=why or None)
    error = {"type": "NonDeterminismError", "message": text, "index": recorded.index}
    error.update(recorded=_shown(before), new=_shown(new), line=line)
    return {
        "kind": "nondeterminism",
        "index": recorded.index,
        "recorded": _shown(before),
        "new": _shown(new),
        "line": line,
        "error": error,
    }


def _shown(step: dict[str, Any]) -> dict[str, Any]:
    """A step as an error shows it: its shape only if it has one."""
    shown = {"name": step.get("name"), "kind": step.get("kind")}
    if step.get("shape"):
        shown["shape"] = step["shape"]
    return shown


# How long run() may go on past a kept step before that step's outcome is sent anyway:
# long enough for the deterministic code between two steps, short enough that a step's
# record never waits on a slow computation that follows it (one that outlasted the
# activation's time limit would make the step run again).
AHEAD_SECONDS = 0.02


class RunAhead:
    """The alarm that sends a kept step's outcome when run() takes long to reach its next
    step call (Step._kept). SIGALRM is the runtime's within a step (_capture.time_limit),
    and free between steps, when this alarm is the only one armed. Tenant code that takes
    SIGALRM for itself between steps only delays the outcome to the next step call.

    `armed` is set and cleared by single assignments, which a signal's handler (run by
    Python between two bytecodes) cannot split: once it is cleared, an alarm that had
    already fired does nothing, so the outcome is never sent twice."""

    def __init__(self) -> None:
        self.armed = False

    def start(self, step: Step) -> None:
        self.armed = True
        _signal.signal(_signal.SIGALRM, lambda signum, frame: self._on_alarm(step))
        _signal.setitimer(_signal.ITIMER_REAL, AHEAD_SECONDS)

    def _on_alarm(self, step: Step) -> None:
        if self.armed:
            step._flush_ahead()

    def hold(self) -> None:
        """No alarm from now on: the outcome waits for take()."""
        if self.armed:
            self.armed = False
            _signal.setitimer(_signal.ITIMER_REAL, 0)

    def take(self, step: Step) -> dict[str, Any] | None:
        """The waiting outcome, once, the alarm disarmed first."""
        self.hold()
        outcome, step._ahead = step._ahead, None
        return outcome


def copy_of(value: Any) -> Any:
    """The JSON value as a replay reads it back, and a copy: what run() does with it
    cannot change the outcome that waits to be sent."""
    from json_codec import dumps, loads  # loaded by boot.py already

    return loads(dumps(value, ensure_ascii=False))
