"""The engine end to end: real Celery workers, real nsjail, real PostgreSQL and Redis."""

import itertools
import time
from datetime import timedelta
from pathlib import Path

import pytest

from execution import workflows
from execution.models import Instance, ProgressEvent, Step
from tests.factories import set_quota, upload
from tests.integration.stack import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def start(tenant, name, code, payload=None):
    wf = upload(tenant, name, code).workflow
    return workflows.start_instance(wf, payload=payload or {})[0]


def finished(instance, timeout=60, stack=None):
    def done():
        instance.refresh_from_db()
        return instance.is_terminal

    try:
        wait_until(done, timeout, interval=0.1, what=f"instance {instance.key} to finish")
    except AssertionError:
        raise AssertionError(stack.logs() if stack else "timed out") from None
    return instance


def step_processes(stack) -> int:
    """Processes running a step under this stack's workers (other test runs may have theirs):
    in a fresh jail nsjail's child; in a warm jail the children of its zygote, which itself
    stays up, idle and holding no instance, for the next step of its code version."""
    roots = {w.proc.pid for w in stack.workers}
    parent_of = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (chain := ancestors(int(entry.name))):
            parent_of[int(entry.name)] = chain[0]
    count = 0
    for pid, parent in parent_of.items():
        if read_comm(parent) != "nsjail" or not roots & set(ancestors(parent)):
            continue
        if b"--warm" in read_cmdline(pid):
            count += sum(1 for p in parent_of.values() if p == pid)
        else:
            count += 1
    return count


def read_cmdline(pid) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def read_comm(pid) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1 and len(chain) < 50:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def completed_once(instance) -> None:
    """Every step's result was recorded exactly once."""
    events = ProgressEvent.objects.filter(instance=instance, type="step.completed")
    indexes = [e.data["step"]["index"] for e in events]
    assert len(indexes) == len(set(indexes)), indexes
    seqs = list(ProgressEvent.objects.filter(instance=instance).values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.parametrize("mode", ["warm", "fresh"])
def test_a_multi_step_workflow_completes_with_the_right_output(stack, acme, mode):
    set_quota(acme, sandbox_mode=mode)  # warm is the default; fresh stays a choice
    code = """
    def run(event, step):
        total = step.do("price", lambda: sum(i["qty"] * i["price"] for i in event.payload["items"]))
        tax = step.do("tax", lambda: round(total * 0.2, 2))
        def receipt():
            print("receipt for", total + tax)
            return {"total": total + tax}
        return step.do("receipt", receipt)
    """
    payload = {"items": [{"qty": 2, "price": 5}, {"qty": 1, "price": 10}]}
    instance = finished(start(acme, "order", code, payload), stack=stack)
    assert (instance.status, instance.output) == ("complete", {"total": 24.0})
    assert instance.steps.get(name="receipt").logs.strip() == "receipt for 24.0"
    completed_once(instance)


def test_warm_steps_of_one_instance_go_on_in_one_kept_child(stack, acme):
    """Sticky execution (issue 18): consecutive steps run in the child kept from the step
    before, which goes on with each result as recorded rather than replaying."""
    set_quota(acme, sandbox_mode="warm")
    code = """
    import os
    STARTS = []
    def run(event, step):
        STARTS.append(1)
        seen = []
        for i in range(6):
            mine = lambda: {"pid": os.getpid(), "starts": len(STARTS), "t": (i,)}
            seen.append(step.do(f"s{i}", mine))
        return [s["t"] for s in seen]
    """
    instance = finished(start(acme, "sticky", code), stack=stack)
    assert (instance.status, instance.output) == ("complete", [[i] for i in range(6)])
    outputs = [s.output for s in instance.steps.order_by("index")]
    assert len({o["pid"] for o in outputs}) < len(outputs)  # some steps shared a child
    for before, after in itertools.pairwise(outputs):
        if before["pid"] == after["pid"]:
            assert before["starts"] == after["starts"]  # the same run(), not a replay
    completed_once(instance)


def test_a_sleeping_instance_holds_nothing_and_wakes_within_a_second(stack, acme):
    code = """
    def run(event, step):
        step.do("before", lambda: 1)
        step.sleep("nap", "3 seconds")
        return step.do("after", lambda: 2)
    """
    instance = start(acme, "napper", code)
    wait_until(
        lambda: Step.objects.filter(instance=instance, status="sleeping").exists(),
        30,
        what="the sleep",
    )
    time.sleep(0.5)
    instance.refresh_from_db()
    assert instance.status == "sleeping"
    assert instance.lease_owner == "" and instance.lease_expires_at is None
    assert step_processes(stack) == 0
    import redis

    r = redis.Redis.from_url(stack.redis.url)
    assert r.llen("stepwell") == 0
    assert not r.hlen("unacked")
    instance = finished(instance, stack=stack)
    nap = instance.steps.get(name="nap")
    lateness = (nap.finished_at - nap.wake_at).total_seconds()
    assert instance.status == "complete"
    assert 0 <= lateness < 1.0, lateness


def test_events_before_and_after_a_wait_and_the_timeout(stack, acme):
    code = """
    from stepwell import WaitTimeout

    def run(event, step):
        first = step.wait_for_event("first", "one", timeout="30 seconds")
        second = step.wait_for_event("second", "two", timeout="30 seconds")
        try:
            step.wait_for_event("third", "never", timeout="1 second")
        except WaitTimeout:
            return {"first": first, "second": second, "third": "timed out"}
    """
    instance = start(acme, "events", code)
    workflows.send_event(instance, "one", {"n": 1})  # before the wait
    wait_until(
        lambda: Step.objects.filter(instance=instance, name="second", status="waiting").exists(),
        30,
        what="second wait",
    )
    workflows.send_event(instance, "two", {"n": 2})  # after the wait
    instance = finished(instance, stack=stack)
    assert instance.output == {"first": {"n": 1}, "second": {"n": 2}, "third": "timed out"}
    assert instance.steps.get(name="third").status == "timed_out"


def test_retries_follow_their_backoff_then_the_step_error_is_compensated(stack, acme):
    code = """
    from stepwell import StepError

    def run(event, step):
        try:
            step.do("flaky", lambda: 1 / 0,
                    retries={"limit": 2, "delay": "0.5 seconds", "backoff": "exponential"})
        except StepError as e:
            return step.do("compensate", lambda: {"undone": e.type})
    """
    instance = finished(start(acme, "retrying", code), stack=stack)
    assert (instance.status, instance.output) == ("complete", {"undone": "ZeroDivisionError"})
    flaky = instance.steps.get(name="flaky")
    assert (flaky.status, flaky.attempts) == ("errored", 3)
    failures = list(
        ProgressEvent.objects.filter(instance=instance, type="step.failed").values_list(
            "created_at", flat=True
        )
    )
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(failures)]
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0, gaps


def test_non_retryable_error_and_nondeterminism_error_the_instance(stack, acme):
    code = """
    from stepwell import NonRetryableError

    def run(event, step):
        def charge():
            raise NonRetryableError("card declined")
        step.do("charge", charge)
    """
    instance = finished(start(acme, "declined", code), stack=stack)
    assert instance.status == "errored"
    assert instance.steps.get().attempts == 1
    assert "card declined" in instance.error["message"]

    sleeper = """
    def run(event, step):
        step.do("one", lambda: 1)
        step.sleep("nap", "1 second")
        return step.do("two", lambda: 2)
    """
    instance = start(acme, "nd", sleeper)
    wait_until(
        lambda: Step.objects.filter(instance=instance, name="nap").exists(), 30, what="the nap"
    )
    Step.objects.filter(instance=instance, index=0).update(name="renamed")
    instance = finished(instance, stack=stack)
    assert instance.error["type"] == "NonDeterminismError"


def test_a_step_shows_as_running_while_it_runs(stack, acme):
    code = """
    import time

    def run(event, step):
        return step.do("slow", lambda: time.sleep(2) or "done")
    """
    instance = start(acme, "slow", code)
    wait_until(
        lambda: Step.objects.filter(instance=instance, status="running").exists(),
        20,
        what="the step to show as running",
    )
    started = ProgressEvent.objects.get(instance=instance, type="step.started")
    assert not ProgressEvent.objects.filter(instance=instance, type="step.completed").exists()
    instance = finished(instance, stack=stack)
    step = instance.steps.get()
    assert (step.status, step.attempts, instance.output) == ("complete", 1, "done")
    # Both ends are the host's clock when it read the jail's word (the intent, the
    # outcome), so each lags the step by the reader's scheduling: a few ms apart at most
    # (the start's read waited behind a spare jail's spawn on a fast machine, CI 2026-11-30),
    # where a step recorded started and completed at once would show ~0.
    assert (step.finished_at - step.started_at).total_seconds() >= 2 - 0.05
    assert ProgressEvent.objects.filter(instance=instance, type="step.started").count() == 1
    assert started.seq < ProgressEvent.objects.get(instance=instance, type="step.completed").seq


@pytest.mark.parametrize("mode", ["warm", "fresh"])
def test_a_worker_killed_mid_step_loses_nothing(stack, acme, mode):
    set_quota(acme, sandbox_mode=mode)  # warm is the default; fresh stays a choice
    code = """
    import time

    def run(event, step):
        a = step.do("quick", lambda: time.time())
        def slow():
            time.sleep(4)
            return "slow done"
        b = step.do("slow", slow)
        c = step.do("last", lambda: time.time())
        return {"a": a, "b": b, "c": c}
    """
    instance = start(acme, "killme", code)
    wait_until(
        lambda: Step.objects.filter(instance=instance, name="quick", status="complete").exists(),
        30,
        what="the first step",
    )
    quick = Step.objects.get(instance=instance, name="quick")
    wait_until(lambda: step_processes(stack) > 0, 10, what="the slow step's process")
    time.sleep(0.5)
    killed = stack.workers.pop()
    killed.kill()  # SIGKILL to the worker, its pool and the jail
    killed.proc.wait(10)
    stack.start_worker()
    instance = finished(instance, timeout=60, stack=stack)
    assert instance.status == "complete"
    assert instance.output["b"] == "slow done"
    assert instance.output["a"] == quick.output  # the completed step never ran again
    assert Step.objects.get(pk=quick.pk).attempts == 1
    completed_once(instance)


def test_a_redis_restart_mid_run_loses_nothing(stack, acme):
    code = """
    def run(event, step):
        out = []
        for i in range(6):
            out.append(step.do(f"step {i}", lambda i=i: i * i))
            step.sleep(f"pause {i}", "0.3 seconds")
        return out
    """
    instance = start(acme, "survivor", code)
    wait_until(
        lambda: Step.objects.filter(instance=instance).count() >= 3, 30, what="some progress"
    )
    stack.redis.restart(down_for=1.0)
    instance = finished(instance, timeout=90, stack=stack)
    assert (instance.status, instance.output) == ("complete", [0, 1, 4, 9, 16, 25])
    completed_once(instance)


def test_an_edit_while_sleeping_resumes_on_the_old_version(stack, acme):
    v1 = """
    def run(event, step):
        step.sleep("nap", "2 seconds")
        return step.do("which", lambda: "v1")
    """
    old = start(acme, "pinned", v1)
    wait_until(lambda: Step.objects.filter(instance=old, name="nap").exists(), 30, what="the nap")
    upload(acme, "pinned", v1.replace('"v1"', '"v2"'))
    new, _ = workflows.start_instance(old.workflow)
    old, new = finished(old, stack=stack), finished(new, stack=stack)
    assert (old.output, new.output) == ("v1", "v2")


def test_child_workflows_run_and_report_back(stack, acme):
    upload(
        acme,
        "child",
        """
    def run(event, step):
        step.sleep("breathe", "0.5 seconds")
        return step.do("double", lambda: event.payload["x"] * 2)
    """,
    )
    code = """
    def run(event, step):
        kids = [step.start_workflow(f"spawn {x}", "child", {"x": x}) for x in (1, 2, 3)]
        return [step.wait_for_workflow(f"join {k}", k) for k in kids]
    """
    parent = finished(start(acme, "parent", code), stack=stack)
    assert (parent.status, parent.output) == ("complete", [2, 4, 6])
    assert Instance.objects.filter(parent=parent, status="complete").count() == 3


def test_a_memory_bomb_in_a_step_is_a_step_error_not_a_crash(stack, acme):
    acme.quota_row.step_memory_mb = 64
    acme.quota_row.save()
    code = """
    def run(event, step):
        def bomb():
            blocks = []
            while True:
                blocks.append(bytearray(16 * 1024 * 1024))
        try:
            step.do("bomb", bomb, retries={"limit": 0})
        except Exception as e:
            return {"caught": str(e)}
    """
    instance = finished(start(acme, "bomb", code), stack=stack)
    assert instance.steps.filter(name="bomb").exists(), (instance.status, instance.error)
    step = instance.steps.get(name="bomb")
    assert step.status == "errored"
    assert step.error["type"] in ("MemoryLimitExceeded", "MemoryError")
    assert instance.status == "complete"
    assert all(w.proc.poll() is None for w in stack.workers)
    assert timedelta(0) <= step.finished_at - step.started_at
