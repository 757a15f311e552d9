"""Stepwell against its peers: the same M-step workflow of trivial steps, five ways (issue 7).

    .venv/bin/python bench/peers.py [--instances 40] [--steps 10] [--sequential 10]
        [--workers 1] [--concurrency 2] [--timeout 300]
        [--database-url postgres://postgres@127.0.0.1:5432/stepwell_bench_peers]

One run, on one private Redis and one PostgreSQL server (tests/integration/stack.py):

- (a1) Stepwell, fresh sandbox: a new nsjail per activation;
- (a2) Stepwell, warm sandbox: a jailed zygote per tenant version forks each activation;
- (b)  Stepwell, unsandboxed: the same runtime in a plain subprocess of the host's python
       (execution/sandbox/unsandboxed.py; benchmark-only, enabled for the bench's own
       workers by STEPWELL_BENCH_UNSANDBOXED=1 and STEPWELL_BENCH_SANDBOX_MODE=unsandboxed);
- (c)  a chain of M plain Celery tasks on the same Redis (bench/celery_chain.py), with
       the same number of pool processes W as Stepwell, results through Redis;
- (d)  DBOS Transact (PyPI `dbos`): M `@DBOS.step()`s in a `@DBOS.workflow()`, run in
       this process (as DBOS runs) on a database of its own on the same PostgreSQL, W
       threads in the throughput phase.

For each: per-workflow latency p50/p95 over --sequential workflows run one at a time
(Stepwell: instance created_at -> finished_at; Celery: apply_async -> the last task's
end; DBOS: the call), and steps/s with N workflows started at once = N*M / (first start
-> last end). Then Stepwell warm's ratio to each, and issue 8's goals: warm 10-step
p50 <= 2x DBOS p50, and warm >= 250 steps/s. Exits 0 when a goal is missed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import engine  # noqa: E402
from tests.integration.stack import VENV_BIN, Process, wait_until  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/stepwell_bench_peers"
LATENCY_GOAL_RATIO = 2.0  # warm p50 <= 2x DBOS p50
THROUGHPUT_GOAL = 250.0  # warm steps/s
UNSANDBOXED_ENV = {
    "STEPWELL_BENCH_UNSANDBOXED": "1",
    "STEPWELL_BENCH_SANDBOX_MODE": "unsandboxed",
}
BenchError = engine.BenchError
say = engine.say


class PeerStack(engine.BenchStack):
    """BenchStack whose workers can be restarted with extra environment (variant b)."""

    def __init__(self, database_url: str, clock_interval: float, pool: str = "prefork"):
        super().__init__(database_url, clock_interval)
        self.extra_env: dict = {}
        self.pool = pool

    def start_worker(self, concurrency: int = 2) -> Process:
        """With --pool solo, `concurrency` worker processes of one task each (all the solo
        pool runs at once), so that W is the same as prefork's."""
        if self.pool == "prefork":
            return super().start_worker(concurrency)
        for _ in range(concurrency):
            self._worker_count += 1
            name = f"worker{self._worker_count}"
            argv = [
                str(VENV_BIN / "celery"), "-A", "console", "worker", "-Q", "stepwell",
                "--pool", "solo", "-l", "info", "-n", f"{name}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ]  # fmt: skip
            worker = Process(name, argv, self.env(), self.dir).start()
            wait_until(
                lambda w=worker: " ready." in w.log() or w.proc.poll() is not None,
                60,
                what=f"{name} to be ready",
            )
            if worker.proc.poll() is not None:
                raise BenchError(f"{name} did not start:\n{worker.log()[-4000:]}")
            self.workers.append(worker)
        return worker

    def env(self) -> dict:
        env = super().env()
        for name in UNSANDBOXED_ENV:
            env.pop(name, None)
        env.update(self.extra_env)
        return env

    def restart_workers(self, workers: int, concurrency: int, **extra_env) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()
        self.extra_env = extra_env
        for _ in range(workers):
            self.start_worker(concurrency)


def chain_redis_url(redis_url: str) -> str:
    """The same Redis server, another database number, so the two apps share no keys."""
    return urlunsplit(urlsplit(redis_url)._replace(path="/1"))


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def result(name: str, latencies: list[float], steps: int, elapsed: float, w: str) -> dict:
    return {
        "name": name,
        "workers": w,
        "latency": engine.dist(latencies),
        "steps_per_s": steps / elapsed,
        "load": load(),
    }


# --- (a) Stepwell ------------------------------------------------------------------------


def stepwell(tenant, args, mode: str, label: str) -> dict:
    from execution.workflows import upload_version
    from tenants.models import Quota

    Quota.objects.filter(tenant=tenant).update(sandbox_mode=mode)
    code = engine.steps_workflow(args.steps) + f"# {label}\n"
    workflow = upload_version(tenant, f"peers-{mode}", code).workflow
    w = args.workers * args.concurrency
    # Warm-up (not counted): every pool process imports, opens connections, starts its jail.
    engine.wait_done(engine.start(workflow, w), args.timeout, f"{label} warm-up")
    latencies = []
    for _ in range(args.sequential):
        (row,) = engine.wait_done(engine.start(workflow, 1), args.timeout, f"{label} latency")
        latencies.append((row.finished_at - row.created_at).total_seconds())
    rows = engine.wait_done(
        engine.start(workflow, args.instances), args.timeout, f"{label} throughput"
    )
    elapsed = (max(i.finished_at for i in rows) - min(i.created_at for i in rows)).total_seconds()
    return result(label, latencies, args.instances * args.steps, elapsed, f"{w} processes")


# --- (c) plain Celery --------------------------------------------------------------------


def start_chain_workers(stack: PeerStack, args, redis_url: str) -> list[Process]:
    env = dict(stack.env(), STEPWELL_BENCH_CHAIN_REDIS=redis_url)
    workers = []
    for n in range(args.workers):
        argv = [
            str(VENV_BIN / "celery"), "-A", "bench.celery_chain", "worker",
            "-Q", "bench-chain", "-c", str(args.concurrency), "--pool", "prefork",
            "-l", "info", "-n", f"chain{n}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        worker = Process(f"chain-worker{n}", argv, env, stack.dir).start()
        workers.append(worker)
        wait_until(
            lambda worker=worker: " ready." in worker.log() or worker.proc.poll() is not None,
            60,
            what="the chain worker to be ready",
        )
        if worker.proc.poll() is not None:
            raise BenchError(f"the chain worker exited:\n{worker.log()[-2000:]}")
    return workers


def celery_chain(args, label: str) -> dict:
    from bench import celery_chain as peer

    def run_one() -> tuple[float, float]:
        started = time.time()
        done = peer.workflow(args.steps).apply_async()
        return started, done.get(timeout=args.timeout)["at"]

    w = args.workers * args.concurrency
    for _ in range(w):
        run_one()
    latencies = []
    for _ in range(args.sequential):
        started, ended = run_one()
        latencies.append(ended - started)
    started = time.time()
    pending = [peer.workflow(args.steps).apply_async() for _ in range(args.instances)]
    ends = [p.get(timeout=args.timeout)["at"] for p in pending]
    elapsed = max(ends) - started
    return result(label, latencies, args.instances * args.steps, elapsed, f"{w} processes")


# --- (d) DBOS Transact -------------------------------------------------------------------


def dbos_transact(args, database_url: str, label: str) -> dict:
    from dbos import DBOS

    steps = args.steps
    DBOS(
        config={
            "name": "stepwell-bench-peers",
            "system_database_url": database_url.replace("postgres://", "postgresql://", 1),
            "log_level": "WARNING",
        }
    )

    @DBOS.step()
    def trivial(i: int) -> int:
        return i

    @DBOS.workflow()
    def ten_steps() -> int:
        total = 0
        for i in range(steps):
            total += trivial(i)
        return total

    def timed() -> float:
        started = time.perf_counter()
        ten_steps()
        return time.perf_counter() - started

    w = args.workers * args.concurrency
    DBOS.launch()
    try:
        for _ in range(w):
            timed()
        latencies = [timed() for _ in range(args.sequential)]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=w) as pool:
            list(pool.map(lambda _: timed(), range(args.instances)))
        elapsed = time.perf_counter() - started
    finally:
        DBOS.destroy(destroy_registry=True)
    return result(label, latencies, args.instances * steps, elapsed, f"{w} threads")


# --- the report --------------------------------------------------------------------------


def report(args, results: list[dict], started_load: str) -> None:
    warm = next(r for r in results if r["name"].startswith("(a2)"))
    dbos = next(r for r in results if r["name"].startswith("(d)"))
    print()
    print(f"machine:    {engine.machine()}")
    print(f"date:       {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"load avg:   {started_load} at the start, {load()} at the end (1/5/15 min)")
    print(
        f"parameters: M={args.steps} trivial steps per workflow; latency over "
        f"{args.sequential} workflows one at a time; throughput N={args.instances} at once; "
        f"W={args.workers} worker x {args.concurrency} = "
        f"{args.workers * args.concurrency} pool processes (DBOS: threads in this process)"
    )
    print()
    print("per-workflow latency in ms; warm/x = Stepwell warm's figure over the variant's")
    head = (
        f"{'variant':34} {'W':>12} {'p50':>8} {'p95':>8} {'steps/s':>8} "
        f"{'warm/x p50':>10} {'warm/x st/s':>11}  {'load 1m 5m 15m':>15}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        lat = r["latency"]
        print(
            f"{r['name']:34} {r['workers']:>12} {lat['p50']:8.1f} {lat['p95']:8.1f} "
            f"{r['steps_per_s']:8.1f} {warm['latency']['p50'] / lat['p50']:10.2f} "
            f"{warm['steps_per_s'] / r['steps_per_s']:11.2f}  {r['load']:>15}"
        )
    print("-" * len(head))
    where_the_time_goes(args, {r["name"][1:].split(")")[0]: r for r in results})
    limit = LATENCY_GOAL_RATIO * dbos["latency"]["p50"]
    ok_latency = warm["latency"]["p50"] <= limit
    ok_thr = warm["steps_per_s"] >= THROUGHPUT_GOAL
    print(
        f"goal: warm {args.steps}-step workflow p50 {warm['latency']['p50']:.1f} ms <= "
        f"{LATENCY_GOAL_RATIO:g}x DBOS p50 {dbos['latency']['p50']:.1f} ms = {limit:.1f} ms: "
        f"{engine.verdict(ok_latency)}"
    )
    print(
        f"goal: warm {warm['steps_per_s']:.1f} steps/s >= {THROUGHPUT_GOAL:g} steps/s "
        f"(throughput phase): {engine.verdict(ok_thr)}"
    )


def where_the_time_goes(args, by_key: dict) -> None:
    """Differences of latency p50 between variants, per step (ms): what each layer costs."""
    m = args.steps

    def per_step(key: str) -> float | None:
        return by_key[key]["latency"]["p50"] / m if key in by_key else None

    lines = (
        ("a1", "a2", "a fresh jail per activation, over a warm jail's fork"),
        ("a2", "b", "a warm jail, over a plain subprocess (negative: the fork is cheaper)"),
        ("b", "c", "Stepwell's engine (durable state, events, a process per step) over Celery"),
        ("c", None, "a plain Celery task hop (Redis broker + result backend)"),
        ("d", None, "a DBOS durable step (one PostgreSQL write), in process"),
    )
    print(f"where the time goes, per step, from the latency p50s (ms; M={m}):")
    for high, low, label in lines:
        hi, lo = per_step(high), per_step(low) if low else 0.0
        if hi is None or lo is None:
            continue
        name = f"({high})" + (f" - ({low})" if low else "")
        print(f"  {name:12} {hi - lo:8.1f}  {label}")


# --- main --------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=40, help="N, throughput phase")
    parser.add_argument("--steps", type=int, default=10, help="M, steps per workflow")
    parser.add_argument("--sequential", type=int, default=10, help="workflows for latency")
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    parser.add_argument("--clock-interval", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=300, help="seconds a phase may take")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument(
        "--pool",
        choices=("prefork", "solo"),
        default="prefork",
        help="the Stepwell workers' Celery pool (solo: W worker processes of one task)",
    )
    parser.add_argument(
        "--only", default="a1,a2,b,c,d", help="comma-separated variants (a2 and d needed)"
    )
    args = parser.parse_args(argv)
    for name in ("instances", "steps", "sequential", "workers", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    args.only = set(args.only.split(",")) | {"a2", "d"}
    return args


def run(args) -> None:
    if os.geteuid() != 0:
        raise BenchError("the workers run nsjail: run the benchmark as root")
    started_load = load()
    dbos_url = args.database_url + "_dbos"
    engine.admin_url(dbos_url)
    stack = PeerStack(args.database_url, args.clock_interval, args.pool)
    chain_workers: list[Process] = []
    made: list[str] = []
    results: list[dict] = []
    try:
        say(f"creating database {engine.admin_url(args.database_url)[1]} and migrating")
        engine.create_database(args.database_url)
        made.append(args.database_url)
        env = dict(os.environ, DATABASE_URL=args.database_url, DEBUG="false")
        env.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
        engine.migrate(env)
        engine.configure_django(args.database_url, stack.redis.url)

        w = f"{args.workers} x {args.concurrency}"
        say(f"starting redis, {w} Stepwell workers and the clock")
        stack.start(workers=args.workers, concurrency=args.concurrency)
        engine.point_celery_at(stack.redis.url)
        from tests.factories import make_tenant

        tenant = make_tenant("bench", "bench-user", steps_per_instance=args.steps + 10)
        for key, mode, label in (
            ("a1", "fresh", "(a1) Stepwell, fresh sandbox"),
            ("a2", "warm", "(a2) Stepwell, warm sandbox"),
        ):
            if key in args.only:
                say(label)
                results.append(stepwell(tenant, args, mode, label))
        if "b" in args.only:
            say("(b) Stepwell, unsandboxed subprocess: restarting the workers")
            stack.restart_workers(args.workers, args.concurrency, **UNSANDBOXED_ENV)
            results.append(stepwell(tenant, args, "fresh", "(b) Stepwell, plain subprocess"))
        for worker in stack.workers:  # idle from here on: keep the two cores for the peers
            worker.stop()
        stack.workers.clear()

        if "c" in args.only:
            say(f"(c) plain Celery chain: starting {w} chain workers")
            chain_url = chain_redis_url(stack.redis.url)
            os.environ["STEPWELL_BENCH_CHAIN_REDIS"] = chain_url
            chain_workers = start_chain_workers(stack, args, chain_url)
            results.append(celery_chain(args, "(c) plain Celery chain"))
            for worker in chain_workers:
                worker.stop()

        say("(d) DBOS Transact, in this process")
        engine.create_database(dbos_url)
        made.append(dbos_url)
        results.append(dbos_transact(args, dbos_url, "(d) DBOS Transact"))
        report(args, results, started_load)
    except Exception:
        if stack.workers or chain_workers:
            print(stack.logs(), file=sys.stderr)
            for worker in chain_workers:
                print(f"--- {worker.name}\n{worker.log()[-4000:]}", file=sys.stderr)
        raise
    finally:
        for worker in chain_workers:
            worker.stop()
        stack.stop()
        engine.point_celery_at()
        engine.close_django_connections()
        for url in made:
            engine.drop_database(url)


def main(argv=None) -> int:
    return engine.run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
