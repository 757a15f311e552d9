"""Warm mode beyond the hostile suite (issue 8): what a zygote shared by steps must not leak."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from execution.sandbox import Limits, SandboxRequest, Status, WarmSandbox
from execution.sandbox.warm_channel import check_status
from tests.sandbox.conftest import SMALL, workflow_input

pytestmark = pytest.mark.sandbox

WORKFLOW_INPUT = workflow_input()


@pytest.fixture
def warm(sandbox, sandbox_config):
    """A warm sandbox of this test's own, so its jails and their pids are the test's alone."""
    box = WarmSandbox(sandbox_config, jails_per_worker=4, idle_seconds=300, fresh=sandbox)
    yield box
    box.close()


def step(box, code, input=None, tenant="acme", mode="call", **overrides):
    limits = Limits(**{**SMALL.to_json(), **overrides})
    request = SandboxRequest(tenant=tenant, code=code, input=input, limits=limits, mode=mode)
    return box.run(request)


def only_zygote(box) -> int:
    (pid,) = box.zygote_pids()
    return pid


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_steps_reuse_one_zygote_and_each_gets_a_fresh_child(warm):
    code = "import os\ndef main(x):\n    return os.getpid()\n"
    first = step(warm, code)
    zygote = only_zygote(warm)
    second = step(warm, code)
    assert first.status == second.status == Status.OK
    assert first.result != second.result and 1 not in (first.result, second.result)
    assert only_zygote(warm) == zygote


def test_a_step_cannot_kill_its_zygote(warm):
    code = """
import os, signal
def main(x):
    if x == "attack":
        for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGSTOP, signal.SIGCHLD):
            os.kill(1, sig)
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:  # nothing but the zygote, which kill(-1) spares
            pass
        return "still here"
    return "next"
"""
    assert step(warm, code, "next").status == Status.OK
    zygote = only_zygote(warm)
    attack = step(warm, code, "attack")
    assert (attack.status, attack.result) == (Status.OK, "still here")
    after = step(warm, code, "next")
    assert (after.status, after.result) == (Status.OK, "next")
    assert only_zygote(warm) == zygote  # the same jail served all three


def test_a_process_left_behind_does_not_reach_the_next_step(warm, sandbox_config):
    code = """
import os, time
def main(x):
    if x == "leave":
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(0.5)
                open("/tmp/late", "w").write("from the last step")
                time.sleep(60)
            os._exit(0)
        time.sleep(0.1)
        return "left"
    time.sleep(1)
    return {
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "me": os.getpid(),
        "tmp": os.listdir("/tmp"),
    }
"""
    assert step(warm, code, "leave").result == "left"
    later = step(warm, code, "look")
    assert later.status == Status.OK, later.error
    assert later.result["pids"] == [1, later.result["me"]]
    assert later.result["tmp"] == []
    from tests.sandbox.conftest import _sandbox_pids

    assert set(_sandbox_pids(sandbox_config)) - warm.zygote_pids() - _session_zygotes() == set()


def _session_zygotes() -> set[int]:
    """Zygotes of other sandboxes in this session (the conftest's shared warm sandbox)."""
    return {int(p) for p in os.listdir("/proc") if p.isdigit() and _is_zygote(int(p))}


def _is_zygote(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().endswith(b"/runtime/boot.py\0--warm\0")
    except OSError:
        return False


def test_tampering_with_the_runtime_in_memory_does_not_reach_the_next_step(warm):
    code = """
import builtins, json, sys, __main__
import stepwell._engine
SEEN = []
def main(x):
    SEEN.append(x)
    if x == "tamper":
        json.dumps = lambda *a, **k: "tampered"
        json.loads = lambda *a, **k: {"mode": "call", "input": "forged"}
        __main__.encode = lambda doc: b'{"ok": true, "result": "forged"}'
        __main__.load_tenant = lambda: None
        stepwell._engine.activate = lambda *a: {"kind": "complete", "output": "forged"}
        sys.modules["json"] = None
        builtins.len = lambda obj: -1
        return "tampered"
    return {"seen": SEEN, "len": len("abc"), "dumps": json.dumps([1])}
"""
    first = step(warm, code, "tamper")
    assert first.status == Status.OK and first.result == "forged"  # its own result only
    second = step(warm, code, "look")
    assert second.status == Status.OK, second.error
    assert second.result == {"seen": ["look"], "len": 3, "dumps": "[1]"}


def test_files_and_memory_do_not_carry_between_steps(warm):
    code = """
import os
COUNTER = {"n": 0}
def main(x):
    COUNTER["n"] += 1
    seen = {d: sorted(os.listdir(d)) for d in ("/tmp", "/work", "/dev/shm")}
    if x == "write":
        for d in ("/tmp", "/work", "/dev/shm"):
            open(f"{d}/secret", "w").write("from step one")
            os.makedirs(f"{d}/deep/er/still", exist_ok=True)
            os.symlink("/etc/passwd", f"{d}/link")
        os.chmod("/tmp/deep/er", 0)
        os.chmod("/work/deep", 0o500)
        os.mkfifo("/tmp/fifo")
    return {"counter": COUNTER["n"], "seen": seen, "cwd": os.getcwd()}
"""
    first = step(warm, code, "write")
    second = step(warm, code, "look")
    empty = {"/tmp": [], "/work": [], "/dev/shm": []}
    assert first.result == {"counter": 1, "seen": empty, "cwd": "/work"}
    assert second.result == {"counter": 1, "seen": empty, "cwd": "/work"}


def test_a_step_holds_only_its_own_fds_and_cannot_reach_the_zygotes(warm):
    code = """
import os
def main(x):
    reached = {}
    for path in ("/proc/1/fd/3", "/proc/1/mem", "/proc/1/environ", "/proc/1/fd"):
        try:
            if path.endswith("/fd"):
                os.listdir(path)
            else:
                os.close(os.open(path, os.O_RDWR if path.endswith("/3") else os.O_RDONLY))
            reached[path] = "open"
        except OSError as exc:
            reached[path] = exc.errno
    return {"fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")), "reached": reached}
"""
    result = step(warm, code)
    assert result.status == Status.OK, result.error
    # 0, 1, 2, the private result channel and listdir's own: nothing of the zygote's.
    assert result.result["fds"] == [0, 1, 2, 3, 4]
    assert all(value in (1, 13) for value in result.result["reached"].values())  # EPERM, EACCES


def test_two_tenants_warm_jails_side_by_side(warm):
    code = """
import os, time
def main(me):
    open(f"/tmp/{me}", "w").write(me)
    time.sleep(1)
    return {"tmp": os.listdir("/tmp"), "code": open("/code/tenant.py").read().count(me)}
# TENANT
"""
    results = {}

    def go(tenant):
        results[tenant] = step(warm, code.replace("TENANT", tenant), tenant, tenant=tenant)

    threads = [threading.Thread(target=go, args=(t,)) for t in ("acme", "globex")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for tenant in ("acme", "globex"):
        assert results[tenant].status == Status.OK, results[tenant].error
        assert results[tenant].result == {"tmp": [tenant], "code": 1}
    jails = warm.pool.jails()
    assert sorted(key.tenant for key, _ in jails) == ["acme", "globex"]
    zygotes = [jail.zygote_pid() for _, jail in jails]
    assert len(set(zygotes)) == 2
    assert len({uid_of(pid) for pid in zygotes}) == 2  # a different outside uid each


def test_a_new_code_version_gets_its_own_jail(warm):
    step(warm, "def main(x):\n    return 1\n")
    step(warm, "def main(x):\n    return 2\n")
    assert len({key.code_sha256 for key, _ in warm.pool.jails()}) == 2


def test_the_pool_keeps_at_most_its_bound_least_recently_used_first(sandbox, sandbox_config):
    box = WarmSandbox(sandbox_config, jails_per_worker=2, idle_seconds=300, fresh=sandbox)
    code = "def main(x):\n    return x\n"
    try:
        for tenant in ("a", "b", "a", "c"):
            assert step(box, code, tenant, tenant=tenant).result == tenant
        assert sorted(key.tenant for key, _ in box.pool.jails()) == ["a", "c"]
    finally:
        box.close()
    assert box.zygote_pids() == set()


def test_idle_jails_are_reaped(sandbox, sandbox_config):
    box = WarmSandbox(sandbox_config, jails_per_worker=2, idle_seconds=0.4, fresh=sandbox)
    try:
        step(box, "def main(x):\n    return x\n", 1)
        zygote = only_zygote(box)
        deadline = time.monotonic() + 5
        while box.pool.jails() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert box.pool.jails() == []
        while Path(f"/proc/{zygote}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the reaper stops it just after taking it out of the pool
        assert not Path(f"/proc/{zygote}").exists()
    finally:
        box.close()


def test_a_jail_that_died_while_idle_is_replaced(warm):
    code = "def main(x):\n    return x\n"
    step(warm, code, 1)
    zygote = only_zygote(warm)
    os.kill(zygote, signal.SIGKILL)
    time.sleep(0.1)
    result = step(warm, code, 2)
    assert (result.status, result.result) == (Status.OK, 2)
    assert only_zygote(warm) != zygote


def test_a_step_sent_just_as_its_idle_jail_died_is_run_or_retried(warm):
    code = "def main(x):\n    return x\n"
    step(warm, code, 1)
    os.kill(only_zygote(warm), signal.SIGKILL)  # no pause: the request may beat the EOF
    result = step(warm, code, 2)
    if result.status == Status.SANDBOX_FAILURE:  # it reached the dying zygote's socket
        assert result.error["message"].startswith("the sandbox failed: ")
    else:  # refused at once (EPIPE) and run in a replacement, or the death was seen first
        assert (result.status, result.result) == (Status.OK, 2)
    assert step(warm, code, 3).result == 3


def test_a_jail_that_dies_mid_step_is_a_retryable_failure_that_keeps_its_notes(warm):
    code = """
import time
def run(event, step):
    step.do("slow", lambda: time.sleep(3))
"""
    step(warm, code, WORKFLOW_INPUT, mode="workflow", wall_seconds=2)  # start the jail
    zygote = only_zygote(warm)
    threading.Timer(0.5, os.kill, (zygote, signal.SIGKILL)).start()
    result = step(warm, code, WORKFLOW_INPUT, mode="workflow", wall_seconds=2)
    assert result.status == Status.SANDBOX_FAILURE
    assert result.error["message"] == (
        "the sandbox failed: its warm jail was lost during the step "
        "(the warm jail died during the step)"
    )
    assert result.progress[-1]["name"] == "slow"
    again = step(warm, "def main(x):\n    return 'replaced'\n")
    assert again.result == "replaced"


def test_a_zygote_that_does_not_answer_is_a_sandbox_failure_and_its_jail_is_killed(warm):
    code = """
import time, zygote
zygote.supervise = lambda *args: time.sleep(600)  # module-level code runs in the zygote
def main(x):
    return "never seen"
"""
    result = step(warm, code, wall_seconds=1)
    # Not the step's timeout: the zygote answers at the wall limit unless it is broken.
    assert result.status == Status.SANDBOX_FAILURE
    assert result.error["message"] == (
        "the sandbox failed: its warm jail was lost during the step "
        "(its zygote did not answer in time)"
    )
    assert warm.pool.jails() == []  # the jail was killed, not kept


def test_an_answer_to_another_activation_is_refused(warm):
    code = """
import zygote
send = zygote.send_frame
def lie(control, doc):
    send(control, {**doc, "id": doc["id"] ^ 1} if "id" in doc else doc)
zygote.send_frame = lie
def main(x):
    return "answered"
"""
    result = step(warm, code)
    assert result.status == Status.SANDBOX_FAILURE
    assert "answered activation" in result.error["message"]
    assert warm.pool.jails() == []
    with pytest.raises(ValueError, match="answered activation 7, not 8"):
        check_status(
            {"id": 7, "exit_code": 0, "signal": None, "timed_out": False, "cancelled": False,
             "retire": False, "cpu_seconds": 0.0, "maxrss_bytes": 0, "kept": False},
            8,
        )  # fmt: skip


def test_a_memory_bomb_fails_alone_and_the_jail_serves_on(warm):
    code = """
def main(x):
    if x == "bomb":
        hog = []
        while True:
            hog.append(b"x" * (1 << 20))
    return "fine"
"""
    assert step(warm, code, "warm up").result == "fine"
    zygote = only_zygote(warm)
    bomb = step(warm, code, "bomb")
    assert bomb.status == Status.MEMORY_EXCEEDED
    assert bomb.error["message"] == "memory limit exceeded (64 MiB)"
    assert step(warm, code, "after").result == "fine"
    assert only_zygote(warm) == zygote


def test_the_pids_limit_holds_for_each_step(warm):
    code = """
import os, time
def main(x):
    children = 0
    for _ in range(100):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children += 1
    return children
"""
    counts = [step(warm, code, pids=8).result for _ in range(2)]
    assert counts == [7, 7]  # the step itself is the 8th; the zygote is not counted


def test_sysv_ipc_and_message_queues_are_denied_in_a_warm_jail(warm):
    from tests.sandbox.test_hostile import SYSCALL_PROBE

    calls = {"shmget": (29, [0, 4096, 0o1600]), "msgget": (68, [0, 0o1600]),
             "semget": (64, [0, 1, 0o1600]), "mq_open": (240, [0, 0, 0, 0])}  # fmt: skip
    result = step(warm, SYSCALL_PROBE, calls)
    assert result.status == Status.OK, result.error
    assert result.result == {name: 1 for name in calls}


def test_module_level_code_that_ends_the_zygote_runs_fresh_instead(warm, sandbox):
    code = "import os\nos._exit(3)\ndef main(x):\n    return 1\n"
    result = step(warm, code)
    assert result.status == Status.ERROR
    assert result.error["message"] == "the step exited without a result (exit code 3)"
    assert warm.pool.jails() == []


def test_a_module_that_fails_to_import_fails_each_step_as_in_fresh_mode(warm):
    result = step(warm, "raise ValueError('at import')\ndef main(x):\n    return 1\n")
    assert (result.status, result.error["type"]) == (Status.ERROR, "ValueError")
    assert 'File "/code/tenant.py", line 1' in result.error["traceback"]
    again = step(warm, "raise ValueError('at import')\ndef main(x):\n    return 1\n")
    assert again.error["message"] == "at import"


def test_module_level_threads_keep_a_module_out_of_warm_mode(warm):
    code = """
import threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
def main(x):
    return threading.active_count()
"""
    result = step(warm, code)
    assert (result.status, result.result) == (Status.OK, 2)  # it ran, in a fresh jail
    assert warm.pool.jails() == []


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_worker_lets_go_of_the_parents_jails(warm):
    code = "def main(x):\n    return x\n"
    step(warm, code, 1)
    zygote = only_zygote(warm)
    (jail,) = [jail for _, jail in warm.pool.jails()]
    control_fd = jail.control.fileno()
    pid = os.fork()
    if pid == 0:  # a Celery prefork child, say: no jails, and no copy of their channels
        try:
            closed = True
            try:
                os.fstat(control_fd)
                closed = False
            except OSError:
                pass
            os._exit(0 if warm.pool.jails() == [] and closed else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert step(warm, code, 2).result == 2
    assert only_zygote(warm) == zygote


def test_progress_notes_reach_the_callback_while_the_step_runs(warm):
    seen = []
    code = "import time\ndef run(event, step):\n    step.do('slow', lambda: time.sleep(1) or 1)\n"
    step(warm, code, WORKFLOW_INPUT, mode="workflow")  # start the jail, untimed
    started = time.monotonic()
    request = SandboxRequest(
        tenant="acme",
        code=code,
        input=WORKFLOW_INPUT,
        limits=SMALL,
        mode="workflow",
        on_progress=lambda note: seen.append((note, time.monotonic() - started)),
    )
    result = warm.run(request)
    assert result.status == Status.OK and result.result["status"] == "complete"
    ((note, at),) = seen
    assert (note["kind"], note["name"]) == ("intent", "slow")
    assert at < result.wall_seconds - 0.5  # heard before the step's second was over


def test_what_the_module_prints_at_import_is_in_every_steps_output(warm):
    code = (
        "import sys\nprint('imported')\nprint('warned', file=sys.stderr)\n"
        "def main(x):\n    print(x)\n"
    )
    results = [step(warm, code, n) for n in (1, 2)]
    assert [(r.stdout, r.stderr) for r in results] == [
        ("imported\n1\n", "warned\n"),
        ("imported\n2\n", "warned\n"),
    ]


def test_when_every_slot_is_held_an_idle_warm_jail_gives_its_own_back(sandbox_config):
    from execution.sandbox import FreshSandbox, SandboxConfig

    config = SandboxConfig(
        uid_base=sandbox_config.uid_base + 1000,
        slots=2,
        state_dir=sandbox_config.state_dir / "two-slots",
    )
    config.state_dir.mkdir(mode=0o755)
    box = WarmSandbox(
        config,
        jails_per_worker=4,
        idle_seconds=300,
        fresh=FreshSandbox(config),
        jails_per_machine=2,
    )
    code = "def main(x):\n    return x\n"
    try:
        for tenant in ("a", "b", "c"):  # the third jail needs a slot the first one holds
            assert step(box, code, tenant, tenant=tenant).result == tenant
        assert sorted(key.tenant for key, _ in box.pool.jails()) == ["b", "c"]
    finally:
        box.close()
