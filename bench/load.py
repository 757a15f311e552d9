"""Load: concurrent API clients start instances and send events against one ASGI server.

    .venv/bin/python bench/load.py [--clients 32] [--seconds 15] [--event-seconds 15]
        [--server uvicorn|daphne] [--web-workers N] [--workers 1] [--concurrency 2]
        [--database-url postgres://postgres@127.0.0.1:5432/stepwell_bench_load]

Creates (and at the end drops) its own PostgreSQL database, starts a private Redis,
the clock, W Celery workers (--workers 0 for none) and ONE ASGI server on 127.0.0.1:
the Procfile's `web` command, uvicorn with the Procfile's worker processes (two; one
with --web-workers 1; each runs Django on a pool of threads, console/http.py), or
daphne with --server daphne. It makes a tenant whose rate and concurrency quotas are
out of the way, and uploads a workflow that waits for an event. Then C client connections (HTTP/1.1
keep-alive over asyncio streams on uvloop, one request at a time on each):

- starts: for D seconds, `POST /api/v1/workflows/{name}/instances`, each a new instance;
- events: then, for at most E seconds, `POST /api/v1/instances/{id}/events`, one to
  each instance started, which the waiting step receives.

It prints the requests per second the API answered with a 2xx, p50/p99 latency per
request (send to last byte of the answer), and the non-2xx answers. Goal on a 2-core
machine: at least 300 instance starts per second (Cloudflare Workflows' documented
per-account creation rate). The workers share the cores with the server, as they would
in production; the start rate is what the API accepts, not how fast the workers run
the instances. Exits 0 when the goal is missed (it is a benchmark); non-zero on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import socket
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import engine as eb  # noqa: E402
from tests.integration.stack import (  # noqa: E402
    VENV_BIN,
    Process,
    free_port,
    procfile_web_argv,
    wait_until,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/stepwell_bench_load"
STARTS_GOAL = 300.0
WORKFLOW = "load-wait"
EVENT_TYPE = "go"
WORKFLOW_CODE = textwrap.dedent(
    """\
    def run(event, step):
        got = step.wait_for_event("go", "go", timeout="1 hour")
        return {"n": event.payload["n"], "got": got}
    """
)
REQUEST_TIMEOUT_SECONDS = 30.0
# Past this many instances the start phase stops early: the run stays bounded in count.
MAX_STARTS = 100_000


class HttpError(RuntimeError):
    pass


# --- the client ----------------------------------------------------------------------------


class Connection:
    """One HTTP/1.1 keep-alive connection to 127.0.0.1; one request at a time."""

    def __init__(self, port: int, token: str):
        self.port = port
        self.auth = f"Authorization: Bearer {token}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None

    async def post(self, path: str, body: dict) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        ).encode()
        self.writer.write(head + self.auth + b"\r\n" + data)
        try:
            status, body_bytes, keep = await asyncio.wait_for(
                self.answer(), REQUEST_TIMEOUT_SECONDS
            )
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            await self.close()
            raise
        if not keep:
            await self.close()
        return status, body_bytes

    async def answer(self) -> tuple[int, bytes, bool]:
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers = {}
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self.chunked()
        else:
            raise HttpError(f"an answer without a length: {headers}")
        return status, body, headers.get("connection", "").lower() != "close"

    async def chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)


@dataclass
class Phase:
    """What one phase's clients saw."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    keys: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def failures(self) -> str:
        bad = {str(s): n for s, n in sorted(self.statuses.items()) if not 200 <= s < 300}
        bad.update(self.errors)
        return ", ".join(f"{k}: {n}" for k, n in bad.items()) or "none"


async def client_loop(conn: Connection, phase: Phase, next_request, deadline: float) -> None:
    """Send requests one after another until the deadline or the work runs out."""
    while time.monotonic() < deadline:
        request = next_request()
        if request is None:
            return
        path, body = request
        began = time.perf_counter()
        try:
            status, answer = await conn.post(path, body)
        except Exception as exc:
            phase.errors[type(exc).__name__] += 1
            continue
        phase.latencies.append(time.perf_counter() - began)
        phase.statuses[status] += 1
        if status == 201 and path.endswith("/instances"):
            phase.keys.append(json.loads(answer)["id"])


async def run_phase(conns: list[Connection], seconds: float, next_request) -> Phase:
    phase = Phase()
    began = time.monotonic()
    deadline = began + seconds
    await asyncio.gather(*(client_loop(c, phase, next_request, deadline) for c in conns))
    phase.elapsed = time.monotonic() - began
    return phase


async def drive(port: int, token: str, args) -> tuple[Phase, Phase]:
    conns = [Connection(port, token) for _ in range(args.clients)]
    await asyncio.gather(*(c.open() for c in conns))
    try:
        # Warm up: every connection, and the server's code paths, once.
        warm = await run_phase(conns, 30, start_requests(len(conns), prefix="warm"))
        if warm.ok != len(conns):
            raise eb.BenchError(f"warm-up starts failed: {warm.failures()}")
        starts = await run_phase(conns, args.seconds, start_requests(MAX_STARTS))
        events = await run_phase(conns, args.event_seconds, event_requests(starts.keys))
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    return starts, events


def start_requests(limit: int, prefix: str = "n"):
    counter = itertools.count()
    path = f"/api/v1/workflows/{WORKFLOW}/instances"

    def next_request():
        n = next(counter)
        return None if n >= limit else (path, {"payload": {"n": n, "tag": f"{prefix}-{n}"}})

    return next_request


def event_requests(keys: list[str]):
    pending = iter(list(keys))

    def next_request():
        key = next(pending, None)
        if key is None:
            return None
        return f"/api/v1/instances/{key}/events", {"type": EVENT_TYPE, "payload": {"ok": True}}

    return next_request


# --- the server ----------------------------------------------------------------------------


def server_argv(server: str, port: int, workers: int | None = None) -> list[str]:
    """The Procfile's `web` command on `port` (uvicorn; `workers` processes, else the
    Procfile's default), or daphne to compare with."""
    if server == "daphne":
        argv = [str(VENV_BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port)]
        return [*argv, "console.asgi:application"]
    return procfile_web_argv(port, workers)


def server_threads() -> int:
    """Request threads per server process (console/http.py)."""
    from console.http import default_threads

    return default_threads()


def web_workers(args) -> int:
    """How many uvicorn worker processes the server runs."""
    if args.server != "uvicorn":
        return 1
    argv = server_argv(args.server, 0, args.web_workers)
    return int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 1


def start_server(stack: eb.BenchStack, server: str, workers: int | None) -> Process:
    port = free_port()
    web = Process("web", server_argv(server, port, workers), stack.env(), stack.dir).start()
    web.port = port

    def answers() -> bool:
        assert web.proc.poll() is None, web.log()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        return False

    wait_until(answers, 60, what=f"{server} to listen")
    return web


# --- the report ----------------------------------------------------------------------------


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "unknown"


def report(args, starts: Phase, events: Phase, load_before: str, load_after: str) -> bool:
    ok = starts.rate >= STARTS_GOAL
    print()
    print(f"machine:    {eb.machine()}")
    print(f"date:       {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"load avg:   {load_before} before, {load_after} after (1, 5, 15 min)")
    workers = (
        f"{args.workers} x {args.concurrency} Celery pool processes"
        if args.workers
        else "no Celery workers"
    )
    print(
        f"parameters: one {args.server} server ({web_workers(args)} worker processes, "
        f"{server_threads()} threads each), C={args.clients} connections, "
        f"starts for {args.seconds:g} s, events for at most {args.event_seconds:g} s, "
        f"{workers}, the clock"
    )
    print()
    print(f"{'phase':24} {'2xx':>7} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8}  non-2xx / errors")
    print("-" * 96)
    for label, phase in (("instance starts", starts), ("event deliveries", events)):
        p50 = eb.ms(eb.percentile(phase.latencies, 0.50)) if phase.latencies else 0.0
        p99 = eb.ms(eb.percentile(phase.latencies, 0.99)) if phase.latencies else 0.0
        print(
            f"{label:24} {phase.ok:7d} {phase.rate:8.1f} {p50:8.1f} {p99:8.1f}  {phase.failures()}"
        )
    print("-" * 96)
    print(
        f"goal: instance starts {starts.rate:.1f}/s vs {STARTS_GOAL:g}/s: "
        f"{eb.verdict(ok)} (2-core machine)"
    )
    return ok


# --- main ----------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32, help="C, concurrent connections")
    parser.add_argument("--seconds", type=float, default=15, help="D, seconds of starts")
    parser.add_argument(
        "--event-seconds", type=float, default=15, help="at most this long sending events"
    )
    parser.add_argument(
        "--server",
        choices=["daphne", "uvicorn"],
        default="uvicorn",
        help="the Procfile's uvicorn (uvloop, httptools), or daphne for comparison",
    )
    parser.add_argument(
        "--web-workers",
        type=int,
        default=None,
        help="uvicorn worker processes of the one server (default: the Procfile's)",
    )
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes (0: none)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 512:
        parser.error("--clients must be between 1 and 512")
    if not 0 < args.seconds <= 300 or not 0 < args.event_seconds <= 300:
        parser.error("--seconds and --event-seconds must be in (0, 300]")
    if args.workers < 0 or args.concurrency < 1:
        parser.error("--workers must be at least 0 and --concurrency at least 1")
    return args


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def prepare(args, token_holder: list) -> None:
    """The tenant, its token and the waiting workflow, made in this process."""
    from tests.factories import make_tenant, make_token, upload

    big = 10_000_000
    tenant = make_tenant(
        "load",
        "load-user",
        instance_starts_per_minute=big,
        events_per_minute=big,
        running_instances=big,
        concurrent_activations=max(4, 2 * args.workers * args.concurrency),
    )
    token_holder.append(make_token(tenant, "load"))
    upload(tenant, WORKFLOW, WORKFLOW_CODE)


def run(args) -> None:
    if args.workers and os.geteuid() != 0:
        raise eb.BenchError("the workers run nsjail: run as root, or with --workers 0")
    stack = eb.BenchStack(args.database_url, clock_interval=0.25)
    web = None
    database_made = False
    try:
        say(f"creating database {eb.admin_url(args.database_url)[1]} and migrating")
        eb.create_database(args.database_url)
        database_made = True
        env = dict(stack.env(), DATABASE_URL=args.database_url)
        env.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
        eb.migrate(env)
        eb.configure_django(args.database_url, stack.redis.url)
        token: list[str] = []
        prepare(args, token)
        eb.close_django_connections()

        say(f"starting redis, {args.workers} x {args.concurrency} workers, the clock")
        stack.start(workers=args.workers, concurrency=args.concurrency)
        say(f"starting one {args.server} server")
        web = start_server(stack, args.server, args.web_workers)
        load_before = load_average()
        say(
            f"{args.clients} clients: starts for {args.seconds:g} s, "
            f"then events for at most {args.event_seconds:g} s"
        )
        # The clients share the two cores with the server: uvloop keeps their share small.
        starts, events = asyncio.run(
            drive(web.port, token[0], args), loop_factory=uvloop.new_event_loop
        )
        load_after = load_average()
        # A missed goal is a figure, not a failure: the exit status says only "it ran".
        report(args, starts, events, load_before, load_after)
    except BaseException:
        if web is not None:
            print(f"--- web\n{web.log()[-4000:]}", file=sys.stderr)
        if stack.workers:
            print(stack.logs(), file=sys.stderr)
        raise
    finally:
        if web is not None:
            web.stop()
        stack.stop()
        eb.point_celery_at()
        if database_made:
            eb.close_django_connections()
            eb.drop_database(args.database_url)


def main(argv=None) -> int:
    return eb.run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
