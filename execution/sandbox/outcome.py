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
_TIME_LIMIT = re.compile(r"run time >= time limit")
_EXITED = re.compile(r"pid=\d+ \(.*?\) exited with status: (\d+)")
_SIGNALLED = re.compile(r"pid=\d+ \(.*?\) terminated with signal: \S+ \((\d+)\)")
# The dynamic loader's complaints about nsjail's libnl builds share the jail's stderr.
_LOADER_NOISE = re.compile(rb"\A(?:[^\n]*nsjail: [^\n]*no version information available[^\n]*\n)+")
_SETUP_FAILED = re.compile(r"Couldn't launch the child process|^\[F\]", re.MULTILINE)


@dataclass(frozen=True)
class JailExit:
    """How the jailed process ended, from nsjail's log."""

    launched: bool
    exit_code: int | None
    signal: int | None
    time_limit: bool

    @classmethod
    def from_log(cls, log: str) -> "JailExit":
        exited = _EXITED.search(log)
        signalled = _SIGNALLED.search(log)
        return cls(
            launched=not _SETUP_FAILED.search(log) and bool(exited or signalled),
            exit_code=int(exited.group(1)) if exited else None,
            signal=int(signalled.group(1)) if signalled else None,
            time_limit=bool(_TIME_LIMIT.search(log)),
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
        stderr=_LOADER_NOISE.sub(b"", bytes(run.stderr.data)).decode("utf-8", errors="replace"),
        stdout_truncated=run.stdout.overflowed,
        stderr_truncated=run.stderr.overflowed,
        wall_seconds=run.wall_seconds,
        cpu_seconds=run.cpu_seconds,
        peak_memory_bytes=peak_memory_bytes if peak_memory_bytes else run.maxrss_bytes or None,
        progress=tuple(split_channel(bytes(run.result.data))[0]),
    )


def _verdict(run: JailRun, limits: Limits, oom: bool, jail_exit: JailExit | None):
    log = bytes(run.log.data).decode("utf-8", errors="replace")
    jail = jail_exit or JailExit.from_log(log)
    memory = describe_bytes(limits.memory_bytes)
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
        cpu_limit = math.ceil(limits.cpu_seconds)  # RLIMIT_CPU is whole seconds
        if oom and jail.signal == signal.SIGKILL:
            return _fail(
                Status.MEMORY_EXCEEDED, "MemoryExceeded", f"memory limit exceeded ({memory})"
            )
        # RLIMIT_CPU's soft and hard limits are equal, so the kernel's SIGKILL can beat SIGXCPU.
        if jail.signal == signal.SIGXCPU or run.cpu_seconds >= CPU_KILL_FRACTION * cpu_limit:
            return _fail(
                Status.TIMED_OUT,
                "TimedOut",
                f"timed out after {describe_seconds(limits.cpu_seconds)} of CPU time",
            )
        return _fail(
            Status.KILLED, "Killed", f"killed by signal {jail.signal} ({signal_name(jail.signal)})"
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
        return (
            Status.MEMORY_EXCEEDED,
            None,
            {**value, "message": f"memory limit exceeded ({memory})"},
        )
    return Status.ERROR, None, value


def _log_tail(log: str, lines: int = 8) -> str:
    interesting = [line for line in log.splitlines() if not line.startswith("[I]")]
    return "\n".join((interesting or log.splitlines())[-lines:])
