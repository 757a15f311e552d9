"""`stepwell mcp`: the command's verbs as Model Context Protocol tools over stdio, so that
an agent can write, run, watch and fix a workflow with no other glue.

Needs the `mcp` extra. The server reads STEPWELL_URL and STEPWELL_TOKEN when a tool is
called; an API error comes back to the agent as the tool's error, with the API's detail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from stepwell_cli import verbs
from stepwell_cli.client import ApiError, Client

REPLAY_SECONDS = 300

server = MCPServer(
    "stepwell",
    instructions=(
        "Stepwell runs durable workflows: Python modules defining run(event, step). "
        "validate, then deploy a workflow's code; start an instance; read its status "
        "(steps, errors, tracebacks); send it events; download its history and replay "
        "it locally against fixed code; restart it from a failed step on a new version."
    ),
)


def api(call: Callable[[Client], Any]) -> Any:
    try:
        return call(Client.from_env())
    except ApiError as exc:
        raise ToolError(f"HTTP {exc.status}: {exc}" if exc.status else str(exc)) from None


@server.tool()
def validate(workflow: str, code: str) -> dict[str, Any]:
    """Check a workflow's Python code without saving it: errors and flags with lines."""
    return api(lambda c: verbs.validate(c, workflow, code))


@server.tool()
def deploy(workflow: str, code: str, description: str | None = None) -> dict[str, Any]:
    """Upload a workflow's code; a new version if it changed (`created`), with its sha256."""
    return api(lambda c: verbs.deploy(c, workflow, code, description))


@server.tool()
def start(
    workflow: str,
    payload: dict | None = None,
    instance_id: str | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """Start an instance of a workflow with a JSON payload; the same id again is a no-op."""
    return api(lambda c: verbs.start(c, workflow, payload, instance_id, version))


@server.tool()
def status(instance_id: str) -> dict[str, Any]:
    """An instance: its status, output or error, and every step with its logs and errors."""
    return api(lambda c: verbs.status(c, instance_id))


@server.tool()
def send_event(instance_id: str, type: str, payload: dict | None = None) -> dict[str, Any]:
    """Send an event to an instance; `matched` says whether a wait took it."""
    return api(lambda c: verbs.send_event(c, instance_id, type, payload))


@server.tool()
def history(instance_id: str, run: int | None = None) -> dict[str, Any]:
    """A run's history (format stepwell.history/1): what `replay` takes."""
    return api(lambda c: verbs.history(c, instance_id, run))


@server.tool()
def restart(
    instance_id: str, from_step: int | None = None, version: str | None = None
) -> dict[str, Any]:
    """A new run of an instance: steps before `from_step` keep their results, the rest
    run again, on `version` (an approved sha256) if given."""
    return api(lambda c: verbs.restart(c, instance_id, from_step, version))


@server.tool()
def replay(history: dict, code: str | None = None, from_step: int | None = None) -> dict[str, Any]:
    """Replay a history locally (no server) against its recorded code or `code`: each
    step as it replays, the first divergence with both versions of the step, and how the
    run ends. `from_step` runs the steps from there here, as a restart would.
    `exit_code`: 0 complete or waiting, 1 diverged, 3 errored."""
    # In a child process: the workflow's code is run here, and it must not take the
    # server down with it (or wait on its stdin).
    with tempfile.TemporaryDirectory(prefix="stepwell-replay-") as tmp:
        argv = [
            sys.executable,
            "-m",
            "stepwell_cli",
            "replay",
            "--json",
            write(tmp, "h.json", json.dumps(history)),
        ]
        if code is not None:
            argv += ["--code", write(tmp, "workflow.py", code)]
        if from_step is not None:
            argv += ["--from-step", str(from_step)]
        done = subprocess.run(
            argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=REPLAY_SECONDS
        )
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise ToolError(done.stderr.strip() or f"replay exited with {done.returncode}") from None


def write(directory: str, name: str, text: str) -> str:
    path = Path(directory) / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def serve() -> None:
    server.run("stdio")
