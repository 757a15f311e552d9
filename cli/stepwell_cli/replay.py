"""`stepwell replay`: run a workflow locally against a downloaded history, no server.

It drives the sandbox's own replay code (the runtime shipped in this package), one
activation after another as a worker would: recorded steps give back their recorded
results, and the first call that does not match the record stops the replay with
both versions of the step. Past the end of the record (or from `--from-step`, as a
restart would), new `do` steps run here, once each, sleeps are skipped, and the first
wait for an event or a child ends the replay: nothing here sends events or runs
other workflows.
"""

from __future__ import annotations

import datetime
import linecache
import pdb
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Resolved, so that in a checkout (where it is a symlink) the runtime is imported from
# the one path the server's own tests use too, and `stepwell` is one module.
RUNTIME = (Path(__file__).parent / "runtime").resolve()
if str(RUNTIME) not in sys.path:
    sys.path.insert(0, str(RUNTIME))  # as boot.py does in a jail: `stepwell` is the SDK

from stepwell import _engine, _step  # noqa: E402
from stepwell._durations import format_instant, parse_duration, parse_instant  # noqa: E402
from stepwell._protocol import parse_activation  # noqa: E402
from stepwell._replay_check import describe, difference  # noqa: E402

FORMAT = "stepwell.history/1"
SETTLED = ("complete", "errored", "timed_out")
# Generous: a local replay is the tenant's own machine. A debugging session gets a day.
LIMITS = {"result_bytes": 16 * 1024 * 1024, "log_bytes": 1024 * 1024}
STEP_SECONDS, DEBUG_STEP_SECONDS = 300.0, 86400.0
PDB_SKIP = ["stepwell", "stepwell.*", "stepwell_cli", "stepwell_cli.*", "json_codec"]
MAX_ACTIVATIONS = 10_000  # a run that keeps adding steps locally still ends

# Exit codes: the run replayed and completed (or stopped at a wait), it diverged from
# its record, the input was unusable, the run errored.
OK, DIVERGED, UNUSABLE, ERRORED = 0, 1, 2, 3


class HistoryError(ValueError):
    """The history document cannot be replayed (wrong format, missing fields)."""


def load_history(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise HistoryError(f"not a Stepwell history: its format is not {FORMAT!r}")
    for field in ("instance", "created_at", "steps"):
        if field not in doc:
            raise HistoryError(f"the history has no {field!r}")
    if not isinstance(doc["steps"], list):
        raise HistoryError("the history's 'steps' is not a list")
    return doc


def records(history: dict[str, Any], from_step: int | None) -> list[dict[str, Any]]:
    """The recorded steps to replay: every settled one in order, up to `from_step` (as a
    restart keeps them) and up to the first that had not settled when downloaded."""
    kept = []
    for position, step in enumerate(sorted(history["steps"], key=lambda s: s.get("index", 0))):
        if from_step is not None and position >= from_step:
            break
        if step.get("status") not in SETTLED:
            break
        error = step.get("error")
        kept.append(
            {
                "index": position,
                "name": step.get("name"),
                "kind": step.get("kind"),
                "status": step["status"],
                "attempts": step.get("attempts", 1),
                "output": step.get("output"),
                "error": None
                if not isinstance(error, dict)
                else {"type": error.get("type", "Error"), "message": error.get("message", "")},
                "shape": step.get("shape"),
            }
        )
    return kept


def load_tenant(code: str, filename: str) -> types.ModuleType:
    """The workflow module, its source known to linecache so pdb and tracebacks show it."""
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    module = types.ModuleType("tenant")
    module.__file__ = filename
    exec(compile(code, filename, "exec"), module.__dict__)
    return module


class Replay:
    """One local replay: its record, what it printed so far, where pdb stops."""

    def __init__(
        self,
        history: dict[str, Any],
        code: str,
        filename: str,
        *,
        from_step: int | None = None,
        pdb_step: str | None = None,
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self.history = history
        self.filename = filename
        self.module = load_tenant(code, filename)
        self.records = records(history, from_step)
        self.recorded_count = len(self.records)
        self.pdb_step = pdb_step
        self.emit = emit
        self.reached = -1  # the highest step index already shown
        self.debugged: set[int] = set()
        self.ran_locally = False
        self.last_line: int | None = None  # of the last step call run() made

    def activation_input(self) -> dict[str, Any]:
        now = datetime.datetime.now(datetime.UTC).isoformat()
        step_seconds = DEBUG_STEP_SECONDS if self.pdb_step else STEP_SECONDS
        return {
            "instance_id": str(self.history["instance"]),
            "payload": self.history.get("payload"),
            "timestamp": str(self.history["created_at"]),
            "now": now,
            "history": self.records,
            "limits": {**LIMITS, "step_timeout_seconds": step_seconds},
        }

    def run(self) -> int:
        """Activate until the run ends, diverges or waits; the exit code."""
        for _ in range(MAX_ACTIVATIONS):
            activation = parse_activation(self.activation_input())
            step = ReplayStep(activation, self)
            outcome = _engine._activate(self.module, activation, step)
            code = self.settle(outcome)
            if code is not None:
                return code
        self.emit({"event": "stopped", "why": f"over {MAX_ACTIVATIONS} activations"})
        return ERRORED

    def settle(self, outcome: dict[str, Any]) -> int | None:
        """Show the activation's outcome; record a new step and go on (None), or end."""
        kind = outcome["kind"]
        if kind == "nondeterminism":
            self.emit({"event": "divergence", **self.located(outcome)})
            return DIVERGED
        if kind in ("complete", "error"):
            return self.finish(outcome)
        if kind == "step":
            return self.ran(outcome)
        if kind == "sleep":
            self.emit(
                {
                    "event": "sleep",
                    "index": outcome["index"],
                    "name": outcome["name"],
                    "until": outcome["until"],
                }
            )
            self.append(outcome, "complete", None, None)
            return None
        self.emit({"event": "suspended", **outcome})
        return OK

    def located(self, outcome: dict[str, Any]) -> dict[str, Any]:
        """The divergence at the line of the tenant's call. The runtime takes the first
        frame outside itself for it, which in a local replay is ReplayStep's."""
        if self.last_line is None or not (outcome.get("new") or {}).get("name"):
            return outcome  # no step was called there: no line to show
        error = dict(outcome["error"])
        if outcome.get("line") is not None:
            ours, theirs = (
                f"(called at line {self.last_line})",
                f"(called at line {outcome['line']})",
            )
            error["message"] = error["message"].replace(theirs, ours)
            error["line"] = self.last_line
        return {**outcome, "line": self.last_line, "error": error}

    def ran(self, outcome: dict[str, Any]) -> None:
        """A do step that ran here: recorded as settled at once (no retries locally)."""
        self.ran_locally = True
        status = outcome["status"]
        self.emit({"event": "ran", **outcome, "kind": outcome.get("step_kind", "do")})
        error = outcome.get("error")
        if error is not None:
            error = {"type": error.get("type", "Error"), "message": error.get("message", "")}
        self.append(
            outcome, "complete" if status == "complete" else "errored", outcome.get("output"), error
        )

    def append(self, outcome: dict[str, Any], status: str, output: Any, error: Any) -> None:
        self.reached = max(self.reached, outcome["index"])
        self.records.append(
            {
                "index": outcome["index"],
                "name": outcome["name"],
                "kind": outcome.get("step_kind", "do"),
                "status": status,
                "attempts": 1,
                "output": output,
                "error": error,
            }
        )

    def finish(self, outcome: dict[str, Any]) -> int:
        status = "complete" if outcome["kind"] == "complete" else "errored"
        self.emit(
            {
                "event": status,
                "output": outcome.get("output"),
                "error": outcome.get("error"),
                "recorded": self.recorded_end(),
            }
        )
        return OK if status == "complete" else ERRORED

    def recorded_end(self) -> dict[str, Any] | None:
        """How the recorded run ended, when this replay covered all of it and ran nothing."""
        if self.ran_locally or self.recorded_count != len(self.history["steps"]):
            return None
        if self.history.get("status") not in ("complete", "errored"):
            return None
        error = self.history.get("error")
        return {
            "status": self.history["status"],
            "output": self.history.get("output"),
            "error": None
            if not isinstance(error, dict)
            else {"type": error.get("type"), "message": error.get("message")},
        }

    # Called by ReplayStep as run() reaches each step.

    def reach(self, index: int, name: str, kind: str, record: Any, frame: Any) -> None:
        if index > self.reached and record is not None:
            self.reached = index
            self.emit(
                {
                    "event": "replayed",
                    "index": index,
                    "name": name,
                    "kind": kind,
                    "status": record.status,
                    "output": record.output,
                    "error": record.error,
                }
            )
        if self.pdb_step == name and index not in self.debugged:
            self.debugged.add(index)
            self.emit({"event": "pdb", "index": index, "name": name})
            # Outside the capture of run()'s output; stepping past the runtime's frames and
            # ours, pdb stops in the step's function (a step that runs here) or on the line
            # after the call (a step that replays its record).
            debugger = pdb.Pdb(stdin=sys.__stdin__, stdout=sys.__stdout__, skip=PDB_SKIP)
            debugger.set_trace(frame)

    def tenant_frame(self) -> Any:
        """The frame of the tenant's code that called the step (for pdb and the line)."""
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename != self.filename:
            frame = frame.f_back
        return frame


class ReplayStep(_step.Step):
    """The runtime's Step, telling the replay which step run() reached, and comparing the
    shape of each call with the record's (stepwell._replay_check)."""

    def __init__(self, activation: Any, replay: Replay) -> None:
        super().__init__(activation)
        self._replay = replay
        self._shape: dict[str, Any] = {}

    def sleep(self, name: str, duration: Any) -> None:
        self._shape = _shape(lambda: {"duration_seconds": parse_duration(duration)})
        return super().sleep(name, duration)

    def sleep_until(self, name: str, when: Any) -> None:
        self._shape = _shape(lambda: {"until": format_instant(parse_instant(when))})
        return super().sleep_until(name, when)

    def wait_for_event(self, name: str, event_type: str, **kwargs: Any) -> Any:
        self._shape = {"event_type": event_type}
        return super().wait_for_event(name, event_type, **kwargs)

    def start_workflow(self, name: str, workflow: str, payload: Any, **kwargs: Any) -> str:
        self._shape = {"workflow": workflow, "instance_id": kwargs.get("instance_id")}
        return super().start_workflow(name, workflow, payload, **kwargs)

    def wait_for_workflow(self, name: str, instance_id: str, **kwargs: Any) -> Any:
        self._shape = {"instance_id": instance_id}
        return super().wait_for_workflow(name, instance_id, **kwargs)

    def _claim(self, name: str, kind: str, *rest: Any) -> tuple[int, Any]:
        shape, self._shape = self._shape, {}
        frame = self._replay.tenant_frame()
        self._replay.last_line = frame.f_lineno if frame is not None else None
        index, record = super()._claim(name, kind, *rest)
        if record is not None:
            recorded = self._replay.records[index]
            new = {"name": name, "kind": kind, "shape": shape}
            if difference(recorded, new) is not None:
                self._finish(diverged(recorded, new, frame))
        self._replay.reach(index, name, kind, record, frame)
        return index, record


def _shape(compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The call's shape; a bad argument is left for the runtime to report as it does."""
    try:
        return compute()
    except (TypeError, ValueError, OverflowError):
        return {}


def diverged(recorded: dict[str, Any], new: dict[str, Any], frame: Any) -> dict[str, Any]:
    """A non-determinism outcome shaped like the runtime's, for a shape that differs."""
    line = frame.f_lineno if frame is not None else None
    where = f" (called at line {line})" if line is not None else ""
    shown = {key: recorded.get(key) for key in ("name", "kind", "shape")}
    message = (
        f"step {recorded['index']} was {describe(recorded)} when recorded but is "
        f"{describe(new)} now{where}: the workflow must call steps in the same order on "
        "every replay"
    )
    return {
        "kind": "nondeterminism",
        "index": recorded["index"],
        "recorded": shown,
        "new": new,
        "line": line,
        "error": {"type": "NonDeterminismError", "message": message},
    }
