"""One step in a warm jail: send the request, read the step's pipes, await the status.

The host makes the step's three pipes itself and passes only their write ends in, so it
reads stdout, stderr and the result with its own caps, one step's pipes carry nothing of
another's, and the progress notes survive a jail that dies mid-step.
"""

from __future__ import annotations

import array
import fcntl
import os
import secrets
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from execution.sandbox.outcome import JailExit
from execution.sandbox.process import CHUNK, Capture, JailRun
from execution.sandbox.warm_channel import cancel_frame, check_status, request_header, take_frame

if TYPE_CHECKING:
    from execution.sandbox.warm_jail import WarmJail

ZYGOTE_GRACE_SECONDS = 2.0  # how long past the wall limit (or a cancel) the zygote may take


@dataclass
class StepRun:
    """What the host saw of one activation in a warm jail."""

    run: JailRun
    exit: JailExit | None  # from the zygote's status; None when there was no valid one
    oom: bool  # the jail's memory cgroup killed or refused something during the step
    lost: str | None = None  # why the jail was lost during this step, if it was
    retire: bool = False  # the zygote could not clean up after the step, and is gone
    delivered: bool = True  # False: the jail was gone before the request reached it
    kept: bool = False  # the step's child is alive and paused, for the instance's next step


class WarmStep:
    """One step's request to the zygote: send it, read the step's pipes with caps, await its
    status."""

    def __init__(
        self,
        warm: WarmJail,
        job_bytes: bytes,
        on_result: Callable[[bytearray], None] | None = None,
        secrets_json: bytes | None = None,
        kind: bytes = b"R",
    ) -> None:
        """`kind`: b"R" a step, b"K" a step whose child may be kept, b"N" the next step of
        the kept child (`job_bytes` is then its {"output", "now"} document)."""
        self.warm = warm
        self.kind = kind
        self.on_result = on_result  # sees the result channel's bytes so far, as they come
        self.secrets_json = secrets_json
        self.limits = warm.limits
        self.job_bytes = job_bytes
        self.id = secrets.randbits(63)
        self.out = JailRun(
            stdout=Capture(self.limits.output_bytes),
            stderr=Capture(self.limits.output_bytes),
            result=Capture(self.limits.result_bytes),
            log=Capture(0),
        )
        self.exit: JailExit | None = None
        self.lost: str | None = None
        self.retire = False
        self.delivered = False
        self.kept = False

    def run(self) -> StepRun:
        warm = self.warm
        started = time.monotonic()
        before = warm.last_counts
        readers: dict[int, tuple[str, Capture]] = {}
        write_ends: list[int] = []
        try:
            for name in ("stdout", "stderr", "result"):
                read_end, write_end = os.pipe()
                readers[read_end] = (name, getattr(self.out, name))
                write_ends.append(write_end)
            self._send_request(write_ends)
            self.delivered = True
            # The zygote has its copies now: EOF on ours means the step and all it started
            # are gone.
            write_ends = self._closed(write_ends)
            self._pump(readers, started)
        except (OSError, ValueError) as exc:
            self.lost = self.lost or f"the control channel failed: {exc}"
        finally:
            self._closed([*write_ends, *readers])
        after = warm.last_counts = warm.counters.read()
        self.out.wall_seconds = time.monotonic() - started
        oom = after[0] > before[0] or after[1] > before[1]
        kept = self.kept and not (self.lost or oom or self.out.over_cap)
        return StepRun(self.out, self.exit, oom, self.lost, self.retire, self.delivered, kept)

    @staticmethod
    def _closed(fds: list[int]) -> list[int]:
        for fd in fds:
            os.close(fd)
        return []

    def _send_request(self, write_ends: list[int]) -> None:
        limits = self.limits
        header = request_header(
            self.id, len(self.job_bytes), limits.cpu_seconds, limits.wall_seconds, self.kind
        )
        secrets_fd = secrets_memfd(self.secrets_json) if self.secrets_json else None
        try:
            fds = array.array("i", [*write_ends, *([secrets_fd] if secrets_fd else [])])
            # MSG_NOSIGNAL: a dead zygote must be an EPIPE here, whatever SIGPIPE's
            # disposition.
            self.warm.control.sendmsg(
                [header], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)], socket.MSG_NOSIGNAL
            )
        finally:
            if secrets_fd is not None:
                os.close(secrets_fd)  # the zygote holds its copy until it forks

    def _pump(self, readers: dict[int, tuple[str, Capture]], started: float) -> None:
        warm, out = self.warm, self.out
        backstop = started + self.limits.wall_seconds + ZYGOTE_GRACE_SECONDS
        pending = memoryview(self.job_bytes)
        control = warm.control
        with selectors.DefaultSelector() as sel:
            for fd in readers:
                sel.register(fd, selectors.EVENT_READ)
            sel.register(control, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while readers or (self.exit is None and not self.lost):
                now = time.monotonic()
                if now >= backstop:
                    if self.exit is None and not self.lost:
                        # The zygote times the step and answers at its wall limit; silent
                        # past that, the zygote itself is broken: a sandbox failure.
                        self.lost = "its zygote did not answer in time"
                    else:
                        self.lost = self.lost or "the step's pipes stayed open after its end"
                    return
                for key, mask in sel.select(backstop - now):
                    if key.fd == control.fileno():
                        if mask & selectors.EVENT_WRITE:
                            pending = self._write_job(control, pending, sel)
                        if mask & selectors.EVENT_READ and not self._read_control(control, sel):
                            backstop = min(backstop, time.monotonic() + ZYGOTE_GRACE_SECONDS)
                        if self.exit is not None:
                            backstop = min(backstop, time.monotonic() + ZYGOTE_GRACE_SECONDS)
                        continue
                    chunk = os.read(key.fd, CHUNK)
                    if not chunk:
                        sel.unregister(key.fd)
                        del readers[key.fd]
                        os.close(key.fd)
                        continue
                    name, capture = readers[key.fd]
                    if capture.add(chunk) and out.over_cap is None:
                        out.over_cap = name
                        self._cancel(control)
                        backstop = min(backstop, time.monotonic() + ZYGOTE_GRACE_SECONDS)
                    if name == "result" and self.on_result is not None:
                        self.on_result(capture.data)

    def _write_job(self, control: socket.socket, pending: memoryview, sel) -> memoryview:
        try:
            sent = control.send(pending[:CHUNK], socket.MSG_NOSIGNAL)
        except BlockingIOError:
            return pending
        pending = pending[sent:]
        if not pending:
            sel.modify(control, selectors.EVENT_READ)
        return pending

    def _read_control(self, control: socket.socket, sel) -> bool:
        """Take in control bytes; False once the channel closed (the zygote is gone)."""
        data = control.recv(CHUNK)
        if not data:
            sel.unregister(control)
            if self.exit is None:
                self.lost = "the warm jail died during the step"
            return False
        self.warm.inbox += data
        frame = take_frame(self.warm.inbox)
        if frame is not None:
            if self.exit is not None or self.warm.inbox:
                raise ValueError("the zygote sent more than one status")
            self.exit = check_status(frame, self.id)
            self.out.cpu_seconds = float(frame["cpu_seconds"])
            self.out.maxrss_bytes = int(frame["maxrss_bytes"])
            self.out.deadline_hit = frame["timed_out"]
            self.retire = frame["retire"]
            self.kept = frame["kept"]
        return True

    def _cancel(self, control: socket.socket) -> None:
        try:
            control.sendall(cancel_frame(self.id), socket.MSG_NOSIGNAL)
        except OSError as exc:
            self.lost = f"the cancel could not be sent: {exc}"


def secrets_memfd(data: bytes) -> int:
    """A memory file holding `data` (the secrets' JSON), read from its start: the step's
    child reads it through the descriptor the zygote passes on unread. Sealed, so nothing
    in the jail can change what the host wrote; it is in no file system, and goes with
    its last descriptor."""
    fd = os.memfd_create("stepwell-secrets", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except BaseException:
        os.close(fd)
        raise
    return fd
