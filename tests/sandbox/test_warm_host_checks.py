"""Warm jails checked by the host (issue 13): a tenant's module runs inside the zygote and may
patch it, so whether a jail is clean between steps is read from its cgroups, never asked."""

import logging
import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from execution.sandbox import (
    FreshSandbox,
    Limits,
    SandboxConfig,
    SandboxRequest,
    Status,
    WarmSandbox,
)
from execution.sandbox.cgroups import PARENT, JailCounters, JobCgroup, Layout
from execution.sandbox.slots import NoSlotInTime, Slots
from lib import metrics
from tests.sandbox.conftest import PINNED_UID_BASE, SMALL, _sandbox_pids

pytestmark = pytest.mark.sandbox

SLOTS = 16
# A uid range of this module's own (conftest's ranges start at 200000 and end below
# 400000), so every sandbox process in it belongs to these tests.
UID_BASE = (
    int(PINNED_UID_BASE) + 5000 if PINNED_UID_BASE else 400000 + (os.getpid() % 10000) * SLOTS
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def config():
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root to create cgroups and namespaces")
    state = Path(tempfile.mkdtemp(prefix="stepwell-warm-checks-"))
    state.chmod(0o755)
    yield SandboxConfig(uid_base=UID_BASE, slots=SLOTS, state_dir=state)
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def fresh(config):
    box = FreshSandbox(config)
    box.prepare()
    return box


@pytest.fixture
def make_box(config, fresh):
    """make_box(**options) -> a WarmSandbox of this test's own, closed after it."""
    boxes = []

    def make(**options):
        options = {"jails_per_worker": 4, "idle_seconds": 300, **options}
        boxes.append(WarmSandbox(config, fresh=fresh, **options))
        return boxes[-1]

    yield make
    for box in boxes:
        box.close()
    assert jail_pids(config) == set(), "a test left sandbox processes behind"


@pytest.fixture
def box(make_box):
    return make_box()


def step(box, code, input=None, tenant="acme", **overrides):
    limits = Limits(**{**SMALL.to_json(), **overrides})
    return box.run(SandboxRequest(tenant=tenant, code=code, input=input, limits=limits))


def jail_pids(config) -> set[int]:
    """Host pids of every process running as one of the config's sandbox uids."""
    return set(_sandbox_pids(config))


def started_at(pid: int) -> float:
    """When the process started, in CLOCK_BOOTTIME seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19]) / CLOCK_TICKS


def only_zygote(box) -> int:
    (pid,) = box.zygote_pids()
    return pid


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


LEAVE_A_SLEEPER = """
import os, time, zygote
zygote.kill_all_others = lambda: None  # the zygote's own cleanup between steps
def main(x):
    if x == "leave":
        if os.fork() == 0:
            os.setsid()
            os.closerange(0, 1024)  # the step's pipes: the host sees the step end
            while True:
                time.sleep(1)
        return "left"
    return {"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), "me": os.getpid()}
"""


def test_a_module_that_disables_the_zygotes_cleanup_leaves_no_process_older_than_its_step(
    box, config
):
    first = step(box, LEAVE_A_SLEEPER, "leave")
    assert (first.status, first.result) == (Status.OK, "left")
    after_first = jail_pids(config)
    before_second = time.clock_gettime(time.CLOCK_BOOTTIME)
    second = step(box, LEAVE_A_SLEEPER, "look")  # another instance of the same version
    assert second.status == Status.OK, second.error
    assert second.result["pids"] == [1, second.result["me"]]
    now = jail_pids(config)
    assert now & after_first == set()  # nothing of step one's jail lives on
    # The jail serving step two (and anything in it) is younger than that step.
    assert all(started_at(pid) >= before_second - 1 / CLOCK_TICKS for pid in now)
    assert now == box.zygote_pids()


def test_a_module_that_forks_at_import_runs_fresh_and_leaves_nothing(box, config):
    code = """
import os, time, zygote
zygote.kill_all_others = lambda: None
if os.fork() == 0:
    os.setsid()
    while True:
        time.sleep(1)
def main(x):
    return "ran"
"""
    result = step(box, code)
    assert (result.status, result.result) == (Status.OK, "ran")  # in a fresh jail
    assert box.pool.jails() == []
    assert wait_until(lambda: jail_pids(config) == set())


def test_a_zygote_that_burns_cpu_between_steps_is_replaced(box, caplog):
    code = """
import time, zygote
serve_one = zygote.serve_one
def serve_then_spin(*args):
    serve_one(*args)  # the step's status is sent: the host thinks the jail idle
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
zygote.serve_one = serve_then_spin
def main(x):
    return x
"""
    assert step(box, code, 1).result == 1
    zygote = only_zygote(box)
    assert wait_until(lambda: cpu_seconds(zygote) >= 0.3)
    with caplog.at_level(logging.WARNING, logger="execution.sandbox.warm_pool"):
        assert step(box, code, 2).result == 2
    assert only_zygote(box) != zygote
    assert "of CPU while idle" in caplog.text


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("inf")  # gone: the host already stopped it
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def test_the_zygote_joins_its_cpu_group_while_it_starts_and_the_group_goes_with_the_jail(
    box, config
):
    assert step(box, "def main(x):\n    return x\n", 1).result == 1
    ((_, jail),) = box.pool.jails()
    group = jail.watch.cpu_group
    if group is None:
        pytest.skip("cpuacct shares the cpu hierarchy here: nsjail's group counts the CPU")
    assert jail.cpu_group_joined == group  # at "started", not after "ready"
    assert (group / "cgroup.procs").read_text().split() == [str(only_zygote(box))]
    box.close()
    assert wait_until(lambda: not group.exists())


def test_a_start_that_fails_after_the_zygote_joined_its_cpu_group_leaves_no_cgroup(box, config):
    layout = Layout.detect(config.cgroup_root)
    prefix = f"job-{os.getpid()}-warm"

    def groups() -> set:
        return {p for parent in layout.parents() for p in parent.glob(f"{prefix}*")}

    before = groups()  # earlier tests' jails in this process, ended or ending
    result = step(box, "import os\nos._exit(3)\n")  # the zygote dies at the tenant's import
    assert result.status != Status.OK
    assert box.pool.jails() == []
    assert groups() - before == set()


def test_an_idle_jail_with_a_process_in_it_is_replaced_before_the_next_step(box, caplog):
    code = """
import os, time, zygote
serve_one = zygote.serve_one
def serve_then_fork(*args):
    serve_one(*args)
    time.sleep(0.2)  # well after the status, where the host's check after a step cannot see
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
zygote.serve_one = serve_then_fork
def main(x):
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
"""
    first = step(box, code)
    zygote = only_zygote(box)
    assert wait_until(lambda: children(zygote) != [])
    with caplog.at_level(logging.WARNING, logger="execution.sandbox.warm_pool"):
        second = step(box, code)
    assert second.status == Status.OK and len(second.result) == 2  # the zygote and itself
    assert only_zygote(box) != zygote
    assert "tasks in it while idle" in caplog.text
    assert first.status == Status.OK


def children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def test_a_module_that_allocates_and_frees_at_import_gets_no_more_memory_per_step(box):
    code = """
import zygote
HELD = [b"x" * (40 << 20)]  # allocated at import, freed once the jail is up
serve_one = zygote.serve_one
def free_then_serve(*args):
    HELD.clear()
    return serve_one(*args)
zygote.serve_one = free_then_serve
def main(mib):
    return len(b"y" * (mib << 20)) >> 20
"""
    assert step(box, code, 16).result == 16
    assert box.pool.jails() != []  # warm, not fresh
    over = step(box, code, 80)  # above the step's 64 MiB, below 64 + the import's 40
    assert over.status == Status.MEMORY_EXCEEDED
    assert over.error["message"] == "memory limit exceeded (64 MiB)"


def test_a_later_step_finds_no_earlier_payload_in_the_memory_it_inherits(box):
    code = r"""
import re
def main(x):
    if x != "scan":
        return "seen"
    pattern = re.compile(rb"PAYLOAD-MARKER-[0-9a-f]{32}")
    found = 0
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("rw"):
                continue
            start, end = (int(value, 16) for value in fields[0].split("-"))
            try:
                mem.seek(start)
                found += len(pattern.findall(mem.read(end - start)))
            except (OSError, OverflowError, ValueError):
                continue
    return found
"""
    for padding in (0, 10, 100, 1000, 10_000, 100_000):  # jobs of every allocator's size
        marker = "PAYLOAD-MARKER-" + secrets.token_hex(16)
        assert step(box, code, {"secret": marker, "padding": "p" * padding}).result == "seen"
    zygote = only_zygote(box)
    result = step(box, code, "scan")
    assert (result.status, result.result) == (Status.OK, 0), result.error
    assert only_zygote(box) == zygote  # the same jail served every step


def test_a_step_that_ends_its_zygote_is_a_sandbox_failure_and_the_next_gets_a_new_jail(box):
    code = """
import os, zygote
supervise = zygote.supervise
def supervise_then_maybe_die(*args):
    outcome = supervise(*args)
    if os.path.exists("/work/die"):
        os._exit(0)
    return outcome
zygote.supervise = supervise_then_maybe_die
def main(x):
    if x == "die":
        open("/work/die", "w").close()
    return x
"""
    assert step(box, code, "warm up").result == "warm up"
    zygote = only_zygote(box)
    failed = step(box, code, "die")
    assert failed.status == Status.SANDBOX_FAILURE
    assert failed.error["message"].startswith("the sandbox failed: ")
    assert box.pool.jails() == []
    after = step(box, code, "fine")
    assert (after.status, after.result) == (Status.OK, "fine")
    assert only_zygote(box) != zygote


@pytest.mark.parametrize(
    ("limit", "pause"), [({"max_steps": 2}, 0.0), ({"max_seconds": 0.5}, 0.6)], ids=["steps", "age"]
)
def test_a_jail_is_replaced_after_its_step_count_or_lifetime(make_box, limit, pause):
    box = make_box(**limit)
    code = "def main(x):\n    return x\n"
    step(box, code, 1)
    zygote = only_zygote(box)
    assert step(box, code, 2).result == 2  # its 2nd step, or its last before its end
    time.sleep(pause)
    assert step(box, code, 3).result == 3
    assert wait_until(lambda: zygote not in box.zygote_pids())  # stopped in the background
    assert len(box.zygote_pids()) == 1  # a new jail served step 3


def test_past_the_machines_cap_a_worker_evicts_its_own_idle_jail_or_runs_fresh(make_box):
    one, other = make_box(jails_per_machine=1), make_box(jails_per_machine=1)
    code = "def main(x):\n    return x\n"
    assert step(one, code, "a", tenant="a").result == "a"
    # The machine's one warm slot is held by another worker's jail: fresh, no jail.
    assert step(other, code, "b", tenant="b").result == "b"
    assert other.pool.jails() == []
    # Its own idle jail a worker gives up for the step that wants a new one.
    assert step(one, code, "c", tenant="c").result == "c"
    assert [key.tenant for key, _ in one.pool.jails()] == ["c"]


def test_warm_jails_hold_only_the_top_slots(config, make_box):
    box = make_box(jails_per_machine=3)
    assert list(box.slot_range) == [SLOTS - 1, SLOTS - 2, SLOTS - 3]


def test_a_step_that_finds_every_slot_taken_fails_after_the_wait_with_a_clear_error(config):
    small = SandboxConfig(
        uid_base=config.uid_base,
        slots=1,
        state_dir=config.state_dir / "one-slot",
        slot_wait_seconds=0.2,
    )
    small.state_dir.mkdir(mode=0o755)
    box = FreshSandbox(small)
    box.prepare()
    _, fd = box.slots.claim([0])  # another worker's jail, say
    try:
        result = step(box, "def main(x):\n    return x\n", 1)
    finally:
        os.close(fd)
    assert result.status == Status.BUSY  # the platform's capacity, not the tenant's fault
    assert result.error["message"] == "no sandbox slot came free within 0.2 s (all 1 were in use)"
    assert step(box, "def main(x):\n    return x\n", 2).result == 2


def test_slot_acquisition_gives_up_after_its_wait(tmp_path):
    slots = Slots(tmp_path / "slots", 1, wait_seconds=0.05)
    slots.prepare()
    with slots.acquire(), pytest.raises(NoSlotInTime, match=r"within 0\.05 s"), slots.acquire():
        pass
    with slots.acquire() as slot:
        assert slot == 0


def test_the_counters_read_a_cgroup_v2_job_and_a_v1_cpu_cpuacct_hierarchy(tmp_path):
    # This machine has cgroup v1 with cpuacct apart; the other layouts from files alike.
    v2 = Layout(2, tmp_path / "v2")
    job = JobCgroup(v2, v2.root / PARENT / "job-1-warm0")
    job.path.mkdir(parents=True)
    (job.path / "pids.current").write_text("1\n")
    (job.path / "cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n")
    counters = JailCounters(v2, job, zygote_pid=4321)
    assert (counters.tasks(), counters.cpu_ns()) == (1, 2_500_000)
    counters.close()

    v1 = Layout(1, tmp_path / "v1")
    for hierarchy in ("memory", "pids", "cpu"):
        (v1.root / hierarchy / PARENT).mkdir(parents=True)
    (v1.root / "cpu" / "cpuacct.usage").write_text("0\n")  # cpu,cpuacct mounted together
    for hierarchy, name, value in (
        ("pids", "pids.current", "3\n"),
        ("cpu", "cpuacct.usage", "7\n"),
    ):
        group = v1.root / hierarchy / PARENT / "NSJAIL.4321"
        group.mkdir()
        (group / name).write_text(value)
    assert not v1.own_cpuacct()
    counters = JailCounters(v1, JobCgroup(v1, v1.root / "memory" / PARENT / "job-1"), 4321)
    assert (counters.tasks(), counters.cpu_ns()) == (3, 7)
    counters.close()


def jail_of(box, tenant: str):
    (jail,) = [jail for key, jail in box.pool.jails() if key.tenant == tenant]
    return jail


def test_the_spare_jail_is_bound_to_the_next_miss_and_runs_that_tenants_code_alone(make_box):
    box = make_box(spare_jail=True)
    assert step(box, "def main(x):\n    return 'a'\n", tenant="a").result == "a"
    assert wait_until(lambda: box.spare.jail() is not None)  # launched after a's start
    spare = box.spare.jail()
    assert spare.waiting() and not spare.alive  # no tenant's code in it yet
    zygote = spare.zygote_pid()
    assert step(box, "def main(x):\n    return 'b'\n", tenant="b").result == "b"
    assert jail_of(box, "b") is spare and spare.zygote_pid() == zygote
    assert jail_of(box, "a") is not spare
    assert wait_until(lambda: box.spare.jail() not in (None, spare))  # the next one
    assert step(box, "def main(x):\n    return 'a2'\n", tenant="a").result == "a2"


def test_a_spare_left_waiting_past_the_idle_time_is_stopped_by_its_timer(make_box):
    box = make_box(spare_jail=True, idle_seconds=1.0)
    expired = metrics.WARM_SPARE_ENDS.labels("expired")
    before = expired._value.get()
    assert step(box, "def main(x):\n    return 1\n", tenant="a").result == 1
    assert wait_until(lambda: box.spare.jail() is not None)
    zygote = box.spare.jail().zygote_pid()
    assert metrics.WARM_SPARES._value.get() == 1
    # No miss comes: the spare goes by itself, its processes with it.
    assert wait_until(lambda: box.spare.jail() is None)
    assert wait_until(lambda: not Path(f"/proc/{zygote}").exists())
    assert expired._value.get() == before + 1
    assert metrics.WARM_SPARES._value.get() == 0


def test_a_spare_with_other_limits_or_a_dead_zygote_is_not_used(make_box):
    box = make_box(spare_jail=True)
    assert step(box, "def main(x):\n    return 1\n", tenant="a").result == 1
    assert wait_until(lambda: box.spare.jail() is not None)
    spare = box.spare.jail()
    assert step(box, "def main(x):\n    return 2\n", tenant="b", pids=16).result == 2
    assert jail_of(box, "b") is not spare
    assert wait_until(lambda: box.spare.jail() not in (None, spare))  # with b's limits
    spare = box.spare.jail()
    os.kill(spare.zygote_pid(), signal.SIGKILL)
    assert wait_until(lambda: not spare.waiting())
    assert step(box, "def main(x):\n    return 3\n", tenant="c", pids=16).result == 3
    assert jail_of(box, "c") is not spare


def test_a_spare_that_does_not_fit_gives_its_slot_to_the_jail_started_instead(make_box):
    box = make_box(jails_per_machine=2, spare_jail=True)
    code = "def main(x):\n    return x\n"
    assert step(box, code, "a", tenant="a").result == "a"
    assert wait_until(lambda: box.spare.jail() is not None)  # the machine's 2 slots held
    spare = box.spare.jail()
    assert step(box, code, "b", tenant="b", pids=16).result == "b"  # other limits
    assert sorted(key.tenant for key, _ in box.pool.jails()) == ["a", "b"]  # b warm
    assert jail_of(box, "b") is not spare
