"""Long runs: a 2,000-step workflow's per-step cost against a 10-step one's, and an
activation's memory as its history grows (issue 18, point 3).

    .venv/bin/python bench/long_runs.py [--long-steps 2000] [--long-instances 1]
        [--short-steps 10] [--short-instances 5] [--result-bytes 64] [--modes warm]
        [--workers 1] [--concurrency 2] [--timeout 1800]
        [--database-url postgres://postgres@127.0.0.1:5432/stepwell_bench_long]

Creates (and at the end drops) its own PostgreSQL database, starts a private Redis,
W = workers x concurrency Celery pool processes and the clock (tests/integration/
stack.py), the bench tenant's steps-per-instance quota raised to the long workflow's
length and its history cap set to --history-cap-bytes. For each --modes sandbox mode
(warm by default; "warm,fresh" for both) it measures in one run:

- per-step cost of the short workflow (the baseline): --short-instances instances run
  one at a time before the long run and as many after it (the load moves meanwhile),
  (finished_at - created_at) / steps each; the p50;
- per-step cost of the long workflow, its instances one at a time the same way, and the
  ratio long / short; goal: at most 1.2x (PASS/MISS);
- the long run in segments (steps 1-100, the 100 up to the middle, the last 100), from
  the step rows' finished_at, so that growth with the history shows;
- the memory while the long run goes: the pool processes' RSS (the host side) and the
  jail processes' RSS, at its start, middle and end.

Before the stack starts (no engine, the sandbox alone, uids above the workers'):
- an activation's peak memory (SandboxResult.peak_memory_bytes, the child's maxrss)
  and its time, with a synthetic history of 10, half and all the long workflow's
  steps; goal: its growth from 10 steps to all of them within the history cap
  (Quota.history_bytes); the growth per history byte is printed too;
- the host-side pieces of one activation as the history grows: the history built from
  the step rows (engine.prepare_activation, at every claim), the next activation of a
  kept lease (Activation.then, at every kept step), the job's JSON encoding
  (sandbox.protocol.dumps_job) and its decoding (what the runtime's parse does).
After the long run, the claim's read of the long instance's steps (lifecycle.leases).

Exits 0 when a goal is missed (it is a benchmark); non-zero only on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine import (  # noqa: E402
    BenchError,
    BenchStack,
    admin_url,
    close_django_connections,
    configure_django,
    create_database,
    drop_database,
    load_average,
    machine,
    migrate,
    run_main,
    say,
    start,
    verdict,
    wait_done,
)
from bench.warm import activation_input  # noqa: E402
from execution.sandbox import (  # noqa: E402
    FreshSandbox,
    Limits,
    SandboxConfig,
    SandboxRequest,
    Status,
    WarmSandbox,
)
from tests.integration.stack import point_celery_at  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/stepwell_bench_long"
RATIO_GOAL = 1.2
MODES = ("warm", "fresh")
SEGMENT = 100  # steps per segment of the long run


# --- workflows ---------------------------------------------------------------------------


def workflow_code(steps: int, result_bytes: int) -> str:
    """`steps` do steps, each returning a string of `result_bytes` characters."""
    return textwrap.dedent(
        f"""\
        def run(event, step):
            n = 0
            for i in range({steps}):
                step.do(f"s{{i}}", lambda: "x" * {result_bytes})
                n += 1
            return n
        """
    )


def history_entry(index: int, result_bytes: int) -> dict:
    """One completed do step as Step.as_history gives it to the runtime."""
    return {
        "index": index,
        "name": f"s{index}",
        "kind": "do",
        "status": "complete",
        "attempts": 1,
        "output": "x" * result_bytes,
        "error": None,
        "shape": None,
    }


# --- the sandbox alone: an activation's memory and time as the history grows -------------


def sandbox_config(state: Path) -> SandboxConfig:
    """Uids above the workers' 64 slots, so the two never share one."""
    base = int(os.environ.get("STEPWELL_SANDBOX_UID", "99000")) + 100
    return SandboxConfig(state_dir=state, uid_base=base, slots=4)


def activation_at(box, code: str, n: int, result_bytes: int, runs: int) -> dict:
    """The activation that runs step n, the n steps before it replayed: median time and
    peak memory over `runs`."""
    history = [history_entry(i, result_bytes) for i in range(n)]
    request = SandboxRequest(
        tenant="bench-long",
        code=code,
        input=activation_input(history),
        limits=Limits(),
        mode="workflow",
    )
    times, peaks = [], []
    for _ in range(runs):
        began = time.perf_counter()
        result = box.run(request)
        times.append(time.perf_counter() - began)
        if result.status != Status.OK or result.result.get("index") != n:
            raise BenchError(f"sandbox activation at {n} steps: {result.status} {result.error}")
        peaks.append(result.peak_memory_bytes or 0)
    return {
        "ms": statistics.median(times) * 1000,
        "peak": statistics.median(peaks),
        "job_bytes": len(json.dumps(request.input)),
    }


def measure_sandbox(args, points: list[int]) -> dict:
    """{mode: {n: activation_at}} for the sandbox alone, before the stack runs."""
    state = Path(tempfile.mkdtemp(prefix="stepwell-bench-long-"))
    state.chmod(0o755)
    code = workflow_code(args.long_steps + 1, args.result_bytes)
    config = sandbox_config(state)
    fresh = FreshSandbox(config)
    fresh.prepare()
    warm = WarmSandbox(config, jails_per_worker=2, fresh=fresh)
    try:
        boxes = {"warm": warm, "fresh": fresh}
        out = {}
        for mode in args.modes:
            box = boxes[mode]
            activation_at(box, code, 0, args.result_bytes, 1)  # start the jail
            out[mode] = {n: activation_at(box, code, n, args.result_bytes, 3) for n in points}
        return out
    finally:
        warm.close()
        shutil.rmtree(state, ignore_errors=True)


# --- the host side: each piece of an activation as the history grows ----------------------


def timed_ms(fn, repeat: int = 5) -> float:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples) * 1000


def synthetic_steps(n: int, result_bytes: int) -> list:
    from execution.models import Step

    return [
        Step(
            instance_id=1,
            index=i,
            name=f"s{i}",
            kind=Step.Kind.DO,
            status=Step.Status.COMPLETE,
            attempts=1,
            output="x" * result_bytes,
        )
        for i in range(n)
    ]


def measure_host(args, points: list[int]) -> dict:
    """{n: {piece: ms}}: what the host does for one activation at history n."""
    from execution.activation import Activation
    from execution.sandbox.protocol import dumps_job
    from tenants.models import Quota

    out = {}
    for n in points:
        steps = synthetic_steps(n + 1, args.result_bytes)
        history = [s.as_history() for s in steps[:n]]
        activation = Activation(
            instance_pk=1,
            instance_key="bench",
            tenant_id=1,
            token="t",
            generation=0,
            tenant_slug="bench",
            code="",
            code_sha256="",
            input=activation_input(history),
            quota=Quota(),
            pending=None,
        )
        job = dumps_job("workflow", activation.input)
        out[n] = {
            "as_history": timed_ms(lambda steps=steps, n=n: [s.as_history() for s in steps[:n]]),
            # then() may take over its activation's history: a fresh one every time.
            "then": timed_ms_fresh(activation, steps[n]),
            "dumps_job": timed_ms(lambda a=activation: dumps_job("workflow", a.input)),
            "loads_job": timed_ms(lambda job=job: json.loads(job)),
            "job_bytes": len(job),
        }
    return out


def timed_ms_fresh(activation, step, repeat: int = 5) -> float:
    """Activation.then's time, each call on a copy of the activation's history (then may
    extend it in place: it hands it on to the next activation)."""
    samples = []
    for _ in range(repeat):
        a = dataclasses.replace(
            activation,
            input={**activation.input, "history": list(activation.input["history"])},
        )
        began = time.perf_counter()
        a.then(step)
        samples.append(time.perf_counter() - began)
    return statistics.median(samples) * 1000


def claim_steps_read_ms(pk: int, from_index: int) -> float:
    """The claim's read of an instance's steps from `from_index` on
    (lifecycle.leases.steps_statement, made into rows as the claim does), in ms."""
    from django.db import transaction

    from execution.lifecycle.leases import HISTORY_FIELDS, steps_statement
    from execution.models import Step
    from lib import rows

    def read():
        with transaction.atomic(), rows.cursor() as cursor:
            cursor.execute(steps_statement(), [pk, from_index])
            [rows.loaded(Step, HISTORY_FIELDS, iter(r)) for r in cursor.fetchall()]

    read()
    return timed_ms(read)


# --- memory of the running stack ---------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError, StopIteration, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pool_pids(stack) -> list[int]:
    """The Celery worker processes and their pool children (not the jails: nsjail runs
    them in sessions of their own, as other uids)."""
    pids = []
    for worker in stack.workers:
        root = worker.proc.pid
        pids.append(root)
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{root}/task/{root}/children").read_text().split():
                pids.append(int(child))
    return pids


def sample_memory(stack) -> dict:
    host = [rss_bytes(p) for p in pool_pids(stack)]
    jails = [rss_bytes(p) for p in stack.jail_pids()]
    return {"host_max": max(host, default=0), "jail_max": max(jails, default=0)}


def wait_long(stack, pk: int, steps: int, timeout: float) -> list[dict]:
    """Wait for the long instance, sampling memory against the steps recorded so far."""
    from execution.models import Instance, Step

    deadline = time.monotonic() + timeout
    samples = []
    while True:
        done = Step.objects.filter(instance_id=pk).count()
        samples.append({"steps": done, **sample_memory(stack)})
        instance = Instance.objects.get(pk=pk)
        if instance.is_terminal:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"long run: {done} of {steps} steps after {timeout:.0f} s")
        time.sleep(0.5)
    wait_done([pk], 1, "long run")
    return samples


def at_fraction(samples: list[dict], steps: int, fraction: float) -> dict:
    target = steps * fraction
    return min(samples, key=lambda s: abs(s["steps"] - target))


# --- the engine phases -------------------------------------------------------------------


def per_step_ms(instance, steps: int) -> float:
    return (instance.finished_at - instance.created_at).total_seconds() * 1000 / steps


def segments(steps: int) -> list[tuple[int, int]]:
    """1-based inclusive step ranges: the first, the one up to the middle, the last."""
    size = min(SEGMENT, max(steps // 10, 1))
    middle = steps // 2
    return [(1, size), (middle - size + 1, middle), (steps - size + 1, steps)]


def segment_ms(pk: int, steps: int) -> list[float]:
    """Per-step ms in each segment, from the step rows' finished_at."""
    from execution.models import Instance, Step

    created = Instance.objects.get(pk=pk).created_at
    done = list(
        Step.objects.filter(instance_id=pk).order_by("index").values_list("finished_at", flat=True)
    )
    out = []
    for first, last in segments(steps):
        before = created if first == 1 else done[first - 2]
        out.append((done[last - 1] - before).total_seconds() * 1000 / (last - first + 1))
    return out


def short_runs(workflow, args, mode: str, when: str) -> list[float]:
    """Per-step ms of --short-instances instances of `workflow`, one at a time."""
    say(f"{mode}: {args.short_instances} x {args.short_steps} steps, one at a time ({when})")
    costs = []
    for _ in range(args.short_instances):
        (instance,) = wait_done(start(workflow, 1), args.timeout, "short run")
        costs.append(per_step_ms(instance, args.short_steps))
    return costs


def run_mode(stack, tenant, args, mode: str) -> dict:
    from execution.workflows import upload_version
    from tenants.models import Quota

    Quota.objects.filter(tenant=tenant).update(sandbox_mode=mode)
    short = upload_version(
        tenant, f"short-{mode}", workflow_code(args.short_steps, args.result_bytes)
    ).workflow
    long = upload_version(
        tenant, f"long-{mode}", workflow_code(args.long_steps, args.result_bytes)
    ).workflow
    # Uncounted: a warm jail for the short workflow's code in each pool process (the long
    # one's first activation starts its own: one activation in thousands).
    wait_done(start(short, args.workers * args.concurrency), args.timeout, "warm-up")

    short_costs = short_runs(short, args, mode, "before")
    long_costs, segs, memory, pks = [], [], [], []
    for n in range(args.long_instances):
        say(f"{mode}: long run {n + 1} of {args.long_instances}, {args.long_steps} steps")
        (pk,) = start(long, 1)
        samples = wait_long(stack, pk, args.long_steps, args.timeout)
        (instance,) = wait_done([pk], 1, "long run")
        long_costs.append(per_step_ms(instance, args.long_steps))
        segs.append(segment_ms(pk, args.long_steps))
        memory.append(samples)
        pks.append(pk)
    # The machine's load moves while the long run goes: the baseline is taken on both sides.
    short_costs += short_runs(short, args, mode, "after")
    short_p50 = statistics.median(short_costs)
    long_p50 = statistics.median(long_costs)
    return {
        "short": short_costs,
        "short_p50": short_p50,
        "long": long_costs,
        "long_p50": long_p50,
        "ratio": long_p50 / short_p50,
        "segments": [statistics.median(col) for col in zip(*segs, strict=True)],
        "memory": memory[-1],
        "history_bytes": instance.history_bytes,
        "activations": instance.activations,
        "claim_read_ms": claim_steps_read_ms(pks[-1], 0),
        # What a claim of a kept instance reads now: the rows since its last claim.
        "claim_read_later_ms": claim_steps_read_ms(pks[-1], args.long_steps - 30),
    }


# --- the report --------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / 2**20:7.2f}"


def report(args, runs: dict, box: dict, host: dict, points: list[int]) -> None:
    cap = args.history_cap_bytes
    print()
    print(f"machine:    {machine()}")
    print(f"date:       {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(
        f"parameters: long {args.long_instances} x {args.long_steps} steps, short "
        f"{args.short_instances} x {args.short_steps} steps, one at a time; each step "
        f"returns {args.result_bytes} characters; W={args.workers} worker x "
        f"{args.concurrency}; history cap {cap} bytes"
    )
    print(f"load avg:   {load_average()} (1/5/15 min) at the report")
    for mode, r in runs.items():
        print()
        print(f"[{mode}] per-step cost, ms (finished_at - created_at) / steps")
        print(
            f"  {args.short_steps}-step baseline p50   {r['short_p50']:8.2f}  (n={len(r['short'])})"
        )
        print(f"  {args.long_steps}-step                {r['long_p50']:8.2f}  (n={len(r['long'])})")
        ok = r["ratio"] <= RATIO_GOAL
        print(f"  ratio long / short       {r['ratio']:8.2f}x  {verdict(ok)} (<= {RATIO_GOAL}x)")
        for (first, last), ms in zip(segments(args.long_steps), r["segments"], strict=True):
            print(f"  steps {first:5}-{last:<5}          {ms:8.2f}")
        print(
            f"  long instance: {r['activations']} activations, {r['history_bytes']} history "
            f"bytes; a claim's read of its {args.long_steps} steps {r['claim_read_ms']:.2f} ms, "
            f"of its last 30 {r['claim_read_later_ms']:.2f} ms"
        )
        print("  memory while it ran (MiB):      host pool RSS  jail RSS (max process)")
        for label, f in (("start", 0.05), ("middle", 0.5), ("end", 1.0)):
            s = at_fraction(r["memory"], args.long_steps, f)
            pool_mib, jail_mib = mib(s["host_max"]), mib(s["jail_max"])
            print(f"    {label:6} at step {s['steps']:5}        {pool_mib}  {jail_mib}")
    print()
    print("the sandbox alone: the activation that runs step n (n steps replayed), median of 3")
    print(f"  {'mode':6} {'n':>6} {'job KiB':>8} {'ms':>8} {'peak MiB':>9}")
    for mode, by_n in box.items():
        for n in points:
            a = by_n[n]
            print(f"  {mode:6} {n:6} {a['job_bytes'] / 1024:8.1f} {a['ms']:8.2f} {mib(a['peak'])}")
        first, last = by_n[points[0]], by_n[points[-1]]
        growth = last["peak"] - first["peak"]
        history = (points[-1] - points[0]) * (args.result_bytes + 2)
        ok = growth <= cap
        print(
            f"  {mode}: peak grows {growth / 2**20:.2f} MiB from {points[0]} to {points[-1]} "
            f"steps: {verdict(ok)} (<= the history cap, {cap / 2**20:.2f} MiB); "
            f"{growth / max(history, 1):.1f} bytes per history byte"
        )
    print()
    print("the host's pieces of one activation, ms (median of 5)")
    columns = ("as_history", "then", "dumps_job", "loads_job", "job KiB")
    print(f"  {'n':>6} " + " ".join(f"{c:>10}" for c in columns))
    for n in points:
        h = host[n]
        print(
            f"  {n:6} {h['as_history']:10.3f} {h['then']:10.3f} {h['dumps_job']:10.3f} "
            f"{h['loads_job']:10.3f} {h['job_bytes'] / 1024:10.1f}"
        )
    print("  as_history: every claim (prepare_activation); then: every kept step;")
    print("  dumps_job / loads_job: every activation (the job to the jail, its parse inside)")
    print()
    for mode, r in runs.items():
        print(
            f"goal [{mode}]: {args.long_steps}-step per-step cost {r['long_p50']:.2f} ms vs "
            f"{RATIO_GOAL}x {args.short_steps}-step {r['short_p50']:.2f} ms = "
            f"{r['ratio']:.2f}x: {verdict(r['ratio'] <= RATIO_GOAL)}"
        )


# --- main --------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long-steps", type=int, default=2000)
    parser.add_argument("--long-instances", type=int, default=1)
    parser.add_argument("--short-steps", type=int, default=10)
    parser.add_argument("--short-instances", type=int, default=5)
    parser.add_argument("--result-bytes", type=int, default=64, help="each step's result")
    parser.add_argument("--history-cap-bytes", type=int, default=4 * 2**20)
    parser.add_argument("--modes", default="warm", help="warm, fresh or warm,fresh")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--clock-interval", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a run may take")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes):
        parser.error(f"--modes takes some of {', '.join(MODES)}")
    for name in ("long_steps", "long_instances", "short_steps", "short_instances"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.long_steps < 20:
        parser.error("--long-steps must be at least 20")
    return args


def run(args) -> None:
    if os.geteuid() != 0:
        raise BenchError("the workers run nsjail: run the benchmark as root")
    points = sorted({10, args.long_steps // 2, args.long_steps})
    stack = BenchStack(args.database_url, args.clock_interval)
    database_made = False
    try:
        say(f"creating database {admin_url(args.database_url)[1]} and migrating")
        create_database(args.database_url)
        database_made = True
        env = dict(os.environ, DATABASE_URL=args.database_url, DEBUG="false")
        env.setdefault("SECRET_KEY", os.urandom(16).hex())
        migrate(env)
        configure_django(args.database_url, stack.redis.url)

        say(f"the sandbox alone: activations at {points} steps of history")
        box = measure_sandbox(args, points)
        say("the host's pieces of an activation")
        host = measure_host(args, points)

        say(f"starting redis, {args.workers} x {args.concurrency} workers and the clock")
        stack.start(workers=args.workers, concurrency=args.concurrency)
        point_celery_at(stack.redis.url)

        from tests.factories import make_tenant

        tenant = make_tenant(
            "bench",
            "bench-user",
            steps_per_instance=args.long_steps + 10,
            history_bytes=args.history_cap_bytes,
        )
        runs = {mode: run_mode(stack, tenant, args, mode) for mode in args.modes}
        report(args, runs, box, host, points)
    except Exception:
        if stack.workers:
            print(stack.logs(), file=sys.stderr)
        raise
    finally:
        stack.stop()
        point_celery_at()
        if database_made:
            close_django_connections()
            drop_database(args.database_url)


def main(argv=None) -> int:
    return run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
