"""Spawn nsjail (or, for benchmarks, a plain interpreter), feed its stdin, read its pipes
with caps, stop it, reap it.

Every pipe end is close-on-exec, and nsjail gets its fds through posix_spawn's dup2,
so concurrent runs in other threads never inherit each other's pipes.
"""

import contextlib
import fcntl
import os
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from execution.sandbox import network
from execution.sandbox.jail import LOG_FD, RESULT_FD

CHUNK = 64 * 1024
LOG_CAP = 256 * 1024
CONFIG_FD = 5
HIGH_FD = 10  # keep sources of dup2 clear of the target numbers 0..5
# The pipes on a jail's fds, named as a JailRun's captures.
JAIL_FDS = {0: "stdin", 1: "stdout", 2: "stderr", RESULT_FD: "result", LOG_FD: "log"}


@dataclass
class Capture:
    cap: int
    data: bytearray = field(default_factory=bytearray)
    overflowed: bool = False

    def add(self, chunk: bytes) -> bool:
        """Keep at most cap bytes; True when this chunk went over the cap."""
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.data += chunk[: max(room, 0)]
            first = not self.overflowed
            self.overflowed = True
            return first
        self.data += chunk
        return False


@dataclass
class JailRun:
    returncode: int | None = None  # nsjail's exit status (128 + signal when killed)
    stdout: Capture | None = None
    stderr: Capture | None = None
    result: Capture | None = None
    log: Capture | None = None
    over_cap: str | None = None  # "stdout", "stderr" or "result": the host killed the jail
    deadline_hit: bool = False  # the host stopped the jail at the wall limit
    cpu_seconds: float = 0.0
    maxrss_bytes: int = 0
    wall_seconds: float = 0.0


def _high(fd: int) -> int:
    """A close-on-exec duplicate at HIGH_FD or above; closes the original."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
    os.close(fd)
    return high


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()  # both close-on-exec
    return _high(r), _high(w)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def run(
    nsjail: str,
    config_text: str,
    stdin_data: bytes,
    *,
    output_cap: int,
    result_cap: int,
    wall_seconds: float,
    kill_grace: float,
    kill_all: Callable[[], None],
    on_result: Callable[[bytearray], None] | None = None,
    netns: Path | None = None,
) -> JailRun:
    """Run nsjail once; raises OSError only when it cannot be started at all.

    `on_result` sees the result channel's bytes so far each time more arrive. With
    `netns`, nsjail starts in that network namespace (a network-on jail's slot).
    """
    out = JailRun(
        stdout=Capture(output_cap),
        stderr=Capture(output_cap),
        result=Capture(result_cap),
        log=Capture(LOG_CAP),
    )
    owned: list[int] = []
    try:
        config_fd = _high(os.memfd_create("nsjail.cfg"))
        owned.append(config_fd)
        os.write(config_fd, config_text.encode())
        argv = [nsjail, "--config", f"/proc/self/fd/{CONFIG_FD}"]
        started = time.monotonic()
        with network.inside(netns):
            child = spawn(argv, out, JAIL_FDS, owned, extra={CONFIG_FD: config_fd})
        stopper = Stopper(child.pid, started + wall_seconds, kill_grace, kill_all)
        pump(child, stdin_data, out, stopper, on_result, owned)
        reap(child.pid, out, started)
        return out
    finally:
        for fd in owned:
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass
class Child:
    pid: int
    stdin_fd: int  # our end of its stdin
    readers: dict[int, tuple[str, Capture]]  # our read ends: (the JailRun field, its capture)


def spawn(
    argv: list[str], out: JailRun, fds: dict[int, str], owned: list[int], extra: dict[int, int]
) -> Child:
    """posix_spawn `argv` in a session of its own, with a new pipe on each of its fds in
    `fds` ("stdin" the one it reads, the others named as `out`'s captures) and the fds
    in `extra` on theirs. Our ends go into `owned`; the child's ends are closed here, so
    EOF on ours means the child (and all it started) exited."""
    pipes = {name: _pipe() for name in fds.values()}
    owned += [fd for pair in pipes.values() for fd in pair]
    theirs = {target: pipes[name][0 if name == "stdin" else 1] for target, name in fds.items()}
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in {**theirs, **extra}.items()]
    pid = os.posix_spawn(
        argv[0],
        argv,
        {},  # the child starts with an empty environment
        file_actions=actions,
        setsid=True,
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # Python ignores these; exec keeps it
    )
    for fd in [*theirs.values(), *extra.values()]:
        os.close(fd)
        owned.remove(fd)
    readers = {
        pipes[name][0]: (name, getattr(out, name)) for name in fds.values() if name != "stdin"
    }
    return Child(pid, pipes["stdin"][1], readers)


def reap(pid: int, out: JailRun, started: float) -> None:
    """Wait for the process and record its exit status (128 + signal), time and usage."""
    _, status, rusage = os.wait4(pid, 0)
    out.wall_seconds = time.monotonic() - started
    out.returncode = os.waitstatus_to_exitcode(status)
    if out.returncode < 0:
        out.returncode = 128 - out.returncode
    out.cpu_seconds = rusage.ru_utime + rusage.ru_stime
    out.maxrss_bytes = rusage.ru_maxrss * 1024


class Stopper:
    """When the host stops a run: SIGTERM at the deadline or a cap (nsjail then kills the
    jail and removes its cgroups), SIGKILL and kill_all every kill_grace after that."""

    def __init__(
        self, pid: int, deadline: float, kill_grace: float, kill_all: Callable[[], None]
    ) -> None:
        self.pid = pid
        self.deadline = deadline
        self.kill_grace = kill_grace
        self.kill_all = kill_all
        self.term_at: float | None = None
        self.kill_at: float | None = None

    def stop(self) -> None:
        if self.term_at is None:
            self.term_at = time.monotonic()

    def tick(self, out: JailRun) -> float:
        """Send what is due now; how long until something may be due next."""
        now = time.monotonic()
        if self.term_at is None and now >= self.deadline:
            out.deadline_hit = True
            self.term_at = now
        if self.term_at is not None and self.kill_at is None:
            _signal(self.pid, signal.SIGTERM)
            self.kill_at = now + self.kill_grace
        if self.kill_at is not None and now >= self.kill_at:
            _signal(self.pid, signal.SIGKILL)
            self.kill_all()
            self.kill_at = now + self.kill_grace  # and again, should anything linger
        return max((self.kill_at if self.kill_at is not None else self.deadline) - now, 0.0)


def pump(
    child: Child,
    stdin_data: bytes,
    out: JailRun,
    stopper: Stopper,
    on_result: Callable[[bytearray], None] | None,
    owned: list[int],
) -> None:
    """Move bytes until every read pipe hits EOF, stopping the child on a cap or the deadline."""
    stdin_fd, readers = child.stdin_fd, child.readers
    pending = memoryview(stdin_data)
    os.set_blocking(stdin_fd, False)
    with selectors.DefaultSelector() as sel:
        for fd in readers:
            sel.register(fd, selectors.EVENT_READ)
        if pending:
            sel.register(stdin_fd, selectors.EVENT_WRITE)
        else:
            _close_owned(stdin_fd, owned)
        while sel.get_map():
            for key, _ in sel.select(stopper.tick(out)):
                if key.fd == stdin_fd:
                    pending = _feed(stdin_fd, pending)
                    if not pending:
                        sel.unregister(stdin_fd)
                        _close_owned(stdin_fd, owned)
                    continue
                chunk = os.read(key.fd, CHUNK)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                name, capture = readers[key.fd]
                if capture.add(chunk) and name != "log" and out.over_cap is None:
                    out.over_cap = name
                    stopper.stop()
                if name == "result" and on_result is not None:
                    on_result(capture.data)
    if stdin_fd in owned:
        _close_owned(stdin_fd, owned)


def _feed(fd: int, pending: memoryview) -> memoryview:
    """Write what the pipe takes now; what is left (nothing once the child stops reading)."""
    try:
        return pending[os.write(fd, pending[:CHUNK]) :]
    except BlockingIOError:
        return pending
    except OSError:  # the jail closed stdin or died: stop feeding it
        return pending[:0]


def _close_owned(fd: int, owned: list[int]) -> None:
    os.close(fd)
    owned.remove(fd)
