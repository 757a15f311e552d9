"""Benchmark-only: the sandbox runtime in a plain subprocess, no jail (bench/peers.py).

Never a production option. ``get_sandbox("unsandboxed")`` returns it only when the
environment says ``STEPWELL_BENCH_UNSANDBOXED=1``, so that ``make bench-peers`` can show
what isolation costs. It speaks the same protocol as a jail (the job on stdin, progress
notes and one result document on fd 3) and runs the same ``boot.py`` on the host's
interpreter, as root, with no namespaces, cgroups, seccomp or limits but the wall time.
"""

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

from execution.sandbox import process
from execution.sandbox.config import SandboxConfig
from execution.sandbox.fresh import CodeCache, Refused, failure, open_job, watch_notes
from execution.sandbox.jail import PYTHON_FLAGS, RESULT_FD
from execution.sandbox.outcome import JailExit, classify
from execution.sandbox.result import SandboxRequest, SandboxResult, Status

ENV_FLAG = "STEPWELL_BENCH_UNSANDBOXED"
HOST_PYTHON = "/usr/bin/python3"
# boot.py reads the tenant at /code and the runtime at /runtime, where a jail binds them;
# here they stay where they are on the host, so the entry point repoints boot first.
ENTRY = (
    "import sys; r, c = sys.argv[1:3]; sys.path.insert(0, r); import boot; "
    "boot.RUNTIME_DIR = r; boot.TENANT_PATH = c; boot.main()"
)


def enabled() -> bool:
    return os.environ.get(ENV_FLAG) == "1"


class SubprocessSandbox:
    """Runs each activation as ``python3 -c ENTRY`` with pipes, the way a jail would."""

    def __init__(self, config: SandboxConfig | None = None, python: str = HOST_PYTHON) -> None:
        if not enabled():
            raise ValueError(f"the unsandboxed mode is benchmark-only: set {ENV_FLAG}=1")
        self.config = config or SandboxConfig.from_settings()
        self.python = python
        self.code_cache = CodeCache(self.config.code_dir)
        self._ready = False
        self._lock = threading.Lock()

    def prepare(self) -> None:
        with self._lock:
            if not self._ready:
                self.config.state_dir.mkdir(parents=True, exist_ok=True)
                self.code_cache.prepare()
                self.config = self.config.with_runtime_installed()
                self._ready = True

    def run(self, request: SandboxRequest) -> SandboxResult:
        try:
            job_bytes, started = open_job(request, self.prepare)
        except Refused as refused:
            return refused.result
        try:
            return self._run(request, job_bytes)
        except OSError as exc:
            return failure(Status.SANDBOX_FAILURE, "SandboxFailure", str(exc), started)

    def _run(self, request: SandboxRequest, job_bytes: bytes) -> SandboxResult:
        limits = request.limits
        code_dir = self.code_cache.put(request.code_sha256, request.code)  # runs as root
        argv = [
            self.python,
            *PYTHON_FLAGS,
            "-c",
            ENTRY,
            str(self.config.runtime_dir),
            str(Path(code_dir) / "tenant.py"),
        ]
        run = spawn(argv, job_bytes, limits, on_result=watch_notes(request.on_progress))
        exit_code = run.returncode if run.returncode < 128 else None
        signalled = run.returncode - 128 if run.returncode > 128 else None
        jail_exit = JailExit(launched=True, exit_code=exit_code, signal=signalled, time_limit=False)
        return classify(run, limits, oom=False, peak_memory_bytes=None, jail_exit=jail_exit)


def spawn(argv: list[str], job_bytes: bytes, limits, on_result=None) -> process.JailRun:
    """process.run's pipes, caps and deadline, around a plain interpreter instead of nsjail."""
    out = process.JailRun(
        stdout=process.Capture(limits.output_bytes),
        stderr=process.Capture(limits.output_bytes),
        result=process.Capture(limits.result_bytes),
        log=process.Capture(process.LOG_CAP),
    )
    owned: list[int] = []
    try:
        pipes = {name: process._pipe() for name in ("stdin", "stdout", "stderr", "result")}
        owned += [fd for pair in pipes.values() for fd in pair]
        actions = [
            (os.POSIX_SPAWN_DUP2, pipes["stdin"][0], 0),
            (os.POSIX_SPAWN_DUP2, pipes["stdout"][1], 1),
            (os.POSIX_SPAWN_DUP2, pipes["stderr"][1], 2),
            (os.POSIX_SPAWN_DUP2, pipes["result"][1], RESULT_FD),
        ]
        started = time.monotonic()
        pid = os.posix_spawn(
            argv[0],
            argv,
            {},
            file_actions=actions,
            setsid=True,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
        for fd in (pipes["stdin"][0], *(pipes[n][1] for n in pipes if n != "stdin")):
            os.close(fd)
            owned.remove(fd)
        readers = {
            pipes["stdout"][0]: ("stdout", out.stdout),
            pipes["stderr"][0]: ("stderr", out.stderr),
            pipes["result"][0]: ("result", out.result),
        }

        def kill_all() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

        process._pump(
            pid,
            pipes["stdin"][1],
            job_bytes,
            readers,
            on_result,
            out,
            started,
            limits.wall_seconds,
            1.0,
            kill_all,
            owned,
        )
        process.reap(pid, out, started)
        kill_all()  # anything the step left behind in its session
        return out
    finally:
        for fd in owned:
            with contextlib.suppress(OSError):
                os.close(fd)
