"""Cost per tenant: warm jails when more tenants run than can stay warm (issue 18, point 4).

    .venv/bin/python bench/tenants.py [--tenants 1000] [--instances-per-tenant 3] [--instances N]
        [--steps 5] [--workers 1] [--concurrency 2] [--in-flight 4] [--warm-tenants N]
        [--start-in-background on|off] [--spare-jail on|off] [--many-mode warm|fresh]
        [--seed 18] [--timeout 1800]
        [--database-url postgres://postgres@127.0.0.1:5432/stepwell_bench_tenants]

Creates (and at the end drops) its own PostgreSQL database, starts a private Redis,
W = workers x concurrency Celery pool processes and the clock (tests/integration/
stack.py), every tenant in warm sandbox mode, and makes in bulk --tenants tenants, each
with its own approved workflow code (a constant of its own in it, so its own code
version and its own warm jail key).

Two phases run the same workload: tenants x instances-per-tenant instances of an
M-step trivial workflow, started in a random order (seeded) in which every tenant of
the phase appears equally often, so each start's tenant is a uniform pick. A closed
loop keeps --in-flight instances running (a new one starts as one ends), so the
per-step overhead is the engine's and the jails', not a queue's.

- all warm (the baseline): the tenants are only --warm-tenants (default
  STEPWELL_WARM_JAILS_PER_WORKER, the most a pool process holds: Celery hands an
  activation to any pool process, so every process must hold every tenant's jail),
  after one uncounted instance of each per pool process;
- many tenants: all --tenants; the LRU evicts and warm jails start all the time.
  With --many-mode fresh their quota says fresh: what never starting a jail would cost.

Per phase: per-step overhead p50/p95 ((finished_at - created_at) / M of each instance),
the steps' gaps, the warm-jail starts (count and time, from the workers' metrics
stepwell_warm_jail_start_seconds), the activations run fresh instead
(stepwell_warm_fallbacks), and memory, sampled every --sample-seconds: per warm jail,
its job cgroup's memory use (memory.usage_in_bytes, or memory.current on cgroup v2)
and the PSS (smaps_rollup) of its nsjail and zygote processes.

Goal (issue 18): the many-tenant p50 per-step overhead within 2x the all-warm one.
Exits 0 when the goal is missed (it is a benchmark); non-zero only on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import textwrap
import threading
import time
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
    dist,
    drop_database,
    load_average,
    machine,
    migrate,
    run_main,
    say,
    step_gaps,
    verdict,
)
from tests.integration.stack import point_celery_at  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/stepwell_bench_tenants"
GOAL_RATIO = 2.0
MIB = 2**20
CGROUP_ROOT = Path("/sys/fs/cgroup")


# --- tenants, in bulk ---------------------------------------------------------------------


def tenant_code(number: int, steps: int) -> str:
    """The workflow of tenant `number`: its constant makes its code version its own."""
    return textwrap.dedent(
        f"""\
        TENANT = {number}


        def run(event, step):
            total = 0
            for i in range({steps}):
                total += step.do(f"s{{i}}", lambda: i + TENANT)
            return total
        """
    )


def make_tenants(prefix: str, count: int, steps: int, mode: str = "warm") -> list:
    """`count` tenants in sandbox `mode` with an approved workflow each, in bulk inserts."""
    from django.db import transaction

    from execution.models import CodeVersion, Workflow
    from tenants.models import Quota, Tenant

    with transaction.atomic():
        tenants = Tenant.objects.bulk_create(
            Tenant(slug=f"{prefix}-{n}", name=f"{prefix} {n}") for n in range(count)
        )
        Quota.objects.bulk_create(
            Quota(tenant=t, sandbox_mode=mode, steps_per_instance=steps + 10) for t in tenants
        )
        workflows = Workflow.objects.bulk_create(
            Workflow(tenant=t, name="bench-tenant") for t in tenants
        )
        versions = []
        for n, (tenant, workflow) in enumerate(zip(tenants, workflows, strict=True)):
            code = tenant_code(n, steps)
            versions.append(
                CodeVersion(
                    tenant=tenant,
                    workflow=workflow,
                    code=code,
                    sha256=CodeVersion.hash_code(code),
                    status=CodeVersion.Status.APPROVED,
                )
            )
        versions = CodeVersion.objects.bulk_create(versions)
        for workflow, version in zip(workflows, versions, strict=True):
            workflow.current_version = version
        Workflow.objects.bulk_update(workflows, ["current_version"])
    return list(Workflow.objects.filter(pk__in=[w.pk for w in workflows]).select_related("tenant"))


# --- the closed loop ----------------------------------------------------------------------


def statuses(pks: set[int]) -> list[tuple[int, str]]:
    """The instances' statuses, in a plain query: the loop asks 100 times a second, and
    through the ORM that cost the driver a tenth of a core, on the cores it measures."""
    from django.db import connection

    from execution.models import Instance

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, status FROM {Instance._meta.db_table} WHERE id = ANY(%s)", [list(pks)]
        )
        return cursor.fetchall()


def run_in_flight(workflows: list, order: list[int], in_flight: int, timeout: float) -> list[int]:
    """Start workflows[i] for each i of `order`, keeping `in_flight` instances unfinished."""
    from execution.models import Instance
    from execution.workflows import start_instance

    running: set[int] = set()
    done: list[int] = []
    terminal = set(Instance.TERMINAL_STATUSES)
    upcoming = iter(order)
    exhausted = False
    deadline = time.monotonic() + timeout
    while running or not exhausted:
        while not exhausted and len(running) < in_flight:
            index = next(upcoming, None)
            if index is None:
                exhausted = True
                break
            running.add(start_instance(workflows[index])[0].pk)
        if not running:
            break
        time.sleep(0.01)
        ended = [(pk, status) for pk, status in statuses(running) if status in terminal]
        for pk, status in ended:
            if status != Instance.Status.COMPLETE:
                i = Instance.objects.get(pk=pk)
                raise BenchError(f"instance {pk} ended {status}: {i.error}")
            running.discard(pk)
            done.append(pk)
        if time.monotonic() > deadline:
            raise BenchError(f"{len(running)} instances unfinished after {timeout:.0f} s")
    return done


def per_step_overhead(pks: list[int], steps: int) -> list[float]:
    from execution.models import Instance

    return [
        (finished - created).total_seconds() / steps
        for created, finished in Instance.objects.filter(pk__in=pks).values_list(
            "created_at", "finished_at"
        )
    ]


# --- what the workers say: their metrics files ---------------------------------------------


def worker_metrics(directory: Path) -> dict:
    """Warm-jail starts (count, seconds, buckets) and fresh fallbacks, summed over processes."""
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    out = {"starts": 0.0, "start_seconds": 0.0, "buckets": {}, "fallbacks": {}}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "stepwell_warm_jail_start_seconds_count":
                out["starts"] += sample.value
            elif sample.name == "stepwell_warm_jail_start_seconds_sum":
                out["start_seconds"] += sample.value
            elif sample.name == "stepwell_warm_jail_start_seconds_bucket":
                le = float(sample.labels["le"])
                out["buckets"][le] = out["buckets"].get(le, 0.0) + sample.value
            elif sample.name == "stepwell_warm_fallbacks_total":
                reason = sample.labels["reason"]
                out["fallbacks"][reason] = out["fallbacks"].get(reason, 0.0) + sample.value
    return out


def metrics_since(before: dict, after: dict) -> dict:
    starts = after["starts"] - before["starts"]
    buckets = {
        le: after["buckets"][le] - before["buckets"].get(le, 0.0) for le in sorted(after["buckets"])
    }
    return {
        "starts": int(starts),
        "mean_ms": 1000 * (after["start_seconds"] - before["start_seconds"]) / starts
        if starts
        else 0.0,
        "p50_bucket_ms": bucket_quantile(buckets, starts, 0.5),
        "p95_bucket_ms": bucket_quantile(buckets, starts, 0.95),
        "fallbacks": {
            reason: int(n - before["fallbacks"].get(reason, 0.0))
            for reason, n in after["fallbacks"].items()
        },
    }


def bucket_quantile(buckets: dict[float, float], count: float, q: float) -> float | None:
    """The upper bound (ms) of the histogram bucket that holds quantile q."""
    if not count:
        return None
    for le, n in sorted(buckets.items()):
        if n >= q * count:
            return le * 1000
    return None


# --- memory of the warm jails ---------------------------------------------------------------


def children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def pss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def parent_of(pid: int) -> int | None:
    with contextlib.suppress(OSError, StopIteration):
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        return int(next(x for x in status if x.startswith("PPid:")).split()[1])
    return None


def warm_job_cgroups(stack) -> list[Path]:
    """The job cgroups of this stack's warm jails: named job-<pool process pid>-warm<n>."""
    pools = [c for w in stack.workers if w.proc for c in children(w.proc.pid)]
    parents = [CGROUP_ROOT / "memory" / "NSJAIL", CGROUP_ROOT / "NSJAIL"]
    found = []
    for parent in parents:
        for pid in pools:
            found.extend(parent.glob(f"job-{pid}-warm*"))
    return found


def cgroup_usage(path: Path) -> int | None:
    for name in ("memory.usage_in_bytes", "memory.current"):
        with contextlib.suppress(OSError, ValueError):
            return int((path / name).read_text())
    return None


def cgroup_pids(path: Path) -> list[int]:
    pids: set[int] = set()
    for procs in [path / "cgroup.procs", *path.glob("*/cgroup.procs")]:
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in procs.read_text().split())
    return sorted(pids)


class MemorySampler:
    """Every `interval` s: per warm jail, its cgroup's memory and its processes' PSS."""

    def __init__(self, stack, interval: float):
        self.stack = stack
        self.interval = interval
        self.samples: list[dict] = []  # one per jail per sample
        self.alive: list[int] = []  # warm jails found per sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="memory-sampler")

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            jails = warm_job_cgroups(self.stack)
            self.alive.append(len(jails))
            for path in jails:
                self.samples.extend(self.measure(path))

    @staticmethod
    def measure(path: Path) -> list[dict]:
        usage = cgroup_usage(path)
        pids = cgroup_pids(path)
        if usage is None or not pids:
            return []
        zygote = pids[0]  # between steps the zygote is the jail's only process
        nsjail = parent_of(zygote)
        return [
            {
                "cgroup": usage,
                "zygote_pss": sum(pss_bytes(p) for p in pids),
                "nsjail_pss": pss_bytes(nsjail) if nsjail else 0,
            }
        ]

    def summary(self) -> dict:
        if not self.samples:
            return {"n": 0}

        def median_mib(key: str) -> float:
            return statistics.median(s[key] for s in self.samples) / MIB

        return {
            "n": len(self.samples),
            "cgroup_mib": median_mib("cgroup"),
            "zygote_pss_mib": median_mib("zygote_pss"),
            "nsjail_pss_mib": median_mib("nsjail_pss"),
            "jails_max": max(self.alive),
            "jails_mean": statistics.fmean(self.alive),
        }


# --- the phases ------------------------------------------------------------------------------


def phase(name: str, workflows: list, args, stack, metrics_dir: Path, rng: random.Random) -> dict:
    # Every tenant the same number of times (give or take one), in a random order.
    order = [i % len(workflows) for i in range(max(args.instances, len(workflows)))]
    rng.shuffle(order)
    order = order[: args.instances]
    say(
        f"{name}: {len(order)} instances of {len(workflows)} tenants x {args.steps} steps, "
        f"{args.in_flight} in flight"
    )
    before = worker_metrics(metrics_dir)
    began = time.monotonic()
    with MemorySampler(stack, args.sample_seconds) as sampler:
        pks = run_in_flight(workflows, order, args.in_flight, args.timeout)
    elapsed = time.monotonic() - began
    first, between, last = step_gaps(pks)
    return {
        "tenants": len(workflows),
        "instances": len(pks),
        "elapsed_s": elapsed,
        "steps_per_s": len(pks) * args.steps / elapsed,
        "per_step": dist(per_step_overhead(pks, args.steps)),
        "first_step": dist(first),
        "step_to_step": dist(between),
        "last_to_done": dist(last),
        "jails": metrics_since(before, worker_metrics(metrics_dir)),
        "memory": sampler.summary(),
    }


def wait_for_the_clock(redis_url: str, timeout: float = 120.0) -> None:
    """Until the clock has swept once: its start-up (Django's set-up and checks, some
    2 s of CPU) otherwise falls into the all-warm phase and slows the baseline."""
    import redis

    from execution.clock_mark import seconds_since_sweep

    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while seconds_since_sweep(client) is None:
        if time.monotonic() > deadline:
            raise BenchError(f"the clock did not sweep within {timeout:.0f} s")
        time.sleep(0.1)
    client.close()


def warm_up(workflows: list, args) -> None:
    """One uncounted instance of each workflow per pool process: a warm jail each."""
    w = args.workers * args.concurrency
    order = [i for i in range(len(workflows)) for _ in range(w)]
    run_in_flight(workflows, order, w, args.timeout)


# --- the report ------------------------------------------------------------------------------


def report(args, warm: dict, many: dict) -> None:
    w = args.workers * args.concurrency
    print()
    print(f"machine:    {machine()}")
    print(f"date:       {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    print(
        f"parameters: W={args.workers} worker x {args.concurrency} = {w} pool processes, "
        f"{args.steps} steps per instance, {args.in_flight} instances in flight, seed "
        f"{args.seed}; warm jails per pool process {args.jails_per_worker}, per machine "
        f"{args.jails_per_machine or 'default (slots / 2)'}, jail start in the background: "
        f"{args.start_in_background or 'the setting'}, spare jail: "
        f"{args.spare_jail or 'the setting'}; many tenants in {args.many_mode} mode"
    )
    print(f"load avg:   {load_average()} (1/5/15 min) at the report")
    print()
    print(f"{'figure (ms unless said)':46} {'all warm':>12} {'many tenants':>14} {'ratio':>7}")
    print("-" * 82)

    def row(label, a, b, ratio=True, fmt="{:12.1f}"):
        def cell(v) -> str:
            return f"{'-':>12}" if v is None else fmt.format(v)

        r = f"{b / a:7.2f}" if ratio and a and b is not None else f"{'':7}"
        print(f"{label:46} {cell(a)} {cell(b):>14} {r}")

    row("tenants", warm["tenants"], many["tenants"], False, "{:12d}")
    row("instances", warm["instances"], many["instances"], False, "{:12d}")
    for label, key in (
        ("per-step overhead p50", ("per_step", "p50")),
        ("per-step overhead p95", ("per_step", "p95")),
        ("  created -> first step recorded p50", ("first_step", "p50")),
        ("  step recorded -> next step recorded p50", ("step_to_step", "p50")),
        ("  last step recorded -> complete p50", ("last_to_done", "p50")),
    ):
        row(label, warm[key[0]][key[1]], many[key[0]][key[1]])
    row("steps/s", warm["steps_per_s"], many["steps_per_s"])
    jw, jm = warm["jails"], many["jails"]
    row("warm-jail starts (count)", jw["starts"], jm["starts"], False, "{:12d}")
    row(
        "  per instance",
        jw["starts"] / warm["instances"],
        jm["starts"] / many["instances"],
        False,
        "{:12.2f}",
    )
    row("  start time, mean", jw["mean_ms"] or None, jm["mean_ms"] or None)
    row("  start time, p50 (bucket upper bound)", jw["p50_bucket_ms"], jm["p50_bucket_ms"], False)
    row("  start time, p95 (bucket upper bound)", jw["p95_bucket_ms"], jm["p95_bucket_ms"], False)
    for reason in sorted(set(jw["fallbacks"]) | set(jm["fallbacks"])):
        row(
            f"activations run fresh instead: {reason}",
            jw["fallbacks"].get(reason, 0),
            jm["fallbacks"].get(reason, 0),
            False,
            "{:12d}",
        )
    mw, mm = warm["memory"], many["memory"]
    for label, key, fmt in (
        ("warm jails alive, max over samples", "jails_max", "{:12d}"),
        ("warm jails alive, mean over samples", "jails_mean", "{:12.1f}"),
        ("per warm jail: job cgroup memory, MiB p50", "cgroup_mib", "{:12.1f}"),
        ("per warm jail: zygote PSS, MiB p50", "zygote_pss_mib", "{:12.1f}"),
        ("per warm jail: nsjail PSS, MiB p50", "nsjail_pss_mib", "{:12.1f}"),
    ):
        row(label, mw.get(key), mm.get(key), False, fmt)
    row("  (jail samples)", mw["n"], mm["n"], False, "{:12d}")
    print("-" * 82)
    ratio = many["per_step"]["p50"] / warm["per_step"]["p50"]
    print(
        f"goal (issue 18.4): many-tenant per-step overhead p50 {many['per_step']['p50']:.1f} ms "
        f"<= {GOAL_RATIO:g}x all-warm {warm['per_step']['p50']:.1f} ms: ratio {ratio:.2f}, "
        f"{verdict(ratio <= GOAL_RATIO)}"
    )


# --- main ------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--instances-per-tenant", type=int, default=3)
    parser.add_argument(
        "--instances",
        type=int,
        default=0,
        help="instances per phase (default tenants x instances-per-tenant): fewer, for a "
        "shorter run, still among all the tenants",
    )
    parser.add_argument("--steps", type=int, default=5, help="M, steps per instance")
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    parser.add_argument("--in-flight", type=int, default=0, help="default 2 x pool processes")
    parser.add_argument(
        "--warm-tenants",
        type=int,
        default=0,
        help="all-warm phase's tenants (default: STEPWELL_WARM_JAILS_PER_WORKER)",
    )
    parser.add_argument(
        "--start-in-background",
        choices=("on", "off"),
        help="STEPWELL_WARM_START_IN_BACKGROUND for the workers (default: the setting's)",
    )
    parser.add_argument(
        "--spare-jail",
        choices=("on", "off"),
        help="STEPWELL_WARM_SPARE_JAIL for the workers (default: the setting's)",
    )
    parser.add_argument(
        "--many-mode",
        choices=("warm", "fresh"),
        default="warm",
        help="the many tenants' sandbox mode: fresh shows what never starting a jail costs",
    )
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--sample-seconds", type=float, default=0.5)
    parser.add_argument("--clock-interval", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a phase may take")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    args = parser.parse_args(argv)
    for name in ("tenants", "instances_per_tenant", "steps", "workers", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    args.instances = args.instances or args.tenants * args.instances_per_tenant  # per phase
    args.in_flight = args.in_flight or 2 * args.workers * args.concurrency
    args.jails_per_worker = int(os.environ.get("STEPWELL_WARM_JAILS_PER_WORKER", "4"))
    args.jails_per_machine = os.environ.get("STEPWELL_WARM_JAILS_PER_MACHINE")
    args.warm_tenants = args.warm_tenants or args.jails_per_worker
    return args


def run(args) -> None:
    if os.geteuid() != 0:
        raise BenchError("the workers run nsjail: run the benchmark as root")
    stack = BenchStack(args.database_url, args.clock_interval)
    metrics_dir = stack.dir / "metrics"
    metrics_dir.mkdir()
    stack.extra_env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    if args.start_in_background:
        stack.extra_env["STEPWELL_WARM_START_IN_BACKGROUND"] = args.start_in_background
    if args.spare_jail:
        stack.extra_env["STEPWELL_WARM_SPARE_JAIL"] = args.spare_jail
    database_made = False
    rng = random.Random(args.seed)
    try:
        say(f"creating database {admin_url(args.database_url)[1]} and migrating")
        create_database(args.database_url)
        database_made = True
        env = dict(os.environ, DATABASE_URL=args.database_url, DEBUG="false")
        env.setdefault("SECRET_KEY", "bench-tenants")
        migrate(env)
        configure_django(args.database_url, stack.redis.url)

        say(f"making {args.warm_tenants} + {args.tenants} tenants with a workflow each")
        began = time.monotonic()
        warm_workflows = make_tenants("warm", args.warm_tenants, args.steps)
        many_workflows = make_tenants("many", args.tenants, args.steps, args.many_mode)
        say(f"  made in {time.monotonic() - began:.1f} s")

        say(f"starting redis, {args.workers} x {args.concurrency} workers and the clock")
        stack.start(workers=args.workers, concurrency=args.concurrency)
        point_celery_at(stack.redis.url)
        wait_for_the_clock(stack.redis.url)

        say("all warm: warming up (uncounted)")
        warm_up(warm_workflows, args)
        baseline = phase("all warm", warm_workflows, args, stack, metrics_dir, rng)
        many = phase("many tenants", many_workflows, args, stack, metrics_dir, rng)
        report(args, baseline, many)
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
