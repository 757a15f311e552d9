"""A warm jail's zygote: forks one fresh child per activation (stdlib only, Python 3.11+).

Started inside nsjail as ``python -I -S -B /runtime/boot.py --warm``; boot hands over its
own module, so each child answers its job with boot's code running as ``__main__``,
exactly as in a fresh jail. The zygote is the jail's pid 1: the kernel drops signals sent
to it from inside the jail, and it kills every other process in the jail after each step.

Control channel (fd 3, a unix stream socket to the host):
- host to zygote, a request: ``b"R"`` + struct ``>QIdd`` (activation id, job length,
  CPU seconds, wall seconds), carrying the write ends of the step's stdout, stderr and
  result pipes as SCM_RIGHTS (and, when the tenant has secrets, a fourth descriptor: a
  memfd holding them as JSON), then the job bytes; a cancel: ``b"C"`` + ``>Q`` (id).
- zygote to host: ``>I`` length + JSON: first ``{"started": true}`` (boot.py, before any
  import: the host moves the zygote into its cpuacct group meanwhile), then
  ``{"measure": true}`` once the runtime is loaded, before any tenant code runs (the host
  takes the memory baseline and answers ``b"G"``), then ``{"ready": true}``, then per
  request ``{"id", "exit_code", "signal", "timed_out", "cancelled", "retire",
  "cpu_seconds", "maxrss_bytes"}``; ``retire`` says the zygote could not clean up and is
  ending.
- Sticky execution (stepwell/_keep.py): ``b"K"`` is a request like ``b"R"`` whose child
  may stay alive after a completed do step. The child then sends its outcome as usual,
  closes its pipes and says ``b"P"`` on a socket of its own (fd 4); the zygote kills
  every other process in the jail, wipes the scratch dirs and answers the request with
  ``"kept": true`` (no exit code or signal; the CPU and memory of that step alone). The
  host then sends either ``b"N"`` + ``>QIdd`` (a new id, the length of a JSON document
  ``{"output", "now"}``, CPU and wall seconds) with three new pipes and the document, which
  the zygote hands to the child and supervises as a step of its own; or ``b"E"`` + ``>Q``
  (an id), which kills the child and is answered by a status with that id. A child that
  cannot be kept (threads left, processes that will not die, a bad word) is killed at its
  pause and reported as exited: its step is over and its outcome stands.
Anything unexpected on the channel ends the zygote; the host then replaces the jail.

The zygote never reads the secrets' descriptor: only the forked child does, so no value
ever lies in the zygote's heap, which outlives the step and is inherited by every later
child (SANDBOX.md).

The tenant module runs in this interpreter, so it can patch anything here: the host
trusts none of it, and decides from the jail's cgroups whether the jail is clean.
"""

# Every import here is paid by every jail start: signal's C core, as signal.py builds
# enums at import (stepwell/_capture.py); socket's C core, as socket.py imports enum and
# selectors and builds enums of every constant (some 5 ms of CPU a start); json_codec, as
# json imports re and more; and shutil only when a step left something to remove
# (wipe_scratch), as it imports bz2, lzma and fnmatch.
import _signal as signal
import _socket
import gc
import math
import os
import resource
import select
import struct
import sys
import time

from json_codec import dumps, loads
from stepwell import _keep

CONTROL_FD = 3
RESULT_FD = 3
REQUEST = struct.Struct(">QIdd")
CANCEL = struct.Struct(">Q")
GO = b"G"  # the host's answer to "measure": the baseline is taken, import the tenant
FRAME_LENGTH = struct.Struct(">I")
FD = struct.Struct("i")  # a descriptor in SCM_RIGHTS data, a C int
PIPES_PER_STEP = 3
MAX_FDS_PER_STEP = PIPES_PER_STEP + 1  # the pipes, and the secrets if the step has any
MAX_SECRETS_BYTES = 8 << 20
SCRATCH_DIRS = ("/tmp", "/work", "/dev/shm")
WORK_DIR = "/work"
PR_SET_DUMPABLE = 4
KEEP_FD = 4  # a kept child's socket to the zygote (stepwell/_keep.py)
KILL_ROUNDS = 5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc/PID/stat counts CPU time in these
CHILD_FAILED = 70  # the child could not set itself up; the host reports a missing result
LEFT_THREADS = 71  # the tenant's module-level code left threads running in the zygote


class ChannelClosed(Exception):
    """The host closed the control channel, or broke its protocol: the zygote ends."""


_prctl = None


def libc_prctl():
    """libc's prctl(), through ctypes' C core alone: ctypes/__init__.py defines some
    forty types and functions at import (1.5-4 ms of CPU a start). These two classes are
    what it would use for `CDLL(None, use_errno=True).prctl`: a C int result, cdecl."""
    import _ctypes

    class Int(_ctypes._SimpleCData):
        _type_ = "i"  # as ctypes.c_int: a result of this type comes back as a Python int

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = Int

    class Program:  # CFuncPtr((name, library)) looks the name up in library._handle
        _handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)

    return Function(("prctl", Program))


def set_dumpable(flag):
    """Non-dumpable, the zygote's /proc/1/mem and /proc/1/fd are closed to its children."""
    global _prctl
    import _ctypes

    if _prctl is None:  # looked up once in the zygote, inherited by every child
        _prctl = libc_prctl()
    if _prctl(PR_SET_DUMPABLE, flag, 0, 0, 0) != 0:
        raise OSError(_ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def recv_exact(control, size):
    data = bytearray(size)
    recv_into_exact(control, data)
    return bytes(data)


def recv_into_exact(control, buffer):
    view = memoryview(buffer)
    while view:
        got = control.recv_into(view)
        if not got:
            raise ChannelClosed("the host closed the control channel")
        view = view[got:]


def recv_fds(sock, size, max_fds):
    """socket.recv_fds, on socket's C core: (data, the fds that came with it)."""
    data, ancillary, _, _ = sock.recvmsg(size, _socket.CMSG_LEN(max_fds * FD.size))
    fds = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            whole = len(payload) - len(payload) % FD.size
            fds += (fd for (fd,) in FD.iter_unpack(payload[:whole]))
    return data, fds


def send_fds(sock, data, fds):
    """socket.send_fds, on socket's C core."""
    rights = b"".join(FD.pack(fd) for fd in fds)
    sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])


def recv_kind(control):
    """One frame's type byte, and the fds sent with it (only a request or a next carries any)."""
    kind, fds = recv_fds(control, 1, MAX_FDS_PER_STEP)
    if not kind:
        raise ChannelClosed("the host closed the control channel")
    if (kind in (b"C", b"E") and fds) or kind not in (b"R", b"K", b"N", b"C", b"E"):
        for fd in fds:
            os.close(fd)
        raise ChannelClosed(f"unexpected frame {kind!r} on the control channel")
    return kind, fds


def send_frame(control, doc):
    data = dumps(doc).encode()
    control.sendall(FRAME_LENGTH.pack(len(data)) + data)


def kill_all_others():
    """SIGKILL and reap every process in the jail but the zygote (pid 1, spared by kill -1)."""
    while True:
        try:  # noqa: SIM105 - contextlib is not worth importing into every child
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def make_writable(top):
    """A step may leave directories it made unreadable; open them up before removal."""
    pending = [top]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    os.chmod(entry.path, 0o700)
                    pending.append(entry.path)


def wipe_scratch():
    """Empty /tmp, the work dir and /dev/shm; any failure ends the zygote (and the jail)."""
    for top in SCRATCH_DIRS:
        if not os.listdir(top):
            continue  # the usual case: the step left nothing
        import shutil  # only a step that left something pays for it, once per jail

        make_writable(top)
        with os.scandir(top) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        if os.listdir(top):
            raise RuntimeError(f"{top} is not empty after the wipe")


def read_secrets(fd):
    """The secrets' JSON from their memfd, read in the child alone."""
    chunks, size = [], 0
    while size <= MAX_SECRETS_BYTES:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise ValueError("the secrets are over their size limit")


def run_child(boot, preloaded, job, fds, cpu_seconds, keep=None):
    """In the forked child: a clean process for one step (more, if kept); never returns."""
    tenant, import_stdout, import_stderr = preloaded
    try:
        job_bytes = bytes(job)
        secrets_bytes = None
        if len(fds) > PIPES_PER_STEP:
            # Before the dup2s below, which may land on its number.
            secrets_bytes = read_secrets(fds[PIPES_PER_STEP])
            os.close(fds[PIPES_PER_STEP])
            fds = fds[:PIPES_PER_STEP]
        signal.signal(signal.SIGINT, signal.default_int_handler)
        set_dumpable(1)  # its own /proc files belong to it again
        # SIGXCPU at the limit says "CPU time" for sure; the hard limit a second later
        # still ends a step that ignores it.
        cpu = max(1, math.ceil(cpu_seconds))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        stdin = os.open("/dev/null", os.O_RDONLY)
        for target, fd in enumerate((stdin, *fds)):
            os.dup2(fd, target)
        first_free = RESULT_FD + 1
        if keep is not None:
            os.dup2(keep.fileno(), KEEP_FD)
            first_free = KEEP_FD + 1
            _keep.set_pause(pauser(boot, KEEP_FD))
        os.closerange(first_free, 1 << 20)  # the control channel and the zygote's fds
        os.chdir(WORK_DIR)
        # In a fresh jail each step prints what the module prints at import; so here.
        boot.write_all(1, import_stdout)
        boot.write_all(2, import_stderr)
        boot.main(job_bytes, tenant, secrets_bytes)
    except BaseException as exc:  # only the set-up can get here: boot.main() never returns
        os.write(2, f"the step could not be set up: {exc!r}\n".encode())
    finally:
        os._exit(CHILD_FAILED)


def pauser(boot, keep_fd):
    """A kept child's pause (stepwell/_keep.py): outcome out, pipes closed, then wait."""
    # Family and type given: from a bare fileno, socket() asks the kernel for them, and
    # its Python code costs a new child about 20 page copies more.
    keep = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, keep_fd)

    def pause(outcome):
        try:
            doc = boot.encode({"ok": True, "result": outcome})
            boot.flush_std_streams()
            for stream in (sys.__stdout__, sys.__stderr__):
                stream.flush()
            channel = boot.result_channel
            boot.write_all(channel, doc)
            # The host reads to EOF: every write end of this step's pipes must close.
            devnull = os.open("/dev/null", os.O_RDWR)
            for fd in (1, 2, channel):
                os.dup2(devnull, fd)
            os.close(devnull)
            keep.sendall(b"P")
            kind, fds = recv_fds(keep, 1, PIPES_PER_STEP)
            if kind != b"N" or len(fds) != PIPES_PER_STEP:
                os._exit(0)
            (length,) = FRAME_LENGTH.unpack(recv_exact(keep, FRAME_LENGTH.size))
            data = recv_exact(keep, length)
            for target, fd in zip((1, 2, channel), fds, strict=True):
                os.dup2(fd, target)
                os.close(fd)
            following = loads(data)
            return following["output"], following["now"]
        except BaseException:
            os._exit(0)  # the host ended it, or the channel broke: nothing more to say

    return pause


def hand_on(keep, payload, fds):
    """Give a paused child its next step's pipes and the recorded result it goes on with."""
    send_fds(keep, b"N", fds)
    keep.sendall(FRAME_LENGTH.pack(len(payload)) + payload)


def child_cpu_seconds(pid):
    """User and system CPU of a live child so far, from the kernel's /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def child_peak_rss(pid):
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def kill_all_but(pid):
    """SIGKILL every process in the jail but the zygote and `pid`; True once none is left
    (zombies included: the kept child reaps its own, and must be alone to be kept)."""
    for _ in range(KILL_ROUNDS):
        others = [
            int(name)
            for name in os.listdir("/proc")
            if name.isdigit() and int(name) not in (1, pid)
        ]
        if not others:
            return True
        for other in others:
            try:  # noqa: SIM105
                os.kill(other, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:  # orphans are the zygote's to reap
            try:
                reaped, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if reaped == 0:
                break
        time.sleep(0.001)
    return False


def after_pause(pid, keep):
    """After a child's socket woke the zygote: "kept" if it said it paused and may stay,
    alone and single-threaded; "over" if it paused but may not stay (its step is over
    all the same); None if it said nothing valid (it died, or tampered): then its exit
    status, whatever it is, is the step's."""
    try:
        keep.setblocking(False)
        word = keep.recv(16)
    except OSError:
        return None
    finally:
        keep.setblocking(True)
    if word != b"P":
        return None
    if not kill_all_but(pid):
        return "over"
    try:
        alone = len(os.listdir(f"/proc/{pid}/task")) == 1
    except OSError:
        return None
    return "kept" if alone else "over"


def supervise(control, request_id, pid, wall_seconds, keep=None):
    """Wait for the child until it exits, pauses (a kept child), the wall limit passes or
    the host cancels; returns (timed_out, cancelled, paused)."""
    deadline = time.monotonic() + wall_seconds
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(control, select.POLLIN)
    if keep is not None:
        poller.register(keep, select.POLLIN)
    timed_out = cancelled = paused = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready = [fd for fd, _ in poller.poll(math.ceil(remaining * 1000))]
            if pidfd in ready:
                break
            if keep is not None and keep.fileno() in ready:
                paused = True
                break
            if control.fileno() in ready:
                kind, _ = recv_kind(control)
                (cancel_id,) = CANCEL.unpack(recv_exact(control, CANCEL.size))
                if kind != b"C" or cancel_id != request_id:
                    raise ChannelClosed("a request arrived while a step was running")
                cancelled = True
                break
    finally:
        os.close(pidfd)
        if timed_out or cancelled:
            os.kill(pid, signal.SIGKILL)
    return timed_out, cancelled, paused


class Kept:
    """The child a step left paused, and its socket."""

    def __init__(self, pid, keep):
        self.pid = pid
        self.keep = keep


def serve_one(control, boot, preloaded, kept):
    """Answer one frame of the host's; returns the child kept paused after it, if any."""
    kind, fds = recv_kind(control)
    if kind == b"C":  # a cancel that crossed the status of a step already over
        recv_exact(control, CANCEL.size)
        return kept
    if kind == b"E":
        (end_id,) = CANCEL.unpack(recv_exact(control, CANCEL.size))
        if kept is None:
            raise ChannelClosed("an end without a kept child")
        os.kill(kept.pid, signal.SIGKILL)
        end_step(control, end_id, kept, 0.0, False, False, ended=True)
        return None
    if (kind == b"N") != (kept is not None):
        raise ChannelClosed("a next without a kept child, or a request beside one")
    keep = None
    try:
        request_id, job_length, cpu_seconds, wall_seconds = REQUEST.unpack(
            recv_exact(control, REQUEST.size)
        )
        wanted = (PIPES_PER_STEP,) if kind == b"N" else (PIPES_PER_STEP, MAX_FDS_PER_STEP)
        if len(fds) not in wanted:
            raise ChannelClosed("a request without its three pipes")
        # Straight from the socket into one buffer, zeroed once the child has its copy:
        # freed heap keeps its bytes, and every later child of this zygote inherits them.
        job = bytearray(job_length)
        recv_into_exact(control, job)
        if kind == b"N":
            pid, keep = kept.pid, kept.keep
            cpu_before = child_cpu_seconds(pid)
            try:
                hand_on(keep, job, fds)
            except OSError:
                os.kill(pid, signal.SIGKILL)  # gone or deaf: the step did not start
        else:
            cpu_before = 0.0
            pair = _socket.socketpair() if kind == b"K" else None
            pid = os.fork()
            if pid == 0:
                run_child(boot, preloaded, job, fds, cpu_seconds, pair and pair[1])
            if pair is not None:
                pair[1].close()
                keep = pair[0]
        job[:] = bytes(job_length)
        del job
    finally:
        for fd in fds:
            os.close(fd)  # the child holds the only copies: EOF means it and its kin are gone
    kept = Kept(pid, keep) if keep is not None else None
    timed_out, cancelled, paused = supervise(control, request_id, pid, wall_seconds, keep)
    pause = after_pause(pid, keep) if paused else None
    if pause == "kept":
        try:
            wipe_scratch()
        except Exception:
            os.kill(pid, signal.SIGKILL)
        else:
            send_frame(
                control,
                status_frame(
                    request_id,
                    None,
                    False,
                    False,
                    False,
                    child_cpu_seconds(pid) - cpu_before,
                    child_peak_rss(pid),
                    kept=True,
                ),
            )
            return kept
    if paused:
        os.kill(pid, signal.SIGKILL)  # over, or dead already, or a liar: it goes
    end_step(
        control,
        request_id,
        kept or Kept(pid, None),
        cpu_before,
        timed_out,
        cancelled,
        ended=pause is not None,  # it paused: its step is over, its outcome sent
    )
    return None


def end_step(control, request_id, child, cpu_before, timed_out, cancelled, *, ended):
    """Reap the step's child, clean the jail and report. `ended`: the zygote killed a child
    whose step was already over (paused), which then counts as a clean exit."""
    _, status, usage = os.wait4(child.pid, 0)
    if child.keep is not None:
        child.keep.close()
    kill_all_others()
    # Clean before the status, so a status always means "ready for the next step".
    try:
        wipe_scratch()
        retire = False
    except Exception:
        retire = True
    if ended:
        status = 0
    send_frame(
        control,
        status_frame(
            request_id,
            status,
            timed_out,
            cancelled,
            retire,
            max(0.0, usage.ru_utime + usage.ru_stime - cpu_before),
            usage.ru_maxrss * 1024,
        ),
    )
    if retire:
        raise ChannelClosed("the scratch dirs could not be wiped")


def status_frame(request_id, status, timed_out, cancelled, retire, cpu, maxrss, *, kept=False):
    """The zygote's report on one step; a kept child has neither exit code nor signal."""
    exited = status is not None and os.WIFEXITED(status)
    signalled = status is not None and os.WIFSIGNALED(status)
    return {
        "id": request_id,
        "exit_code": os.WEXITSTATUS(status) if exited else None,
        "signal": os.WTERMSIG(status) if signalled else None,
        "timed_out": timed_out,
        "cancelled": cancelled,
        "retire": retire,
        "cpu_seconds": cpu,
        "maxrss_bytes": maxrss,
        "kept": kept,
    }


def preload_runtime(boot):
    """Import what every step needs, and run its paths once; no tenant code yet.

    Not traceback, which only a failing step needs: with linecache, tokenize, re and
    enum it cost every jail start 4-8 ms of CPU; a failing step's child imports it."""
    from stepwell import _engine, _progress  # noqa: F401

    warm_up(boot)


def preload_tenant(boot):
    """Import the tenant module, keeping what the import printed.

    Returns (module, stdout bytes, stderr bytes); module None when the import fails, which
    each child then repeats, so every step reports it (and prints) as fresh mode would.
    """
    import io

    saved = sys.stdout, sys.stderr
    captured = io.StringIO(), io.StringIO()
    sys.stdout, sys.stderr = captured
    try:
        module = boot.load_tenant()
    except BaseException:
        sys.modules.pop("tenant", None)
        return None, b"", b""
    finally:
        sys.stdout, sys.stderr = saved
    out, err = (stream.getvalue().encode("utf-8", "surrogateescape") for stream in captured)
    return module, out, err


WARM_UP_RUNS = 10
WARM_UP_WORKFLOW = """
def run(event, step):
    first = step.do("first", lambda: {"n": 1})
    print("warming up")
    return step.do("second", lambda: [first["n"], event.payload])
"""


def warm_up(boot):
    """Run the runtime's own paths with a workflow of its own, never the tenant's code.

    Python 3.11 specialises bytecode as it runs it, writing into the code objects, and
    in a forked child every page written is a copy: warmed here once, a step's child
    copies about 40 fewer pages (about 0.15 ms a step). The runtime keeps no state
    between activations, and each child sets its own progress sink.
    """
    from stepwell import _progress

    module = type(sys)("stepwell_warm_up")
    exec(compile(WARM_UP_WORKFLOW, "<warm-up>", "exec"), module.__dict__)
    done = {"index": 0, "name": "first", "kind": "do", "status": "complete", "attempts": 1}
    activation = {
        "instance_id": "warm-up",
        "payload": {"x": 1},
        "timestamp": "2026-01-01T00:00:00+00:00",
        "now": "2026-01-01T00:00:00+00:00",
        "history": [{**done, "output": {"n": 1}, "error": None}],
        "limits": {"result_bytes": 65536, "log_bytes": 65536, "step_timeout_seconds": 30.0},
    }
    job = dumps({"mode": "workflow", "input": activation}).encode()
    _progress.set_sink(lambda note: None)
    try:
        for _ in range(WARM_UP_RUNS):
            boot.outcome(job, None, module)
    finally:
        _progress.set_sink(None)


def quiet_std_streams():
    """The zygote's own output has no reader once the jail is up; children get their own."""
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def serve(boot):
    # As pid 1 the zygote gets only the signals it handles, so it handles none.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    control = _socket.socket(fileno=CONTROL_FD)
    os.set_inheritable(CONTROL_FD, False)
    set_dumpable(0)
    os.chdir(WORK_DIR)
    preload_runtime(boot)
    gc.collect()
    # The host measures the jail's memory now, before the tenant's import: each step's
    # limit is that much above it, whatever the import allocates and frees.
    send_frame(control, {"measure": True})
    try:
        if recv_exact(control, len(GO)) != GO:
            os._exit(0)
    except ChannelClosed:
        os._exit(0)
    preloaded = preload_tenant(boot)
    set_dumpable(0)  # again: the tenant's module-level code ran in between
    if len(os.listdir("/proc/self/task")) != 1:
        # A thread the module started would run beside every step; such code runs fresh.
        os._exit(LEFT_THREADS)
    kill_all_others()
    wipe_scratch()
    sys.stdout.flush()
    sys.stderr.flush()
    quiet_std_streams()
    gc.collect()
    gc.freeze()  # keeps the collector from dirtying shared pages in every child
    send_frame(control, {"ready": True})
    kept = None
    try:
        while True:
            kept = serve_one(control, boot, preloaded, kept)
    except ChannelClosed:
        os._exit(0)
