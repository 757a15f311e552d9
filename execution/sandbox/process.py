"""Spawn nsjail, feed its stdin, read its pipes with caps, stop it, reap it.

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
        pipes = {name: _pipe() for name in ("stdin", "stdout", "stderr", "result", "log")}
        owned += [fd for pair in pipes.values() for fd in pair]
        config_fd = _high(os.memfd_create("nsjail.cfg"))
        owned.append(config_fd)
        os.write(config_fd, config_text.encode())
        actions = [
            (os.POSIX_SPAWN_DUP2, pipes["stdin"][0], 0),
            (os.POSIX_SPAWN_DUP2, pipes["stdout"][1], 1),
            (os.POSIX_SPAWN_DUP2, pipes["stderr"][1], 2),
            (os.POSIX_SPAWN_DUP2, pipes["result"][1], RESULT_FD),
            (os.POSIX_SPAWN_DUP2, pipes["log"][1], LOG_FD),
            (os.POSIX_SPAWN_DUP2, config_fd, CONFIG_FD),
        ]
        argv = [nsjail, "--config", f"/proc/self/fd/{CONFIG_FD}"]
        started = time.monotonic()
        with network.inside(netns):
            pid = os.posix_spawn(
                nsjail,
                argv,
                {},  # nsjail itself starts with an empty environment
                file_actions=actions,
                setsid=True,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # Python ignores these; exec keeps it
            )
        # The child has its copies; close ours so EOF means nsjail (and the jail) exited.
        for fd in (pipes["stdin"][0], config_fd, *(pipes[n][1] for n in pipes if n != "stdin")):
            os.close(fd)
            owned.remove(fd)
        readers = {
            pipes["stdout"][0]: ("stdout", out.stdout),
            pipes["stderr"][0]: ("stderr", out.stderr),
            pipes["result"][0]: ("result", out.result),
            pipes["log"][0]: ("log", out.log),
        }
        _pump(
            pid,
            pipes["stdin"][1],
            stdin_data,
            readers,
            on_result,
            out,
            started,
            wall_seconds,
            kill_grace,
            kill_all,
            owned,
        )
        reap(pid, out, started)
        return out
    finally:
        for fd in owned:
            with contextlib.suppress(OSError):
                os.close(fd)


def reap(pid: int, out: JailRun, started: float) -> None:
    """Wait for the process and record its exit status (128 + signal), time and usage."""
    _, status, rusage = os.wait4(pid, 0)
    out.wall_seconds = time.monotonic() - started
    out.returncode = os.waitstatus_to_exitcode(status)
    if out.returncode < 0:
        out.returncode = 128 - out.returncode
    out.cpu_seconds = rusage.ru_utime + rusage.ru_stime
    out.maxrss_bytes = rusage.ru_maxrss * 1024


def _pump(
    pid,
    stdin_fd,
    stdin_data,
    readers,
    on_result,
    out,
    started,
    wall_seconds,
    kill_grace,
    kill_all,
    owned,
) -> None:
    """Move bytes until every read pipe hits EOF, stopping nsjail on a cap or the deadline."""
    deadline = started + wall_seconds
    term_at = kill_at = None
    pending = memoryview(stdin_data)
    os.set_blocking(stdin_fd, False)
    with selectors.DefaultSelector() as sel:
        for fd in readers:
            sel.register(fd, selectors.EVENT_READ)
        if pending:
            sel.register(stdin_fd, selectors.EVENT_WRITE)
        else:
            os.close(stdin_fd)
            owned.remove(stdin_fd)
        while sel.get_map():
            now = time.monotonic()
            if term_at is None and now >= deadline:
                out.deadline_hit = True
                term_at = now
            if term_at is not None and kill_at is None:
                _signal(pid, signal.SIGTERM)  # nsjail kills the jail and removes its cgroups
                kill_at = now + kill_grace
            if kill_at is not None and now >= kill_at:
                _signal(pid, signal.SIGKILL)
                kill_all()
                kill_at = now + kill_grace  # and again, should anything linger
            timeout = (kill_at if kill_at is not None else deadline) - now
            for key, _ in sel.select(max(timeout, 0.0)):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        written = os.write(fd, pending[:CHUNK])
                        pending = pending[written:]
                    except BlockingIOError:
                        continue
                    except OSError:  # the jail closed stdin or died: stop feeding it
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        os.close(fd)
                        owned.remove(fd)
                    continue
                chunk = os.read(fd, CHUNK)
                if not chunk:
                    sel.unregister(fd)
                    continue
                name, capture = readers[fd]
                if capture.add(chunk) and name != "log" and out.over_cap is None:
                    out.over_cap = name
                    term_at = time.monotonic()
                if name == "result" and on_result is not None:
                    on_result(capture.data)
    if stdin_fd in owned:
        os.close(stdin_fd)
        owned.remove(stdin_fd)
