"""`stepwell replay`: a downloaded history run locally on the sandbox's own replay code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from stepwell_cli import replay
from stepwell_cli.main import main

from tests.cli.conftest import CLI

ORDER = textwrap.dedent(
    """
    def run(event, step):
        total = step.do("price", lambda: sum(event.payload["items"]))
        step.sleep("cool-off", "2 seconds")
        approval = step.wait_for_event("approval", "approved", timeout="1 hour")
        child = step.start_workflow("notify", "receipt", {"total": total}, instance_id="n-1")

        def charge():
            print("charging", total, "for", approval["by"])
            return {"charged": total, "card": event.payload["card"]}

        receipt = step.do("charge", charge, retries={"limit": 0})
        return {"total": total, "receipt": receipt, "child": child}
    """
)
FIXED = ORDER.replace('event.payload["card"]', 'event.payload.get("card", "on file")')

STEPS = [
    ("price", "do", "complete", 3, {}),
    ("cool-off", "sleep", "complete", None, {"duration_seconds": 2.0}),
    ("approval", "wait_for_event", "complete", {"by": "ann"}, {"event_type": "approved"}),
    ("notify", "start_workflow", "complete", "n-1", {"workflow": "receipt", "instance_id": "n-1"}),
]
CHARGE_FAILED = {"type": "KeyError", "message": "'card'", "traceback": "..."}


def history(code: str = ORDER, *, failed: bool = True) -> dict:
    """An errored run of ORDER as GET /instances/{id}/history gives it."""
    steps = [
        {
            "index": i,
            "name": name,
            "kind": kind,
            "status": status,
            "attempts": 1,
            "output": output,
            "error": None,
            "shape": shape,
        }
        for i, (name, kind, status, output, shape) in enumerate(STEPS)
    ]
    if failed:
        steps.append(
            {
                "index": 4,
                "name": "charge",
                "kind": "do",
                "status": "errored",
                "attempts": 1,
                "output": None,
                "error": CHARGE_FAILED,
                "shape": {},
            }
        )
    return {
        "format": "stepwell.history/1",
        "workflow": "orders",
        "instance": "o-1",
        "run": 1,
        "created_at": "2026-11-29T18:00:00+00:00",
        "version": {"sha256": "a" * 64, "code": code},
        "payload": {"items": [1, 2]},
        "status": "errored" if failed else "waiting",
        "output": None,
        "error": {"type": "StepError", "message": "step 'charge' failed: KeyError: 'card'"}
        if failed
        else None,
        "steps": steps,
    }


@pytest.fixture
def files(tmp_path):
    def write(doc: dict, code: str | None = None) -> list[str]:
        (tmp_path / "history.json").write_text(json.dumps(doc))
        args = [str(tmp_path / "history.json")]
        if code is not None:
            (tmp_path / "fixed.py").write_text(code)
            args += ["--code", str(tmp_path / "fixed.py")]
        return args

    return write


def replay_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["replay", *args])
    return code, capsys.readouterr().out


def test_it_replays_each_recorded_step_and_reproduces_the_recorded_error(files, capsys):
    code, out = replay_cli(capsys, *files(history()))
    assert code == replay.ERRORED
    lines = out.splitlines()
    assert "#0 do 'price': replayed = 3" in lines[1]
    assert '#2 wait_for_event \'approval\': replayed = {"by": "ann"}' in lines[3]
    assert "#4 do 'charge': replayed, errored -- KeyError: 'card'" in lines[5]
    assert "run errored: StepError: step 'charge' failed: KeyError: 'card'" in out
    assert "the same as recorded" in out


def test_a_fix_runs_from_the_failed_step_here_and_completes(files, capsys):
    code, out = replay_cli(capsys, *files(history(), FIXED), "--from-step", "4")
    assert code == replay.OK
    assert "#3 start_workflow 'notify': replayed" in out
    assert "#4 do 'charge': ran here, complete" in out
    assert "| charging 3 for ann" in out  # the step's own print, as its log
    assert 'run complete: output {"total": 3, "receipt": {"charged": 3, "card": "on file"}' in out


def test_a_renamed_step_stops_the_replay_at_its_position_with_both_versions(files, capsys):
    renamed = ORDER.replace('"cool-off"', '"cool-down"')
    code, out = replay_cli(capsys, *files(history(), renamed))
    assert code == replay.DIVERGED
    assert "DIVERGED at step 1 (line 4):" in out
    assert '"name": "cool-off"' in out.split("recorded:")[1].splitlines()[0]
    assert '"name": "cool-down"' in out.split("now:")[1].splitlines()[0]
    assert "charge" not in out  # nothing after the divergence ran


@pytest.mark.parametrize(
    ("before", "after", "field", "position"),
    [
        ('"2 seconds"', '"3 seconds"', "duration_seconds", 1),
        ('"approved"', '"accepted"', "event_type", 2),
        ('"receipt", {"total"', '"invoice", {"total"', "workflow", 3),
        ('instance_id="n-1"', 'instance_id="n-2"', "instance_id", 3),
    ],
)
def test_each_kind_of_shape_change_is_a_divergence(files, capsys, before, after, field, position):
    code, out = replay_cli(capsys, *files(history(), ORDER.replace(before, after)))
    assert code == replay.DIVERGED
    assert f"DIVERGED at step {position}" in out
    assert field in out.split("now:")[1]


def test_a_step_added_before_the_recorded_ones_is_a_divergence(files, capsys):
    added = ORDER.replace(
        '    total = step.do("price"',
        '    step.do("audit", lambda: 1)\n    total = step.do("price"',
    )
    code, out = replay_cli(capsys, *files(history(), added))
    assert (code, "DIVERGED at step 0" in out) == (replay.DIVERGED, True)


def test_a_run_whose_record_ends_at_a_wait_stops_there_without_running_past_it(files, capsys):
    doc = history(failed=False)
    doc["steps"][2]["status"] = "waiting"  # downloaded while it waited for "approved"
    del doc["steps"][3]
    code, out = replay_cli(capsys, *files(doc))
    assert code == replay.OK
    assert "#2 wait_for_event 'approval': the run waits here" in out


def test_json_output_lists_the_replay_events(files, capsys):
    assert main(["replay", *files(history()), "--json"]) == replay.ERRORED
    doc = json.loads(capsys.readouterr().out)
    assert [e["event"] for e in doc["events"]] == ["replayed"] * 5 + ["errored"]
    assert doc["exit_code"] == replay.ERRORED


def test_a_file_that_is_not_a_history_is_refused(files, capsys):
    assert main(["replay", *files({"format": "something else"})]) == 2
    assert "not a Stepwell history" in capsys.readouterr().err


def test_code_that_does_not_load_is_refused_with_its_error(files, capsys):
    assert main(["replay", *files(history(), "import no_such_module\n")]) == 2
    err = capsys.readouterr().err
    assert (
        err == "error: the workflow module does not load: ModuleNotFoundError: "
        "No module named 'no_such_module'\n"
    )


def test_pdb_stops_inside_the_named_steps_function(files):
    args = files(history(), FIXED)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stepwell_cli",
            "replay",
            *args,
            "--from-step",
            "4",
            "--pdb",
            "charge",
        ],
        input="p total, approval\nc\n",
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(CLI), "PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "fixed.py(8)charge()" in done.stdout
    assert "(Pdb) (3, {'by': 'ann'})" in done.stdout
    assert "run complete" in done.stdout
