"""Normal behaviour of the sandbox, and its pieces without nsjail."""

import json
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from execution.sandbox import (
    Limits,
    SandboxConfig,
    SandboxRequest,
    SandboxResult,
    SandboxSetupError,
    Status,
    get_sandbox,
)
from execution.sandbox import jail as jail_module
from execution.sandbox.cgroups import JobCgroup, Layout, move_self
from execution.sandbox.outcome import JailExit, strip_loader_noise
from execution.sandbox.protocol import ProtocolError, nesting_depth, parse_result
from execution.sandbox.slots import Slots

sandbox_test = pytest.mark.sandbox


@sandbox_test
def test_it_returns_the_steps_value(run):
    result = run("def main(x):\n    return {'doubled': x * 2}\n", 21)
    assert result.status == Status.OK
    assert result.result == {"doubled": 42}
    assert result.error is None
    assert json.loads(json.dumps(result.to_json())) == result.to_json()


@sandbox_test
def test_it_captures_stdout_and_stderr(run):
    code = "import sys\ndef main(x):\n    print('to out')\n    print('to err', file=sys.stderr)\n"
    result = run(code)
    assert result.status == Status.OK
    assert result.result is None
    assert result.stdout == "to out\n"
    assert result.stderr == "to err\n"
    assert not result.stdout_truncated and not result.stderr_truncated


@sandbox_test
def test_an_exception_is_an_error_with_the_tenants_traceback(run):
    code = "def helper():\n    raise ValueError('bad input')\n\ndef main(x):\n    helper()\n"
    result = run(code)
    assert result.status == Status.ERROR
    assert result.error["type"] == "ValueError"
    assert result.error["message"] == "bad input"
    assert 'File "/code/tenant.py", line 2, in helper' in result.error["traceback"]
    assert "boot.py" not in result.error["traceback"]


@sandbox_test
def test_a_syntax_error_is_an_error(run):
    result = run("def main(x) return 1\n")
    assert result.status == Status.ERROR
    assert result.error["type"] == "SyntaxError"
    assert "tenant.py" in result.error["traceback"]


@sandbox_test
def test_a_module_without_main_is_an_error(run):
    result = run("x = 1\n")
    assert result.status == Status.ERROR
    assert "main(input)" in result.error["message"]


@sandbox_test
def test_timings_and_memory_are_reported(run):
    result = run("def main(x):\n    return sum(range(10**6))\n")
    assert result.status == Status.OK
    assert 0 < result.wall_seconds < 5
    assert 0 < result.cpu_seconds < 5
    assert result.peak_memory_bytes and result.peak_memory_bytes < 64 * 2**20


@sandbox_test
def test_the_jail_has_the_promised_shape(run):
    code = """
import os, resource, socket
def main(x):
    st = os.statvfs("/tmp")
    return {
        "uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(),
        "hostname": socket.gethostname(),
        "tmp_bytes": st.f_blocks * st.f_frsize,
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "path0": __import__("sys").path[0],
        "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
    }
"""
    result = run(code, tmp_bytes=4 * 2**20)
    assert result.status == Status.OK, result.error
    shape = result.result
    assert (shape["uid"], shape["gid"], shape["cwd"]) == (1000, 1000, "/work")
    assert shape["hostname"] == "sandbox"
    assert shape["tmp_bytes"] == 4 * 2**20
    assert shape["nofile"] == 64
    assert shape["path0"] == "/runtime"
    assert len(shape["fds"]) <= 5  # 0, 1, 2, the private result channel, listdir's own


@sandbox_test
def test_input_round_trips_as_json(run):
    value = {"text": "héllo ✓", "n": [1, 2.5, None, True], "nested": {"a": {"b": []}}}
    result = run("def main(x):\n    return x\n", value)
    assert result.result == value


@sandbox_test
def test_input_that_is_not_json_is_an_error_before_any_jail(run):
    result = run("def main(x):\n    return x\n", {1, 2})
    assert result.status == Status.ERROR
    assert result.error["type"] == "BadInput"


def broken_setup_result(sandbox_config, python: str):
    from execution.sandbox import FreshSandbox

    config = SandboxConfig(
        python=python,
        uid_base=sandbox_config.uid_base,
        slots=2,
        state_dir=sandbox_config.state_dir,
    )
    return FreshSandbox(config).run(
        SandboxRequest(tenant="acme", code="def main(x): pass", input=None, limits=Limits())
    )


@sandbox_test
def test_a_missing_interpreter_is_a_sandbox_failure_that_names_it(sandbox_config):
    result = broken_setup_result(sandbox_config, "/nonexistent/python3")
    assert result.status == Status.SANDBOX_FAILURE
    assert "/nonexistent/python3" in result.error["message"]


@sandbox_test
def test_a_jail_that_cannot_start_is_a_sandbox_failure(sandbox_config):
    # On the host (the runtime compiles with it), not in the jail, which binds only /usr...
    outside = sandbox_config.state_dir / "outside-the-jail-python3"
    outside.unlink(missing_ok=True)
    outside.symlink_to("/usr/bin/python3")
    result = broken_setup_result(sandbox_config, str(outside))
    assert result.status == Status.SANDBOX_FAILURE
    assert result.error["message"].startswith("the sandbox failed to start")


@sandbox_test
def test_tenant_code_is_readable_by_root_and_the_uid_of_the_slot_that_runs_it_alone(
    run, sandbox_config
):
    code = "def main(x):\n    return open('/code/tenant.py').read()\n"
    result = run(code)
    assert (result.status, result.result) == (Status.OK, code)  # the slot's uid reads it
    root = sandbox_config.code_dir
    assert stat.S_IMODE(root.stat().st_mode) == 0o711  # others pass through, list nothing
    directories = [p for p in root.iterdir() if (p / "tenant.py").read_text() == code]
    assert directories  # one per slot that ran it (the other mode's run too)
    for directory in directories:
        slot = int(directory.name)
        info, source = directory.stat(), (directory / "tenant.py").stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (
            0o750,
            0,
            sandbox_config.uid_base + slot,
        )
        assert (stat.S_IMODE(source.st_mode), source.st_uid) == (0o640, 0)
        assert source.st_gid == info.st_gid
        assert [p.name for p in directory.iterdir()] == ["tenant.py"]
        other_slot = sandbox_config.uid_base + (slot + 1) % sandbox_config.slots
        for uid in (65534, other_slot):  # nobody, and another slot's uid outside any jail
            probe = subprocess.run(
                [sandbox_config.python, "-c", f"open({str(directory / 'tenant.py')!r})"],
                user=uid,
                group=uid,
                capture_output=True,
            )
            assert b"PermissionError" in probe.stderr


def test_get_sandbox_has_a_fresh_and_a_warm_mode():
    from execution.sandbox import FreshSandbox, WarmSandbox

    assert isinstance(get_sandbox("fresh"), FreshSandbox)
    assert isinstance(get_sandbox("warm"), WarmSandbox)
    assert get_sandbox("warm").fresh is get_sandbox("fresh")
    with pytest.raises(ValueError):
        get_sandbox("lukewarm")


def test_config_comes_from_django_settings(settings, tmp_path):
    settings.STEPWELL_SANDBOX_PYTHON = "/opt/python"
    settings.STEPWELL_SANDBOX_UID = 123000
    settings.STEPWELL_SANDBOX_SLOTS = 3
    settings.STEPWELL_CGROUP_ROOT = "/cg"
    settings.STEPWELL_SANDBOX_DIR = str(tmp_path / "jails")
    config = SandboxConfig.from_settings()
    assert (config.python, config.uid_base, config.slots) == ("/opt/python", 123000, 3)
    assert config.cgroup_root == "/cg"
    assert config.state_dir == tmp_path / "jails"


def test_config_refuses_root_uids():
    with pytest.raises(ValueError):
        SandboxConfig(uid_base=0)


@pytest.mark.parametrize(
    "bad",
    [{"memory_bytes": 0}, {"wall_seconds": -1}, {"pids": 1.5}, {"open_files": 2}],
)
def test_limits_refuse_nonsense(bad):
    with pytest.raises(ValueError):
        Limits(**bad)


def test_a_request_computes_its_code_hash_and_checks_its_mode():
    request = SandboxRequest(tenant="acme", code="x = 1", input=None, limits=Limits())
    assert len(request.code_sha256) == 64
    with pytest.raises(ValueError):
        SandboxRequest(tenant="acme", code="x", input=None, limits=Limits(), mode="eval")


def test_a_result_is_json():
    result = SandboxResult(
        Status.TIMED_OUT, None, {"type": "TimedOut", "message": "timed out after 30 s"},
        "", "", False, False, 30.01, 29.9, None,
    )  # fmt: skip
    assert json.loads(json.dumps(result.to_json())) == result.to_json()
    assert result.to_json()["status"] == "timed_out"


# cgroup layouts, with a fake cgroup root


def fake_v1(root: Path) -> Path:
    for ctrl in ("memory", "pids", "cpu"):
        (root / ctrl).mkdir(parents=True)
        (root / ctrl / "cgroup.procs").write_text("")
    return root


def test_it_detects_cgroup_v1(tmp_path):
    layout = Layout.detect(fake_v1(tmp_path))
    assert layout.version == 1
    layout.prepare()
    assert all((tmp_path / ctrl / "NSJAIL").is_dir() for ctrl in ("memory", "pids", "cpu"))


def test_it_detects_cgroup_v2(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    layout = Layout.detect(tmp_path)
    assert (layout.version, layout.root) == (2, tmp_path)
    layout.prepare()
    assert (tmp_path / "NSJAIL").is_dir()
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"


def test_it_uses_a_hybrid_unified_mount_only_with_the_controllers(tmp_path):
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("")
    with pytest.raises(SandboxSetupError):
        Layout.detect(tmp_path)
    (tmp_path / "unified" / "cgroup.controllers").write_text("memory pids cpu")
    assert Layout.detect(tmp_path) == Layout(2, tmp_path / "unified")


def test_it_reads_oom_from_a_v2_job_cgroup(tmp_path):
    job = tmp_path / "NSJAIL" / "job-1-0"
    job.mkdir(parents=True)
    (job / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    (job / "memory.peak").write_text("67108864\n")
    usage = JobCgroup(Layout(2, tmp_path), job).usage()
    assert usage.oom and usage.peak_memory_bytes == 67108864


def test_it_reads_oom_from_a_v1_job_cgroup(tmp_path):
    job = tmp_path / "memory" / "NSJAIL" / "job-1-0"
    job.mkdir(parents=True)
    cgroup = JobCgroup(Layout(1, tmp_path), job)
    cgroup._limit = 64 * 2**20
    (job / "memory.failcnt").write_text("0\n")
    (job / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    (job / "memory.max_usage_in_bytes").write_text("1000\n")
    assert not cgroup.usage().oom
    (job / "memory.failcnt").write_text("7\n")
    assert cgroup.usage().oom


def test_the_sweep_removes_only_cgroups_whose_owner_is_gone(tmp_path):
    layout = Layout(1, fake_v1(tmp_path))
    layout.prepare()
    for name in ("NSJAIL.111", "NSJAIL.222"):
        (tmp_path / "pids" / "NSJAIL" / name).mkdir()
    (tmp_path / "memory" / "NSJAIL" / "job-111-4").mkdir()
    removed = layout.sweep(is_alive=lambda pid: pid == 222)
    assert removed == 2
    assert [p.name for p in (tmp_path / "pids" / "NSJAIL").iterdir()] == ["NSJAIL.222"]
    assert list((tmp_path / "memory" / "NSJAIL").iterdir()) == []


def own_pids_cgroup() -> str:
    lines = Path("/proc/thread-self/cgroup").read_text().splitlines()
    return next(line.split(":", 2)[2] for line in lines if "pids" in line.split(":")[1])


def moved_in_a_thread(root: Path) -> tuple[bool, int, str, str]:
    """move_self(root) in a new thread: (its answer, the thread's id, the thread's
    cgroups before and after)."""
    outcome = []

    def move():
        before = Path("/proc/thread-self/cgroup").read_text()
        moved = move_self(root)
        after = Path("/proc/thread-self/cgroup").read_text()
        outcome.append((moved, threading.get_native_id(), before, after))

    thread = threading.Thread(target=move)
    thread.start()
    thread.join()
    return outcome[0]


def test_the_early_move_writes_the_thread_into_the_pids_cgroup_it_is_in(tmp_path):
    tasks = tmp_path / "pids" / own_pids_cgroup().lstrip("/") / "tasks"
    tasks.parent.mkdir(parents=True)
    moved, tid, _, _ = moved_in_a_thread(tmp_path)
    assert moved and tasks.read_text() == str(tid)
    assert not moved_in_a_thread(tmp_path / "elsewhere")[0]


@sandbox_test
def test_the_early_move_leaves_the_thread_where_it_was():
    layout = Layout.detect("/sys/fs/cgroup")
    if layout.version != 1:
        pytest.skip("the early move is made on cgroup v1 only")
    moved, _, before, after = moved_in_a_thread(layout.root)
    assert moved and after == before


def test_none_of_this_is_a_cgroup_root(tmp_path):
    with pytest.raises(SandboxSetupError):
        Layout.detect(tmp_path)


# The nsjail config and the protocol


def test_the_config_follows_the_policy(tmp_path):
    config = SandboxConfig(uid_base=99000, state_dir=tmp_path, nsjail_path="/bin/true")
    job = JobCgroup(Layout(1, Path("/sys/fs/cgroup")), Path("/sys/fs/cgroup/memory/NSJAIL/j"))
    job._limit = 64 * 2**20
    spec = jail_module.JailSpec(Limits(memory_bytes=64 * 2**20), 99003, tmp_path / "code", job)
    text = jail_module.render(config, spec)
    assert 'outside_id: "99003"' in text and 'outside_id: "0"' not in text
    assert "keep_env" not in text  # false is the default, so it is not written
    assert "mount_proc: true" in text
    assert 'cgroup_mem_parent: "NSJAIL/j"' in text
    assert "cgroup_mem_swap_max: 0" in text
    assert 'src: "/"\n' not in text and 'dst: "/sys' not in text
    assert "clone_newnet" not in text  # true is the default
    cfg = jail_module.build(config, spec)
    assert cfg.keep_env is False and cfg.clone_newnet and cfg.clone_newuser
    assert {m.dst for m in cfg.mount} >= {"/usr", "/runtime", "/code", "/tmp", "/work"}
    assert cfg.exec_bin.arg[-1] == "/runtime/boot.py"


def test_network_on_drops_only_the_network_namespace(tmp_path):
    config = SandboxConfig(state_dir=tmp_path, nsjail_path="/bin/true")
    job = JobCgroup(Layout(1, Path("/sys/fs/cgroup")), Path("/x/job"))
    job._limit = 64 * 2**20
    spec = jail_module.JailSpec(Limits(network=True), 99000, tmp_path, job)
    cfg = jail_module.build(config, spec)
    assert not cfg.clone_newnet and cfg.clone_newpid and cfg.clone_newuser


def test_the_protocol_accepts_only_its_schema():
    assert parse_result(b'{"ok": true, "result": [1]}') == (True, [1])
    ok, error = parse_result(b'{"ok": false, "error": {"type": "E", "message": "m"}}')
    assert (ok, error) == (False, {"type": "E", "message": "m"})
    for bad in (b"", b"[]", b'{"ok": 1}', b'{"ok": false, "error": {"type": 1}}'):
        with pytest.raises(ProtocolError):
            parse_result(bad)


def test_nesting_is_measured_on_the_parsed_value_without_recursion():
    assert nesting_depth(json.loads('[{"a": "[[[[\\"]]"}]')) == 2
    assert nesting_depth(7) == 0
    deep: list = []
    for _ in range(10**5):
        deep = [deep]
    assert nesting_depth(deep, limit=100) == 101  # stops counting past the limit
    with pytest.raises(ProtocolError, match="nested deeper than 100 levels"):
        parse_result(b'{"ok": true, "result": ' + b"[" * 100 + b"]" * 100 + b"}")
    assert parse_result(b'{"ok": true, "result": ' + b"[" * 99 + b"]" * 99 + b"}")[0]
    for unparsable in (b"[" * 10**6, b'{"ok": true, "result": ' + b"[" * 10**6):
        with pytest.raises(ProtocolError, match="nested deeper"):
            parse_result(unparsable)


def test_nsjail_log_lines_are_read():
    assert JailExit.from_log(
        "[I][x] pid=12 ([STANDALONE MODE]) exited with status: 3, (PIDs left: 0)"
    ) == JailExit(True, 3, None, False)
    log = (
        "[I][x] pid=9 run time >= time limit (3 >= 3) ([STANDALONE MODE]). Killing it\n"
        "[I][x] pid=9 ([STANDALONE MODE]) terminated with signal: SIGKILL (9), (PIDs left: 0)"
    )
    assert JailExit.from_log(log) == JailExit(True, None, 9, True)
    failed = "[E][x] standaloneMode():274 Couldn't launch the child process\n" + (
        "[I][x] pid=9 ([STANDALONE MODE]) exited with status: 255, (PIDs left: 0)"
    )
    assert not JailExit.from_log(failed).launched


def test_only_nsjail_lines_give_a_status_and_a_number_must_be_small():
    noise = "pid=1 ( exited with status: 4\n[I] ) exited with status: 5\n"
    assert JailExit.from_log(noise) == JailExit(False, None, None, False)
    huge = "[I][x] pid=12 ([STANDALONE MODE]) exited with status: " + "9" * 5000
    assert JailExit.from_log(huge) == JailExit(False, None, None, False)
    later = huge + "\n[I][x] pid=12 (x) exited with status: 7, (PIDs left: 0)"
    assert JailExit.from_log(later) == JailExit(True, 7, None, False)
    bad_signal = "[I] pid=9 (x) terminated with signal: SIGKILL 9), (PIDs left: 0)"
    assert JailExit.from_log(bad_signal).signal is None
    fatal = "[I] pid=9 (x) exited with status: 0\n[F][x] something broke"
    assert not JailExit.from_log(fatal).launched


def test_only_leading_loader_complaints_are_stripped_from_stderr():
    complaint = b"nsjail: /lib/libnl-3.so.200: no version information available (by nsjail)\n"
    tenant = b"Traceback (most recent call last):\n"
    assert strip_loader_noise(complaint * 3 + tenant + complaint) == tenant + complaint
    assert strip_loader_noise(b"no version information available nsjail: \n") == (
        b"no version information available nsjail: \n"
    )
    assert strip_loader_noise(complaint[:-1]) == complaint[:-1]  # a line needs its newline


def test_slots_are_exclusive(tmp_path):
    slots = Slots(tmp_path / "slots", 2)
    slots.prepare()
    with slots.acquire() as a, slots.acquire() as b:
        assert {a, b} == {0, 1}
