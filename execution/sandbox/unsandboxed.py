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

from execution.sandbox import process, runtime_copy
from execution.sandbox.code_cache import CodeCache
from execution.sandbox.config import SandboxConfig
from execution.sandbox.jail import PYTHON_FLAGS, RESULT_FD
from execution.sandbox.job import Refused, open_job, watch_notes
from execution.sandbox.outcome import JailExit, classify
from execution.sandbox.result import SandboxRequest, SandboxResult, Status, failure

ENV_FLAG = "STEPWELL_BENCH_UNSANDBOXED"
FDS = {0: "stdin", 1: "stdout", 2: "stderr", RESULT_FD: "result"}  # no nsjail log
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
                self.config = runtime_copy.installed(self.config)
                self._ready = True

    def run(self, request: SandboxRequest, *, keep: bool = False) -> SandboxResult:
        """`keep` is warm mode's (sticky execution): here every step's process ends."""
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
        started = time.monotonic()
        child = process.spawn(argv, out, FDS, owned, extra={})

        def kill_all() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)

        stopper = process.Stopper(child.pid, started + limits.wall_seconds, 1.0, kill_all)
        process.pump(child, job_bytes, out, stopper, on_result, owned)
        process.reap(child.pid, out, started)
        kill_all()  # anything the step left behind in its session
        return out
    finally:
        for fd in owned:
            with contextlib.suppress(OSError):
                os.close(fd)
