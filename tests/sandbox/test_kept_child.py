"""Sticky execution in warm mode (issue 18): a child kept between an instance's steps."""

import os

import pytest

from execution.sandbox import Limits, SandboxRequest, Status, WarmSandbox
from execution.sandbox.warm_channel import check_status
from tests.sandbox.conftest import SMALL, workflow_input

pytestmark = pytest.mark.sandbox

NOW = "2026-01-01T00:00:01+00:00"

# run() counts its own starts in a file of the child's: a replay would count again.
COUNTING = """
import os
STARTS = []
def run(event, step):
    STARTS.append(1)
    a = step.do("a", lambda: {"pid": os.getpid(), "starts": len(STARTS), "t": (1, 2)})
    b = step.do("b", lambda: {"pid": os.getpid(), "starts": len(STARTS), "a": a})
    return {"a": a, "b": b, "starts": len(STARTS)}
"""


@pytest.fixture
def warm(sandbox, sandbox_config):
    box = WarmSandbox(sandbox_config, jails_per_worker=2, idle_seconds=300, fresh=sandbox)
    yield box
    box.close()


def request(code, history=(), **overrides):
    limits = Limits(**{**SMALL.to_json(), **overrides})
    return SandboxRequest(
        tenant="acme", code=code, input=workflow_input(history), limits=limits, mode="workflow"
    )


def recorded(outcome: dict) -> dict:
    """The history entry the engine would record for a completed do step."""
    return {
        "index": outcome["index"],
        "name": outcome["name"],
        "kind": "do",
        "status": "complete",
        "attempts": 1,
        "output": outcome["output"],
        "error": None,
    }


def test_a_kept_child_goes_on_without_replaying_and_runs_ahead_to_the_end(warm):
    first = warm.run(request(COUNTING), keep=True)
    assert first.status == Status.OK and first.result["kind"] == "step"
    assert first.kept is not None  # paused at step b's call, a's outcome sent
    # The engine records the step and resumes the child, which went on with the result
    # as JSON gives it back (the tuple is a list), what a replay reads from the record.
    second = first.kept.resume(request(COUNTING), first.result["output"], NOW)
    assert second.status == Status.OK, second.error
    b = second.result["output"]
    assert b["pid"] == first.result["output"]["pid"]  # the same process
    assert b["starts"] == 1  # run() did not start again
    assert b["a"]["t"] == [1, 2]
    # run() returned right after b: the end comes with b's outcome, and the child is done.
    assert second.result["then"] == {
        "kind": "complete",
        "output": {"a": first.result["output"], "b": b, "starts": 1},
    }
    assert second.kept is None
    # The jail went back to its pool and serves the next instance with a fresh child.
    again = warm.run(request(COUNTING), keep=True)
    assert again.result["output"]["pid"] != b["pid"]
    again.kept.close()


def test_closing_a_kept_child_leaves_only_the_zygote_and_the_jail_serves_on(warm):
    first = warm.run(request(COUNTING), keep=True)
    (jail,) = [jail for _, jail in warm.pool.jails()]
    assert jail.watch.tasks() == 2  # the zygote and the paused child
    first.kept.close()
    assert jail.alive and jail.watch.tasks() == 1
    # Without keep, a step's child ends as it always did.
    plain = warm.run(request(COUNTING))
    assert plain.kept is None and plain.result["kind"] == "step"
    assert jail.watch.tasks() == 1


def test_what_a_step_leaves_running_is_killed_before_the_child_is_kept(warm):
    code = """
import subprocess
def run(event, step):
    sleeper = ["/usr/bin/python3", "-c", "import time; time.sleep(60)"]
    step.do("spawn", lambda: subprocess.Popen(sleeper).pid)
    return step.do("after", lambda: 1)
"""
    first = warm.run(request(code), keep=True)
    assert first.status == Status.OK, first.error
    (jail,) = [jail for _, jail in warm.pool.jails()]
    # Its orphan is dead (a zombie of the child's at most, which keeps it from being kept).
    if first.kept is not None:
        assert jail.watch.tasks() == 2
        first.kept.close()
    assert jail.watch.tasks() == 1


def test_a_step_that_leaves_a_thread_is_not_kept_and_its_result_stands(warm):
    code = """
import threading, time
def run(event, step):
    step.do("thread", lambda: threading.Thread(target=time.sleep, args=(30,), daemon=True).start())
    return step.do("after", lambda: 1)
"""
    first = warm.run(request(code), keep=True)
    assert first.status == Status.OK, first.error
    assert first.result["kind"] == "step" and first.result["status"] == "complete"
    assert first.kept is None
    (jail,) = [jail for _, jail in warm.pool.jails()]
    assert jail.watch.tasks() == 1


def test_a_kept_step_over_its_wall_limit_is_a_timeout_and_the_jail_serves_on(warm):
    code = """
import time
def run(event, step):
    step.do("quick", lambda: 1)
    step.do("slow", lambda: time.sleep(30), timeout=60)
"""
    first = warm.run(request(code, wall_seconds=1), keep=True)
    second = first.kept.resume(request(code, wall_seconds=1), 1, NOW)
    assert second.status == Status.TIMED_OUT
    assert second.kept is None
    assert second.progress[-1]["name"] == "slow"
    (jail,) = [jail for _, jail in warm.pool.jails()]
    assert jail.alive and jail.watch.tasks() == 1


def test_a_child_that_spent_its_cpu_share_is_not_resumed(warm):
    code = """
import os
def run(event, step):
    step.do("burn", lambda: sum(range(3_000_000)))
    return step.do("next", lambda: os.getpid())
"""
    first = warm.run(request(code, cpu_seconds=1), keep=True)
    assert first.kept is not None and first.kept.cpu_seconds > 0
    first.kept.cpu_seconds = 0.5  # as if the first step had burnt half its limit
    assert first.kept.resume(request(code, cpu_seconds=1), 1, NOW) is None
    (jail,) = [jail for _, jail in warm.pool.jails()]
    assert jail.watch.tasks() == 1  # ended, the jail given back


def test_a_lying_pause_does_not_keep_the_jail_busy_forever(warm):
    # Tenant code says "paused" on the keep socket in the middle of its step.
    code = """
import os, time
def run(event, step):
    def lie():
        os.write(4, b"P")
        time.sleep(30)
    step.do("lie", lie)
"""
    result = warm.run(request(code, wall_seconds=2), keep=True)
    assert result.kept is None
    assert result.status in (Status.SANDBOX_FAILURE, Status.TIMED_OUT, Status.ERROR)
    assert os.getpid()  # the worker is fine, and the next step runs
    again = warm.run(request(COUNTING), keep=True)
    assert again.status == Status.OK
    again.kept.close()


KEPT = {
    "id": 8, "exit_code": None, "signal": None, "timed_out": False, "cancelled": False,
    "retire": False, "cpu_seconds": 0.001, "maxrss_bytes": 1 << 20, "kept": True,
}  # fmt: skip


def test_a_kept_status_is_a_clean_exit_and_nothing_else():
    assert check_status(KEPT, 8).exit_code == 0
    for lie in ({"exit_code": 0}, {"signal": 9}, {"timed_out": True}, {"retire": True},
                {"kept": 1}):  # fmt: skip
        with pytest.raises(ValueError):
            check_status({**KEPT, **lie}, 8)


def test_a_child_that_dies_in_a_keepable_step_reports_its_real_end(warm):
    # Its socket closes with it: that is no pause, and the memory limit is what ended it.
    code = """
def run(event, step):
    def bomb():
        blocks = []
        while True:
            blocks.append(bytearray(16 * 1024 * 1024))
    step.do("bomb", bomb)
"""
    result = warm.run(request(code), keep=True)
    assert result.status == Status.MEMORY_EXCEEDED
    assert result.kept is None
    assert result.progress[-1]["name"] == "bomb"
