"""The `stepwell` subcommands against a live server: HTTP, and the WebSocket for `watch`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from stepwell_cli import verbs, websocket
from stepwell_cli.client import Client
from stepwell_cli.main import RUN_FAILED, main
from stepwell_cli.watch import default_connect, follow_stream

from tests.cli.conftest import Live
from tests.cli.test_replay import FIXED, history
from tests.integration.stack import wait_until

# django_db only so that pytest-django sets up the test database for the `live` server;
# these tests reach it through the server alone.
pytestmark = [pytest.mark.integration, pytest.mark.django_db]

CODE = """
from stepwell import NonRetryableError

def run(event, step):
    n = step.do("first", lambda: event.payload["n"] + 1)
    got = step.wait_for_event("go", "go", timeout="1 minute")

    def second():
        print("second sees", got)
        if got.get("fail"):
            raise NonRetryableError("asked to fail")
        return n * 2

    return step.do("second", second)
"""


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def status_of(instance_id: str) -> str:
    return verbs.status(Client.from_env(), instance_id)["status"]


class DropOnce:
    """Connects as `watch` does, but breaks the first connection after `after` messages,
    as a network that drops it would; records every URL it was asked for."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.urls: list[str] = []

    def __call__(self, url: str, headers: dict[str, str]) -> websocket.WebSocket:
        self.urls.append(url)
        ws = default_connect(url, headers)
        if len(self.urls) == 1:
            received = ws.recv

            def recv() -> str:
                if self.after == 0:
                    ws.abort()
                    raise websocket.WebSocketError("dropped by the test")
                self.after -= 1
                return received()

            ws.recv = recv
        return ws


def test_deploy_start_watch_with_a_dropped_connection_events_logs_and_restart(
    tenant_env, capsys, tmp_path
):
    path = tmp_path / "orders.py"
    path.write_text(CODE)
    code, out, _ = cli(capsys, "deploy", "orders", str(path))
    assert (code, "orders: new version" in out) == (0, True)
    code, out, _ = cli(capsys, "deploy", "orders", str(path))
    assert "orders: unchanged" in out

    code, out, _ = cli(capsys, "start", "orders", "--payload", '{"n": 1}', "--id", "o-1", "--json")
    assert code == 0 and json.loads(out)["id"] == "o-1"

    # Watch in the background; the first connection drops after the snapshot and one event.
    connect, seen = DropOnce(after=2), []
    client = Client.from_env()
    watcher = threading.Thread(
        target=lambda: seen.append(
            follow_stream(client, "o-1", seen.append, connect, pause=lambda s: None)
        )
    )
    watcher.start()
    wait_until(lambda: status_of("o-1") == "waiting", 30, 0.2, "o-1 to wait for its event")
    code, out, _ = cli(capsys, "events", "send", "o-1", "go", "--payload", '{"x": 1}')
    assert code == 0
    watcher.join(60)
    assert not watcher.is_alive()

    assert seen[-1] == "complete"
    assert len(connect.urls) == 2 and "after=" not in connect.urls[0]
    messages = seen[:-1]
    assert messages[0]["type"] == "snapshot"
    reconnect = next(m for m in messages if m["type"] == "reconnect")
    assert connect.urls[1].endswith(f"?after={reconnect['after']}")
    # Every event once, in order, none missing across the drop.
    seqs = [m["seq"] for m in messages if m["type"] not in ("snapshot", "reconnect")]
    assert seqs == list(range(messages[0]["seq"] + 1, seqs[-1] + 1))
    assert messages[-1] == {**messages[-1], "type": "instance.status", "status": "complete"}

    code, out, _ = cli(capsys, "status", "o-1")
    assert "o-1  orders  complete" in out and "output: 4" in out
    assert "#2 do 'second': complete = 4" in out
    code, out, _ = cli(capsys, "logs", "o-1")
    assert "second sees {'x': 1}" in out

    # A restart with no body runs it again from the start; the event it consumed before
    # is there to be consumed again.
    code, out, _ = cli(capsys, "restart", "o-1")
    assert code == 0 and out.startswith("o-1  orders  ")
    code, out, _ = cli(capsys, "watch", "o-1")
    # It may end before the watch connects (its event is there already): then the
    # snapshot, the stream's first and last message, says so.
    last = out.splitlines()[-1]
    assert code == 0 and (last.endswith("instance complete") or ": complete, " in last)

    # An instance that errors: watch says so, with the error, and exits 3.
    cli(capsys, "start", "orders", "--payload", '{"n": 1}', "--id", "o-2")
    wait_until(lambda: status_of("o-2") == "waiting", 30, 0.2, "o-2 to wait for its event")
    cli(capsys, "events", "send", "o-2", "go", "--payload", '{"fail": true}')
    code, out, _ = cli(capsys, "watch", "o-2")
    assert code == RUN_FAILED
    # The status event says so, or the snapshot when it errored before the watch connected;
    # then the instance's status, with the error and its traceback.
    assert "instance errored" in out or ": errored, " in out
    assert "NonRetryableError: asked to fail" in out


def test_the_installed_command_watches_live_over_its_own_websocket_client(live, tmp_path):
    """`python -m stepwell_cli` in a process of its own, as a tenant runs it."""
    env = live.env()
    path = tmp_path / "quick.py"
    path.write_text("def run(event, step):\n    return step.do('one', lambda: 41) + 1\n")

    def stepwell(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "stepwell_cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert stepwell("deploy", "quick", str(path)).returncode == 0
    started = time.monotonic()
    done = stepwell("start", "quick", "--id", "q-1", "--watch")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "q-1  queued" in done.stdout
    assert "instance complete" in done.stdout
    assert time.monotonic() - started < 30


def test_errors_print_the_apis_detail_and_exit_non_zero(tenant_env, capsys, monkeypatch, tmp_path):
    code, _, err = cli(capsys, "status", "no-such-instance")
    assert (code, err) == (1, "error: no instance 'no-such-instance'\n")
    bad = tmp_path / "bad.py"
    bad.write_text("def run(event, step:\n    pass\n")
    code, _, err = cli(capsys, "deploy", "bad", str(bad))
    assert code == 1 and err.startswith("error: line 1, column")
    code, _, err = cli(capsys, "watch", "no-such-instance")
    assert (code, err.strip()) == (1, "error: no such instance")
    monkeypatch.setenv("STEPWELL_TOKEN", "sw_not-a-token")
    code, _, err = cli(capsys, "status", "o-1")
    assert code == 1 and err.startswith("error: ")
    monkeypatch.delenv("STEPWELL_URL")
    code, _, err = cli(capsys, "status", "o-1")
    assert (code, err.strip()) == (1, "error: set STEPWELL_URL in the environment")


# `stepwell mcp`, driven by the mcp package's own client over stdio.

AGENT_CODE = """
def run(event, step):
    got = step.wait_for_event("go", "go", timeout="1 minute")
    return step.do("double", lambda: got["n"] * 2)
"""


async def mcp_session(live: Live, calls):
    """Run `calls(tool)` against `stepwell mcp` as an agent's MCP client would."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "stepwell_cli", "mcp"],
        env={k: live.env()[k] for k in ("STEPWELL_URL", "STEPWELL_TOKEN", "PYTHONPATH")},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        async def tool(name: str, **arguments):
            result = await session.call_tool(name, arguments)
            if result.is_error:
                return {"error": result.content[0].text}
            return result.structured_content

        return await calls(session, tool)


def test_an_agent_deploys_starts_and_steers_a_workflow_through_the_mcp_tools(live):
    async def calls(session, tool):
        listed = {t.name for t in (await session.list_tools()).tools}
        assert {
            "validate",
            "deploy",
            "start",
            "status",
            "send_event",
            "history",
            "replay",
            "restart",
        } <= listed
        checked = await tool("validate", workflow="agent", code="def run(event, step:\n")
        assert checked["ok"] is False and checked["errors"][0]["line"] == 1
        deployed = await tool("deploy", workflow="agent", code=AGENT_CODE)
        assert deployed["created"] is True and len(deployed["version"]["sha256"]) == 64
        started = await tool("start", workflow="agent", instance_id="a-1", payload={})
        assert started["id"] == "a-1"
        for _ in range(150):
            if (await tool("status", instance_id="a-1"))["status"] == "waiting":
                break
            await anyio.sleep(0.2)
        await tool("send_event", instance_id="a-1", type="go", payload={"n": 21})
        for _ in range(150):
            done = await tool("status", instance_id="a-1")
            if done["status"] == "complete":
                break
            await anyio.sleep(0.2)
        assert done["output"] == 42
        restarted = await tool("restart", instance_id="a-1")
        assert restarted["id"] == "a-1" and restarted["status"] in ("queued", "running", "waiting")
        # replay needs no server: a history as GET .../history gives it, and a fix.
        replayed = await tool("replay", history=history(), code=FIXED, from_step=4)
        assert replayed["exit_code"] == 0
        assert [e["event"] for e in replayed["events"]][-2:] == ["ran", "complete"]
        diverged = await tool("replay", history=history(), code=FIXED.replace("cool-off", "nap"))
        assert diverged["exit_code"] == 1 and diverged["events"][-1]["index"] == 1
        missing = await tool("status", instance_id="no-such-instance")
        assert missing["error"].endswith("HTTP 404: no instance 'no-such-instance'")

    anyio.run(mcp_session, live, calls)


# Endpoints that other branches of this release add (API.md, "Debugging and recovery",
# "Secrets", "Schedules"): these tests pass once those are merged.

FAILING = """
from stepwell import NonRetryableError

def run(event, step):
    n = step.do("first", lambda: event.payload["n"])
    step.sleep("pause", 1)

    def second():
        if not event.payload.get("fixed") and "{marker}" == "broken":
            raise NonRetryableError("broken")
        return n + 1

    return step.do("second", second)
"""


def test_debug_a_failed_run_history_replay_fix_and_restart_from_the_step(
    tenant_env, capsys, tmp_path
):
    """README's walk-through, with the CLI only."""
    broken, fixed = tmp_path / "broken.py", tmp_path / "fixed.py"
    broken.write_text(FAILING.replace("{marker}", "broken"))
    fixed.write_text(FAILING.replace("{marker}", "fixed"))
    assert cli(capsys, "deploy", "debugged", str(broken))[0] == 0
    cli(capsys, "start", "debugged", "--payload", '{"n": 1}', "--id", "d-1")
    assert cli(capsys, "watch", "d-1")[0] == RUN_FAILED

    history = tmp_path / "d-1.json"
    code, out, err = cli(capsys, "history", "d-1", "-o", str(history))
    assert code == 0, err
    doc = json.loads(history.read_text())
    assert doc["format"] == "stepwell.history/1" and doc["status"] == "errored"
    assert doc["steps"][1]["shape"] == {"duration_seconds": 1.0}

    code, out, _ = cli(capsys, "replay", str(history))
    assert code == 3 and "the same as recorded" in out
    code, out, _ = cli(capsys, "replay", str(history), "--code", str(fixed), "--from-step", "2")
    assert code == 0 and "run complete: output 2" in out

    code, out, _ = cli(capsys, "deploy", "debugged", str(fixed), "--json")
    sha = json.loads(out)["version"]["sha256"]
    code, out, _ = cli(capsys, "restart", "d-1", "--from-step", "2", "--version", sha)
    assert code == 0, out
    assert cli(capsys, "watch", "d-1")[0] == 0
    code, out, _ = cli(capsys, "runs", "d-1", "--json")
    runs = json.loads(out)
    runs = runs["items"] if isinstance(runs, dict) else runs
    assert (runs[0]["run"], runs[0]["restarted_from_step"]) == (2, 2)
    code, out, _ = cli(capsys, "history", "d-1", "--run", "1")
    assert json.loads(out)["status"] == "errored"

    code, out, _ = cli(capsys, "rerun", "d-1", "--id", "d-2", "--json")
    assert code == 0 and json.loads(out)["id"] == "d-2"


def test_secrets_and_schedules(tenant_env, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-value\n"))
    code, out, err = cli(capsys, "secrets", "set", "API_KEY")
    assert code == 0, err
    code, out, _ = cli(capsys, "secrets", "list", "--json")
    assert [s["name"] for s in json.loads(out)] == ["API_KEY"]
    assert "s3cret" not in out
    assert cli(capsys, "secrets", "delete", "API_KEY")[0] == 0

    path = tmp_path / "tick.py"
    path.write_text("def run(event, step):\n    return event.payload\n")
    cli(capsys, "deploy", "tick", str(path))
    code, out, err = cli(
        capsys,
        "schedules",
        "set",
        "tick",
        "hourly",
        "--cron",
        "0 * * * *",
        "--payload",
        '{"a": 1}',
        "--paused",
    )
    assert code == 0, err
    code, out, _ = cli(capsys, "schedules", "list", "--json")
    assert [(s["name"], s["paused"]) for s in json.loads(out)] == [("hourly", True)]
    code, _, err = cli(capsys, "schedules", "set", "tick", "bad", "--every", "1")
    assert code == 1 and "every" in err
    assert cli(capsys, "schedules", "delete", "tick", "hourly")[0] == 0
