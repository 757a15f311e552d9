"""cgroup v1 and v2: find the layout, make a per-job memory cgroup, read it, sweep leftovers.

nsjail makes ``NSJAIL.<pid>`` cgroups under a parent and removes them when it exits, so
their counters are gone by the time the host looks. The host therefore makes one cgroup
per job and hands it to nsjail as the memory parent: the job cgroup carries the memory
limit (nsjail's own is a little higher), so an OOM shows in the job cgroup's counters,
which outlive nsjail until the host removes them.

A warm jail's tasks and CPU time (JailCounters) and its memory limit hits and OOM kills
(MemoryCounters) are read here too: from cgroups, which nothing inside the jail can
change, never from what its zygote says.
"""

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from execution.sandbox.config import SandboxSetupError
from lib.processes import pid_alive

PARENT = "NSJAIL"
V1_CONTROLLERS = ("memory", "pids", "cpu")
CPUACCT = "cpuacct"  # v1: CPU time, its own hierarchy or mounted with cpu
V2_CONTROLLERS = ("memory", "pids", "cpu")
NSJAIL_MARGIN_BYTES = 16 * 2**20  # nsjail's limit sits above the job cgroup's


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    return _keyed(_read(path) or "")


def _keyed(text: str) -> dict[str, int]:
    """A flat-keyed cgroup file ("key value" lines); a line that is not one is skipped."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise SandboxSetupError(f"cannot write {value!r} to {path}: {exc}") from exc


@dataclass(frozen=True)
class JobUsage:
    oom: bool  # the job hit its memory limit and something was killed or refused
    peak_memory_bytes: int | None


@dataclass(frozen=True)
class Layout:
    """Where the cgroups are: v1 (one hierarchy per controller) or v2 (unified)."""

    version: int
    root: Path  # v1: the directory holding memory/, pids/, cpu/; v2: the cgroup2 mount

    @classmethod
    def detect(cls, root: str | Path) -> "Layout":
        root = Path(root)
        if (root / "cgroup.controllers").is_file():
            return cls(2, root)
        if all((root / ctrl / "cgroup.procs").is_file() for ctrl in V1_CONTROLLERS):
            return cls(1, root)
        unified = root / "unified"
        controllers = (_read(unified / "cgroup.controllers") or "").split()
        if all(ctrl in controllers for ctrl in V2_CONTROLLERS):
            return cls(2, unified)
        raise SandboxSetupError(
            f"no usable cgroups under {root}: need v1 memory, pids and cpu hierarchies "
            "or a cgroup2 mount with those controllers"
        )

    def parents(self) -> list[Path]:
        if self.version == 1:
            cpuacct = [self.root / CPUACCT / PARENT] if self.own_cpuacct() else []
            return [self.root / ctrl / PARENT for ctrl in V1_CONTROLLERS] + cpuacct
        return [self.root / PARENT]

    def own_cpuacct(self) -> bool:
        """v1 with cpuacct a hierarchy of its own, where nsjail makes no group: the host does."""
        return (
            self.version == 1
            and (self.root / CPUACCT / "cpuacct.usage").is_file()
            and not (self.root / "cpu" / "cpuacct.usage").is_file()
        )

    def prepare(self) -> None:
        """Create the parents nsjail needs (without them it exits 255), and the host's own
        cpuacct parent for warm jails on v1; idempotent."""
        try:
            for parent in self.parents():
                parent.mkdir(exist_ok=True)
        except OSError as exc:
            raise SandboxSetupError(f"cannot create sandbox cgroups: {exc}") from exc
        if self.version == 2:
            enable = " ".join(f"+{ctrl}" for ctrl in V2_CONTROLLERS)
            _write(self.root / "cgroup.subtree_control", enable)
            _write(self.root / PARENT / "cgroup.subtree_control", enable)

    def wait_for_moves_early(self) -> None:
        """Call just before spawning nsjail: makes the kernel's wait before nsjail's first
        cgroup move start now, on a thread of its own, and overlap nsjail's own start.

        A move between cgroups (a pid written to a v1 ``tasks`` file) takes the kernel's
        cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period first
        (8-20 ms here) unless a move ran within about one grace period; moves that come
        during the wait end with it. nsjail makes its first move some 10 ms after its
        exec (linking, reading its config), then waited the whole grace period: the
        jail's start stood still. This thread moves itself into the pids cgroup it is in
        already (nothing changes for it), so the wait runs while nsjail starts. Only on
        v1 (the layout measured); any error is ignored, as nsjail's moves work without.
        """
        if self.version == 1:
            threading.Thread(target=move_self, args=(self.root,), daemon=True).start()

    def job_path(self, name: str) -> Path:
        if self.version == 1:
            return self.root / "memory" / PARENT / name
        return self.root / PARENT / name

    def create_job(self, name: str, memory_bytes: int) -> "JobCgroup":
        path = self.job_path(name)
        try:
            path.mkdir()
        except OSError as exc:
            raise SandboxSetupError(f"cannot create the job cgroup {path}: {exc}") from exc
        job = JobCgroup(self, path)
        try:
            job.limit(memory_bytes)
        except SandboxSetupError:
            job.remove()
            raise
        return job

    def sweep(self, is_alive=None) -> int:
        """Remove job and NSJAIL.<pid> cgroups whose owner is gone; returns how many."""
        is_alive = is_alive or pid_alive
        removed = 0
        for parent in self.parents():
            for child in _subdirs(parent):
                owner = _owner_pid(child.name)
                if owner is not None and is_alive(owner):
                    continue
                removed += _remove_tree(child)
        return removed


class JobCgroup:
    """One job's memory cgroup; nsjail puts its NSJAIL.<pid> under it."""

    def __init__(self, layout: Layout, path: Path) -> None:
        self.layout = layout
        self.path = path

    @property
    def nsjail_memory_max(self) -> int:
        return self._limit + NSJAIL_MARGIN_BYTES

    def limit(self, memory_bytes: int) -> None:
        self._limit = memory_bytes
        if self.layout.version == 1:
            _write(self.path / "memory.limit_in_bytes", str(memory_bytes))
            # memory+swap gets a little room above memory: the memory counter must be the
            # one that fails, as only its failcnt is kept (memsw's is not, on new kernels).
            if (self.path / "memory.memsw.limit_in_bytes").exists():
                memsw = memory_bytes + NSJAIL_MARGIN_BYTES // 2
                _write(self.path / "memory.memsw.limit_in_bytes", str(memsw))
            with contextlib.suppress(SandboxSetupError):
                _write(self.path / "memory.swappiness", "0")
        else:
            _write(self.path / "memory.max", str(memory_bytes))
            if (self.path / "memory.swap.max").exists():
                _write(self.path / "memory.swap.max", "0")
            enable = " ".join(f"+{ctrl}" for ctrl in V2_CONTROLLERS)
            _write(self.path / "cgroup.subtree_control", enable)

    def usage(self) -> JobUsage:
        if self.layout.version == 1:
            failcnt = _read_int(self.path / "memory.failcnt") or 0
            oom_kill = _read_keyed(self.path / "memory.oom_control").get("oom_kill", 0)
            peak = _read_int(self.path / "memory.max_usage_in_bytes")
            at_limit = peak is not None and peak >= self._limit
            return JobUsage(bool(failcnt or oom_kill or at_limit), peak)
        events = _read_keyed(self.path / "memory.events")
        peak = _read_int(self.path / "memory.peak")
        return JobUsage(bool(events.get("oom_kill") or events.get("max")), peak)

    def memory_bytes(self) -> int:
        """What the cgroup's tasks use now."""
        name = "memory.usage_in_bytes" if self.layout.version == 1 else "memory.current"
        return int((self.path / name).read_text())

    def kill_all(self) -> None:
        """SIGKILL whatever is still inside (after nsjail itself was SIGKILLed)."""
        for path in [self.path, *_subdirs(self.path)]:
            for line in (_read(path / "cgroup.procs") or "").split():
                with contextlib.suppress(ValueError, OSError):
                    os.kill(int(line), signal.SIGKILL)

    def remove(self) -> None:
        _remove_tree(self.path)


def move_self(root: Path) -> bool:
    """Write this thread's id into the v1 pids cgroup it is in (see wait_for_moves_early);
    False when it could not."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/thread-self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "pids" in controllers.split(","):
                tasks = root / "pids" / path.lstrip("/") / "tasks"
                tasks.write_text(str(threading.get_native_id()))
                return True
    return False


def own_cpu_group(layout: Layout, job: JobCgroup) -> Path | None:
    """v1 with cpuacct a hierarchy of its own: the group the host makes there for a warm
    jail (nsjail makes none); None on other layouts."""
    return layout.root / CPUACCT / PARENT / job.path.name if layout.own_cpuacct() else None


def join_cpu_group(group: Path, pid: int) -> None:
    """Make `group` if need be and move `pid` into it, unless it is there already.

    A move into a v1 cgroup waits for an RCU grace period (some 10 ms, more under load)
    unless another move ran a moment before: WarmJail makes it at the zygote's "started"
    frame, soon after nsjail's own moves, and JailCounters then finds the zygote there.
    """
    try:
        group.mkdir(exist_ok=True)
    except OSError as exc:
        raise SandboxSetupError(f"cannot create {group}: {exc}") from exc
    if str(pid) not in (_read(group / "cgroup.procs") or "").split():
        _write(group / "cgroup.procs", str(pid))


class JailCounters:
    """A warm jail's task count and CPU time, from cgroups the jail cannot touch.

    v2: the job cgroup's pids.current and cpu.stat cover nsjail's group under it. v1:
    nsjail's pids group, and a cpuacct group the host makes and moves the zygote into (or
    nsjail's cpu group when cpu and cpuacct share a hierarchy). Files stay open: a pread
    is a few microseconds.
    """

    def __init__(self, layout: Layout, job: JobCgroup, zygote_pid: int) -> None:
        self.version = layout.version
        self.cpu_group: Path | None = None
        self.fds: list[int] = []
        try:
            self._open(layout, job, zygote_pid)
        except BaseException:
            self.close()
            raise

    def _open(self, layout: Layout, job: JobCgroup, zygote_pid: int) -> None:
        if layout.version == 2:
            pids, cpu = job.path / "pids.current", job.path / "cpu.stat"
        else:
            nsjail_group = f"{PARENT}.{zygote_pid}"  # nsjail names it after the jailed pid
            pids = layout.root / "pids" / PARENT / nsjail_group / "pids.current"
            if (group := own_cpu_group(layout, job)) is not None:
                self.cpu_group = group
                # Only the zygote may be there yet; the caller checks the count after this.
                join_cpu_group(group, zygote_pid)
                cpu = self.cpu_group / "cpuacct.usage"
            elif (layout.root / "cpu" / "cpuacct.usage").is_file():
                cpu = layout.root / "cpu" / PARENT / nsjail_group / "cpuacct.usage"
            else:
                raise SandboxSetupError("no cpuacct cgroup hierarchy: warm jails cannot be watched")
        try:
            for path in (pids, cpu):
                self.fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            raise SandboxSetupError(f"cannot read the jail's cgroups: {exc}") from exc

    def tasks(self) -> int:
        """Threads of every process in the jail (the pids controller counts each)."""
        return int(os.pread(self.fds[0], 64, 0))

    def cpu_ns(self) -> int:
        text = os.pread(self.fds[1], 4096, 0)
        if self.version == 1:
            return int(text)
        first = text.split(b"\n", 1)[0]  # usage_usec N
        if not first.startswith(b"usage_usec "):
            raise ValueError(f"unexpected cpu.stat: {first[:40]!r}")
        return int(first.split()[1]) * 1000

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        if self.cpu_group is not None:
            _remove_tree(self.cpu_group)
            self.cpu_group = None


class MemoryCounters:
    """(limit hits, OOM kills) of a warm jail's memory cgroup; they only grow, so a step's
    own are the difference across it. The files stay open: a pread per step is cheap."""

    def __init__(self, job: JobCgroup) -> None:
        if job.layout.version == 1:
            names = ("memory.failcnt", "memory.oom_control")
        else:
            names = ("memory.events",)
        self.version = job.layout.version
        self.fds = [os.open(job.path / name, os.O_RDONLY | os.O_CLOEXEC) for name in names]

    def read(self) -> tuple[int, int]:
        texts = [os.pread(fd, 4096, 0).decode() for fd in self.fds]
        if self.version == 1:
            failcnt = texts[0].strip()
            return int(failcnt) if failcnt.isdigit() else 0, _keyed(texts[1]).get("oom_kill", 0)
        events = _keyed(texts[0])
        return events.get("max", 0), events.get("oom_kill", 0)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def remove_group(path: Path) -> None:
    """rmdir a cgroup the host made (and its children), killing stragglers."""
    _remove_tree(path)


def _subdirs(path: Path) -> list[Path]:
    """The cgroups under `path`: by the entries' type from the directory listing, not a
    stat of each of its files (some 30 in a v1 memory group: 0.2 ms of CPU a call)."""
    try:
        with os.scandir(path) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _owner_pid(name: str) -> int | None:
    """NSJAIL.<nsjail pid> or job-<worker pid>-<n>."""
    if name.startswith(f"{PARENT}."):
        digits = name.removeprefix(f"{PARENT}.")
    elif name.startswith("job-"):
        digits = name.split("-")[1]
    else:
        return None
    return int(digits) if digits.isdigit() else None


def _remove_tree(path: Path) -> int:
    """rmdir a cgroup and its children, deepest first, killing stragglers."""
    removed = 0
    for child in _subdirs(path):
        removed += _remove_tree(child)
    for attempt in range(50):
        try:
            path.rmdir()
            return removed + 1
        except FileNotFoundError:
            return removed
        except OSError:
            for line in (_read(path / "cgroup.procs") or "").split():
                with contextlib.suppress(ValueError, OSError):
                    os.kill(int(line), signal.SIGKILL)
            if attempt:
                time.sleep(0.01)
    return removed
