"""Progress notes on the result channel: lines before the final document."""

import json

import pytest

from execution.sandbox.protocol import ProtocolError, parse_result, split_channel
from tests.sandbox.conftest import workflow_input


def line(doc) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def test_notes_come_before_the_final_document():
    data = line({"progress": {"kind": "intent", "index": 2}}) + line({"ok": True, "result": 7})
    notes, _ = split_channel(data)
    assert notes == [{"kind": "intent", "index": 2}]
    assert parse_result(data) == (True, 7)


def test_a_killed_jail_leaves_only_its_notes():
    notes, rest = split_channel(line({"progress": {"kind": "intent", "index": 0}}))
    assert notes == [{"kind": "intent", "index": 0}] and rest == b""
    with pytest.raises(ProtocolError):
        parse_result(line({"progress": {"kind": "intent"}}))


def test_a_second_final_document_is_still_refused():
    data = line({"ok": True, "result": 1}) + line({"ok": True, "result": 2})
    with pytest.raises(ProtocolError):
        parse_result(data)


def test_notes_that_are_not_notes_end_the_notes():
    data = line({"progress": "nope"}) + line({"ok": True, "result": 1})
    notes, _ = split_channel(data)
    assert notes == []
    with pytest.raises(ProtocolError):
        parse_result(data)


@pytest.mark.sandbox
def test_a_step_killed_for_memory_still_names_its_step(run):
    code = (
        "def run(event, step):\n"
        "    def bomb():\n"
        "        blocks = []\n"
        "        while True:\n"
        "            blocks.append(bytearray(8 * 1024 * 1024))\n"
        "    step.do('bomb', bomb)\n"
    )
    activation = workflow_input()
    result = run(code, activation, mode="workflow")
    assert result.status == "memory_exceeded"
    assert result.progress[-1]["kind"] == "intent"
    assert (result.progress[-1]["index"], result.progress[-1]["name"]) == (0, "bomb")


def test_the_watcher_hands_over_each_note_once_as_its_line_completes():
    from execution.sandbox.protocol import NoteWatcher

    seen = []
    watcher = NoteWatcher(seen.append)
    data = bytearray(line({"progress": {"kind": "intent", "index": 0}})[:-5])
    watcher.feed(data)
    assert seen == []
    data += line({"progress": {"kind": "intent", "index": 0}})[-5:]
    watcher.feed(data)
    data += line({"progress": {"kind": "intent", "index": 1}}) + line({"ok": True, "result": 1})
    watcher.feed(data)
    watcher.feed(data)
    assert seen == [{"kind": "intent", "index": 0}, {"kind": "intent", "index": 1}]


@pytest.mark.sandbox
def test_notes_reach_the_callback_while_the_step_runs(sandbox):
    import time

    from execution.sandbox import SandboxRequest
    from tests.sandbox.conftest import SMALL

    seen = []
    code = "import time\ndef run(event, step):\n    step.do('slow', lambda: time.sleep(1) or 1)\n"
    activation = workflow_input()
    started = time.monotonic()
    request = SandboxRequest(
        tenant="acme",
        code=code,
        input=activation,
        limits=SMALL,
        mode="workflow",
        on_progress=lambda note: seen.append((note, time.monotonic() - started)),
    )
    result = sandbox.run(request)
    assert result.status == "ok" and result.result["status"] == "complete"
    ((note, at),) = seen
    assert (note["kind"], note["name"]) == ("intent", "slow")
    assert at < result.wall_seconds - 0.5  # heard before the step's second was over
