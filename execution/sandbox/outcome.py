"""Turn what the host saw of one jail run into a SandboxResult.

The exit code alone cannot tell a timeout from an OOM (both are SIGKILL, 137), so the
order is: what the host did (cap, deadline), nsjail's log, the job cgroup's memory
counters, the signal, and only then the result channel.
"""

import math
import re
import signal
from dataclasses import dataclass

from execution.sandbox.limits import Limits, describe_bytes, describe_seconds
from execution.sandbox.process import JailRun
from execution.sandbox.protocol import ProtocolError, parse_result, split_channel
from execution.sandbox.result import SandboxResult, Status

CPU_KILL_FRACTION = 0.5  # rusage of a killed jail reads short of the limit on a busy host
# The runtime ends a step whose printed output passed its cap with this exit code
# (runtime/stepwell/_capture.py); the zygote's own codes are 70 and 71.
OUTPUT_CAP_EXIT = 72
LOG_TAIL_CHARS = 16 * 1024  # plenty for the last lines of a sandbox that failed to start
MAX_STATUS_DIGITS = 9  # exit codes and signal numbers are small; a longer number is noise
_PID = re.compile(r"pid=\d+ \(")
# The dynamic loader's complaints about nsjail's libnl builds share the jail's stderr.
_LOADER_MARK = b"nsjail: "
_LOADER_COMPLAINT = b"no version information available"


def strip_loader_noise(data: bytes) -> bytes:
    """data without its leading lines of loader complaints about nsjail's libraries.

    Line by line with plain searches, each byte looked at a bounded number of times:
    the regex this replaces took time quadratic in a line of repeated "nsjail: ".
    """
    start = 0
    while (end := data.find(b"\n", start)) >= 0:
        mark = data.find(_LOADER_MARK, start, end)
        if mark < 0 or data.find(_LOADER_COMPLAINT, mark + len(_LOADER_MARK), end) < 0:
            break
        start = end + 1
    return data[start:]


def _small_number(text: str) -> int | None:
    """The number text starts with, if it has one of at most MAX_STATUS_DIGITS digits."""
    digits = len(text) - len(text.lstrip("0123456789"))
    if not 0 < digits <= MAX_STATUS_DIGITS:
        return None
    return int(text[:digits])


def _lines_with(log: str, marker: str):
    """Each line of log that holds marker, and what follows marker's first occurrence on it.

    str.find does the scanning, so lines without the marker cost next to nothing,
    and no line is looked at twice.
    """
    at = log.find(marker)
    while at >= 0:
        start = log.rfind("\n", 0, at) + 1
        end = log.find("\n", at)
        end = len(log) if end < 0 else end
        yield log[start:at], log[at + len(marker) : end]
        at = log.find(marker, end)


def _first(log: str, marker: str, read) -> int | None:
    """read(what follows marker) on the first line ``pid=N (...)<marker>`` that gives a number."""
    for head, tail in _lines_with(log, marker):
        number = read(tail) if _PID.search(head) else None
        if number is not None:
            return number
    return None


def _signal_number(tail: str) -> int | None:
    """From what follows ``terminated with signal: `` : ``SIGKILL (9), ...``."""
    name, _, rest = tail.partition(" ")
    if not name or not rest.startswith("("):
        return None
    number = _small_number(rest[1:])
    return number if number is not None and rest[1:].lstrip("0123456789").startswith(")") else None


@dataclass(frozen=True)
class JailExit:
    """How the jailed process ended, from nsjail's log."""

    launched: bool
    exit_code: int | None
    signal: int | None
    time_limit: bool

    @classmethod
    def from_log(cls, log: str) -> "JailExit":
        """Read nsjail's log with plain searches, in time linear in its length."""
        exit_code = _first(log, ") exited with status: ", _small_number)
        signal_number = _first(log, ") terminated with signal: ", _signal_number)
        setup_failed = (
            "Couldn't launch the child process" in log or log.startswith("[F]") or "\n[F]" in log
        )
        return cls(
            launched=not setup_failed and (exit_code is not None or signal_number is not None),
            exit_code=exit_code,
            signal=signal_number,
            time_limit="run time >= time limit" in log,
        )


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _fail(status: Status, kind: str, message: str, **extra) -> tuple:
    return status, None, {"type": kind, "message": message, **extra}


def classify(
    run: JailRun,
    limits: Limits,
    *,
    oom: bool,
    peak_memory_bytes: int | None,
    jail_exit: JailExit | None = None,
) -> SandboxResult:
    """jail_exit: how the step ended, when not from nsjail's log (a warm jail's zygote says)."""
    status, value, error = _verdict(run, limits, oom, jail_exit)
    return SandboxResult(
        status=status,
        result=value if status == Status.OK else None,
        error=error,
        stdout=bytes(run.stdout.data).decode("utf-8", errors="replace"),
        stderr=strip_loader_noise(bytes(run.stderr.data)).decode("utf-8", errors="replace"),
        stdout_truncated=run.stdout.overflowed,
        stderr_truncated=run.stderr.overflowed,
        wall_seconds=run.wall_seconds,
        cpu_seconds=run.cpu_seconds,
        peak_memory_bytes=peak_memory_bytes if peak_memory_bytes else run.maxrss_bytes or None,
        progress=tuple(split_channel(bytes(run.result.data))[0]),
    )


def _verdict(run: JailRun, limits: Limits, oom: bool, jail_exit: JailExit | None):
    """The first that holds, in this order: the host stopped the jail (a cap, the
    deadline), the jail was killed (a limit, a signal), or it returned (its result)."""
    log = bytes(run.log.data).decode("utf-8", errors="replace")
    jail = jail_exit or JailExit.from_log(log)
    return _stopped(run, limits, oom, jail, log) or _returned(run, limits, jail)


def _stopped(run: JailRun, limits: Limits, oom: bool, jail: JailExit, log: str):
    """The verdict on a jail that did not end on its own, or None."""
    if run.over_cap:
        cap = limits.result_bytes if run.over_cap == "result" else limits.output_bytes
        return _fail(
            Status.OUTPUT_TOO_LARGE,
            "OutputTooLarge",
            f"output too large ({run.over_cap} over {cap} bytes)",
        )
    if not jail.launched and not run.deadline_hit:
        return _fail(
            Status.SANDBOX_FAILURE,
            "SandboxFailure",
            f"the sandbox failed to start (nsjail exit code {run.returncode})",
            log=_log_tail(log),
        )
    if run.deadline_hit or jail.time_limit:
        return _fail(
            Status.TIMED_OUT, "TimedOut", f"timed out after {describe_seconds(limits.wall_seconds)}"
        )
    if jail.signal is not None:
        return _killed(run, limits, oom, jail.signal)
    return None


def _killed(run: JailRun, limits: Limits, oom: bool, signum: int):
    cpu_limit = math.ceil(limits.cpu_seconds)  # RLIMIT_CPU is whole seconds
    if oom and signum == signal.SIGKILL:
        memory = describe_bytes(limits.memory_bytes)
        return _fail(Status.MEMORY_EXCEEDED, "MemoryExceeded", f"memory limit exceeded ({memory})")
    # RLIMIT_CPU's soft and hard limits are equal, so the kernel's SIGKILL can beat SIGXCPU.
    if signum == signal.SIGXCPU or run.cpu_seconds >= CPU_KILL_FRACTION * cpu_limit:
        return _fail(
            Status.TIMED_OUT,
            "TimedOut",
            f"timed out after {describe_seconds(limits.cpu_seconds)} of CPU time",
        )
    return _fail(Status.KILLED, "Killed", f"killed by signal {signum} ({signal_name(signum)})")


def _returned(run: JailRun, limits: Limits, jail: JailExit):
    """The verdict on a jail that ended on its own: its exit code and its result."""
    if jail.exit_code == OUTPUT_CAP_EXIT:
        return _fail(
            Status.OUTPUT_TOO_LARGE,
            "OutputTooLarge",
            f"output too large (printed output over {limits.output_bytes} bytes)",
        )
    if run.result.overflowed:  # only reachable if the cap was hit as the jail exited
        return _fail(
            Status.OUTPUT_TOO_LARGE,
            "OutputTooLarge",
            f"output too large (result over {limits.result_bytes} bytes)",
        )
    if not run.result.data:
        return _fail(
            Status.ERROR,
            "NoResult",
            f"the step exited without a result (exit code {jail.exit_code})",
        )
    try:
        ok, value = parse_result(bytes(run.result.data))
    except ProtocolError as exc:
        return _fail(Status.ERROR, "BadResult", f"the step's result was refused: {exc}")
    if jail.exit_code != 0:
        return _fail(
            Status.ERROR,
            "NoResult",
            f"the step exited with code {jail.exit_code} after writing its result",
        )
    if ok:
        return Status.OK, value, None
    if value["type"] == "MemoryError":
        memory = describe_bytes(limits.memory_bytes)
        return (
            Status.MEMORY_EXCEEDED,
            None,
            {**value, "message": f"memory limit exceeded ({memory})"},
        )
    return Status.ERROR, None, value


def _log_tail(log: str, lines: int = 8) -> str:
    """The last lines of nsjail's log worth showing, from its last LOG_TAIL_CHARS only."""
    recent = log[-LOG_TAIL_CHARS:].splitlines()
    interesting = [line for line in recent if not line.startswith("[I]")]
    return "\n".join((interesting or recent)[-lines:])
