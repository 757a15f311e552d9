"""Real processes for the integration suite: a private Redis, Celery workers, the clock.

Every process is started in its own session so that it and its children (nsjail
included) can be stopped as a group, and every one is stopped at teardown.

A Stack is one machine. Several Stacks on one database that share one Redis (not owned
by any of them) are the nodes of a multi-machine deployment: each has its own var dir
and, through `node_env`, its own range of sandbox uids.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def point_celery_at(broker_url: str | None = None) -> None:
    """Send this process's Celery messages to `broker_url`; None only drops the pools.

    Both pools are built lazily from the configuration, so dropping them is enough.
    """
    if broker_url is None and "console.celery" not in sys.modules:
        return
    from console.celery import app

    if broker_url is not None:
        app.conf.broker_url = broker_url
    app._pool = None
    app.amqp._producer_pool = None


def current_database_url() -> str:
    """A URL of the database this test process uses (pytest-django's test database)."""
    from django.db import connection

    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def procfile_web_argv(port: int, workers: int | None = None) -> list[str]:
    """The Procfile's `web` command on `port`, with `workers` processes (else its default):
    what production runs, so the tests and benchmarks run it too."""
    values = {"PORT": str(port), "WEB_CONCURRENCY": str(workers) if workers else None}
    return procfile_argv("web", values)


def procfile_argv(process: str, values: dict[str, str | None]) -> list[str]:
    """The Procfile's command of `process`, its ${X:-default}s given `values` (else the
    defaults), with the venv's programs."""
    line = next(
        line
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith(f"{process}:")
    )

    def expand(match: re.Match) -> str:
        return values.get(match[1]) or match[2]

    argv = shlex.split(re.sub(r"\$\{(\w+):-([^}]*)\}", expand, line.removeprefix(f"{process}:")))
    return [str(VENV_BIN / argv[0]), *argv[1:]]


class Process:
    def __init__(self, name: str, argv: list[str], env: dict, log_dir: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group: the process and every child it started."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10) -> None:
        if not self.proc:
            return
        self.kill(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.proc.wait(5)
        # Children that outlived their parent (a pool process, a jail) go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class Redis:
    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_dir = log_dir
        self.process: Process | None = None

    def start(self) -> None:
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        self.process = Process("redis", argv, dict(os.environ), self.log_dir).start()
        wait_until(self.answers, 10, what="redis to answer")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def restart(self, down_for: float = 1.0) -> None:
        self.process.kill(signal.SIGKILL)
        self.process.proc.wait(5)
        time.sleep(down_for)
        self.start()


def node_env(index: int, slots: int = 16) -> dict[str, str]:
    """The sandbox uid range of node `index` on this machine: `slots` uids each, from this
    process's STEPWELL_SANDBOX_UID up, so that two nodes never share a slot's uid (nor the
    network namespace that goes with it), as two machines would not."""
    base = int(os.environ.get("STEPWELL_SANDBOX_UID", "99000"))
    return {
        "STEPWELL_SANDBOX_UID": str(base + index * slots),
        "STEPWELL_SANDBOX_SLOTS": str(slots),
    }


class Stack:
    """A Stepwell deployment in miniature, pointed at the test database.

    With `redis`, the stack uses that Redis and leaves starting and stopping it to its
    owner: the Redis that several nodes share.
    """

    def __init__(self, database_url: str, redis: Redis | None = None, name: str = "", **env: str):
        self.extra_env = env  # over the defaults below, for every process of the stack
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"stepwell-it-{name}{'-' if name else ''}"))
        # The sandbox uids read tenant code from below here.
        self.dir.chmod(0o755)
        self.owns_redis = redis is None
        self.redis = redis or Redis(self.dir)
        self.database_url = database_url
        self.workers: list[Process] = []
        self.clock: Process | None = None
        self.webs: list[Process] = []
        self._worker_count = 0

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis.url,
            CELERY_BROKER_URL=self.redis.url,
            DJANGO_SETTINGS_MODULE="console.settings",
            SECRET_KEY=os.environ.get("SECRET_KEY", "integration-tests"),
            DEBUG="false",
            STEPWELL_LEASE_SECONDS="2",
            STEPWELL_REDISPATCH_SECONDS="3",
            STEPWELL_CLOCK_INTERVAL="0.1",
            STEPWELL_VAR_DIR=str(self.dir / "var"),
            # Webhooks reach loopback receivers only (as scripts/test.sh says).
            STEPWELL_WEBHOOK_HOSTS="127.0.0.1,localhost",
            STEPWELL_WEBHOOK_ALLOW_PRIVATE="true",
        )
        env.update(self.extra_env)
        return env

    def start(self, workers: int = 1, concurrency: int = 2) -> Stack:
        if self.owns_redis:
            self.redis.start()
        for _ in range(workers):
            self.start_worker(concurrency)
        self.start_clock()
        return self

    def start_clock(self) -> Process:
        self.clock = Process(
            "clock", [str(VENV_BIN / "python"), "manage.py", "clock"], self.env(), self.dir
        ).start()
        return self.clock

    def start_webhooks(self, concurrency: int = 2) -> Process:
        """The Procfile's `webhooks` worker: it sends webhook deliveries and runs no step."""
        argv = procfile_argv("webhooks", {"STEPWELL_WEBHOOK_CONCURRENCY": str(concurrency)})
        argv += ["-n", "webhooks@%h", "--without-gossip", "--without-mingle"]
        worker = Process("webhooks", argv, self.env(), self.dir).start()
        wait_until(
            lambda: " ready." in worker.log() or worker.proc.poll() is not None,
            60,
            what="the webhooks worker to be ready",
        )
        assert worker.proc.poll() is None, worker.log()
        self.workers.append(worker)
        return worker

    def start_worker(self, concurrency: int = 2) -> Process:
        self._worker_count += 1
        name = f"worker{self._worker_count}"
        argv = [
            str(VENV_BIN / "celery"),
            "-A",
            "console",
            "worker",
            "-Q",
            "stepwell",
            "-c",
            str(concurrency),
            "--pool",
            "prefork",
            "-l",
            "info",
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        worker = Process(name, argv, self.env(), self.dir).start()
        wait_until(
            lambda: " ready." in worker.log() or worker.proc.poll() is not None,
            60,
            what=f"{name} to be ready",
        )
        assert worker.proc.poll() is None, worker.log()
        self.workers.append(worker)
        return worker

    def collect_static(self, **env) -> None:
        """collectstatic into this stack's var dir, as a deployment does before `web`."""
        subprocess.run(
            [str(VENV_BIN / "python"), "manage.py", "collectstatic", "--noinput", "-v", "0"],
            cwd=ROOT,
            env={**self.env(), **env},
            check=True,
            capture_output=True,
        )

    def start_web(self, workers: int = 1, port: int | None = None, **env) -> Process:
        """The Procfile's web server (uvicorn) with `workers` processes, its static files
        collected first; stop() and kill() stop it with the rest."""
        self.collect_static(**env)
        port = port or free_port()
        web = Process("web", procfile_web_argv(port, workers), {**self.env(), **env}, self.dir)
        web.start()
        web.url = f"http://127.0.0.1:{port}"
        web.port = port

        def answers() -> bool:
            assert web.proc.poll() is None, web.log()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                return True
            return False

        wait_until(answers, 30, what="the web server to listen")
        self.webs.append(web)
        return web

    def processes(self) -> list[Process]:
        return [p for p in [*self.workers, self.clock, *self.webs] if p and p.proc]

    def jail_pids(self) -> list[int]:
        """Processes running as one of this stack's sandbox uids: its jails. nsjail puts
        them in a session of their own, out of reach of the worker's process group."""
        env = self.env()
        first = int(env.get("STEPWELL_SANDBOX_UID", "99000"))
        uids = range(first, first + int(env.get("STEPWELL_SANDBOX_SLOTS", "64")))
        pids = []
        for status in Path("/proc").glob("[0-9]*/status"):
            with contextlib.suppress(OSError):
                line = next(x for x in status.read_text().splitlines() if x.startswith("Uid:"))
                if int(line.split()[1]) in uids:
                    pids.append(int(status.parent.name))
        return pids

    def kill(self) -> None:
        """SIGKILL every process of the stack (their children with them) at once, as a
        machine that loses power; the shared Redis stays up."""
        processes = self.processes()
        for process in processes:
            process.kill(signal.SIGKILL)
        for process in processes:
            process.proc.wait(10)

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(
            f"--- {self.name}{'/' if self.name else ''}{p.name}\n{p.log()[-tail:]}"
            for p in self.processes()
        )

    def stop(self) -> None:
        for process in self.processes():
            process.stop()
        if self.owns_redis:
            self.redis.stop()
        if os.environ.get("STEPWELL_KEEP_TEST_LOGS"):
            print(f"integration logs kept in {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def serving(database_url: str, **env: str) -> Iterator[Stack]:
    """A started stack (its processes given `env` over the defaults) that this process's
    Celery messages go to too; stopped at the end."""
    stack = Stack(database_url, **env)
    try:
        stack.start()
        point_celery_at(stack.redis.url)
        yield stack
    finally:
        stack.stop()
        point_celery_at()
