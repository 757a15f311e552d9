"""Cost per tenant: warm jails when more tenants run than can stay warm (issue 18, point 4).

    .venv/bin/python bench/tenants.py [--tenants 1000] [--instances-per-tenant 3] [--instances N]
        [--steps 5] [--workers 1] [--concurrency 2] [--in-flight 4] [--warm-tenants N]
        [--start-in-background on|off] [--spare-jail on|off] [--many-mode warm|fresh]
        [--open-load F] [--open-instances 600] [--bare-runs 30] [--seed 18] [--timeout 1800]
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
and the PSS (smaps_rollup) of its nsjail and zygote processes. And the machine's CPU
per instance, split into the jails', the pool processes' own and the rest's, against a
new jail's floor (nsjail and an interpreter doing nothing, measured alone first): with
more in flight than pool processes the machine saturates, and the latency ratio follows
the CPU ratio. With --open-load F both phases run again as an open loop (Poisson starts
at F x the many-tenant closed loop's rate): a miss's latency at that load, not its CPU.

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
from bench.sandbox import bare_jail_cpu  # noqa: E402
from tests.integration.stack import point_celery_at  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/stepwell_bench_tenants"
GOAL_RATIO = 2.0
OPEN_LOOP_BACKLOG = 200  # unfinished instances at which an open loop gives up
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


def collect_ended(running: set[int], done: list[int]) -> None:
    """Move the instances of `running` that ended to `done`; one that failed is an error."""
    from execution.models import Instance

    terminal = set(Instance.TERMINAL_STATUSES)
    for pk, status in statuses(running):
        if status not in terminal:
            continue
        if status != Instance.Status.COMPLETE:
            i = Instance.objects.get(pk=pk)
            raise BenchError(f"instance {pk} ended {status}: {i.error}")
        running.discard(pk)
        done.append(pk)


def run_in_flight(workflows: list, order: list[int], in_flight: int, timeout: float) -> list[int]:
    """Start workflows[i] for each i of `order`, keeping `in_flight` instances unfinished."""
    from execution.workflows import start_instance

    running: set[int] = set()
    done: list[int] = []
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
        collect_ended(running, done)
        if time.monotonic() > deadline:
            raise BenchError(f"{len(running)} instances unfinished after {timeout:.0f} s")
    return done


def run_open(
    workflows: list, order: list[int], rate: float, rng: random.Random, timeout: float
) -> list[int]:
    """Start workflows[i] for each i of `order` at the arrival times of a Poisson process
    of `rate` per second, however many are unfinished (an open loop), then wait for all.
    A start falls behind its time only while the driver is busy starting the one before."""
    from execution.workflows import start_instance

    running: set[int] = set()
    done: list[int] = []
    upcoming = iter(order)
    index = next(upcoming, None)
    due = time.monotonic()
    deadline = due + timeout
    while running or index is not None:
        while index is not None and time.monotonic() >= due:
            running.add(start_instance(workflows[index])[0].pk)
            due += rng.expovariate(rate)
            index = next(upcoming, None)
        if len(running) > OPEN_LOOP_BACKLOG:
            raise BenchError(
                f"{len(running)} instances unfinished: the machine does not keep up with "
                f"{rate:.1f} starts/s; ask for less (--open-load)"
            )
        wait = 0.01 if index is None else min(0.01, max(0.0, due - time.monotonic()))
        time.sleep(wait)
        collect_ended(running, done)
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
    out = {"starts": 0.0, "start_seconds": 0.0, "buckets": {}, "fallbacks": {}, "spares": {}}
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
            elif sample.name == "stepwell_warm_spare_jail_ends_total":
                end = sample.labels["end"]
                out["spares"][end] = out["spares"].get(end, 0.0) + sample.value
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
        "spares": {
            end: int(n - before["spares"].get(end, 0.0)) for end, n in after["spares"].items()
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


# --- CPU per instance -----------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (not idle or waiting on I/O) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS


def process_times(pid: int) -> tuple[float, float] | None:
    """(its own CPU seconds, its reaped children's), or None when it is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        reaped = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
        return own, reaped
    return None


def descendants(pids: list[int]) -> list[int]:
    found, pending = [], list(pids)
    while pending:
        kids = children(pending.pop())
        found.extend(kids)
        pending.extend(kids)
    return found


def cpu_split(stack) -> dict[str, float]:
    """CPU seconds so far: the whole machine, the pool processes' own (the host side of
    the sandbox and the engine), and their jails' (nsjail and everything under it,
    reaped or still running)."""
    pools = [c for w in stack.workers if w.proc for c in children(w.proc.pid)]
    host = jails = 0.0
    for pid in pools:
        if times := process_times(pid):
            host += times[0]
            jails += times[1]
    # A process's CPU counts in its parent's once reaped: each live one under the pool
    # processes adds its own and its reaped children's (a zygote's steps), no more.
    for pid in descendants(pools):
        if times := process_times(pid):
            jails += times[0] + times[1]
    return {"machine": machine_busy_seconds(), "host": host, "jails": jails}


def cpu_per_instance_ms(before: dict, after: dict, instances: int) -> dict[str, float]:
    return {k: 1000 * (after[k] - before[k]) / instances for k in before}


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


def phase(
    name: str,
    workflows: list,
    args,
    stack,
    metrics_dir: Path,
    rng: random.Random,
    instances: int = 0,
    rate: float | None = None,
) -> dict:
    """One phase: a closed loop of --in-flight instances, or with `rate` an open loop."""
    instances = instances or args.instances
    # Every tenant the same number of times (give or take one), in a random order.
    order = [i % len(workflows) for i in range(max(instances, len(workflows)))]
    rng.shuffle(order)
    order = order[:instances]
    how = f"{rate:.1f} starts/s (open loop)" if rate else f"{args.in_flight} in flight"
    say(f"{name}: {len(order)} instances of {len(workflows)} tenants x {args.steps} steps, {how}")
    before = worker_metrics(metrics_dir)
    cpu_before = cpu_split(stack)
    began = time.monotonic()
    with MemorySampler(stack, args.sample_seconds) as sampler:
        if rate:
            pks = run_open(workflows, order, rate, rng, args.timeout)
        else:
            pks = run_in_flight(workflows, order, args.in_flight, args.timeout)
    elapsed = time.monotonic() - began
    cpu = cpu_per_instance_ms(cpu_before, cpu_split(stack), len(pks))
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
        "cpu": cpu,
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


def report(args, warm: dict, many: dict, bare: dict) -> None:
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
    for key, label in (("spares", "spare jails"), ("fallbacks", "activations run fresh instead")):
        for kind in sorted(set(jw[key]) | set(jm[key])):
            row(f"{label}: {kind}", jw[key].get(kind, 0), jm[key].get(kind, 0), False, "{:12d}")
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
    cw, cm = warm["cpu"], many["cpu"]
    row("machine CPU per instance", cw["machine"], cm["machine"])
    row("  the jails' (nsjail and all under it)", cw["jails"], cm["jails"])
    row("  the pool processes' own (host side)", cw["host"], cm["host"])
    row(
        "  the rest (PostgreSQL, this driver, ...)",
        *(c["machine"] - c["jails"] - c["host"] for c in (cw, cm)),
    )
    print("-" * 82)
    report_floor(cw["machine"], cm["machine"], bare)
    ratio = many["per_step"]["p50"] / warm["per_step"]["p50"]
    print(
        f"goal (issue 18.4): many-tenant per-step overhead p50 {many['per_step']['p50']:.1f} ms "
        f"<= {GOAL_RATIO:g}x all-warm {warm['per_step']['p50']:.1f} ms: ratio {ratio:.2f}, "
        f"{verdict(ratio <= GOAL_RATIO)}"
    )


def report_floor(warm_ms: float, many_ms: float, bare: dict) -> None:
    """What a miss costs the machine against what any new jail must: with more instances
    in flight than cores, the closed loop's latency follows CPU per instance."""
    floor = warm_ms + bare["jail_ms"]
    print(
        f"a new jail's floor, measured alone in this run: nsjail around the jail's python "
        f"doing nothing {bare['jail_ms']:.1f} ms of CPU (around /bin/true "
        f"{bare['nsjail_ms']:.1f} ms)"
    )
    print(
        f"  many tenants cost {many_ms - warm_ms:.1f} ms of CPU more per instance than all "
        f"warm, {(many_ms - warm_ms) / bare['jail_ms']:.2f}x that floor; were the floor all "
        f"of it, CPU per instance would be {floor:.1f} ms, {floor / warm_ms:.2f}x all warm's"
    )


def report_open(rate: float, warm: dict, many: dict) -> None:
    print()
    print(
        f"open loop: both phases offered {rate:.1f} starts/s (--open-load x the many-tenant "
        f"closed loop's rate), Poisson arrivals; not the goal's figure"
    )
    print(f"{'figure (ms unless said)':46} {'all warm':>12} {'many tenants':>14} {'ratio':>7}")
    print("-" * 82)
    for label, a, b in (
        ("instances", warm["instances"], many["instances"]),
        ("per-step overhead p50", warm["per_step"]["p50"], many["per_step"]["p50"]),
        ("per-step overhead p95", warm["per_step"]["p95"], many["per_step"]["p95"]),
        (
            "  created -> first step recorded p50",
            warm["first_step"]["p50"],
            many["first_step"]["p50"],
        ),
        ("steps/s", warm["steps_per_s"], many["steps_per_s"]),
        ("machine CPU per instance", warm["cpu"]["machine"], many["cpu"]["machine"]),
    ):
        cells = f"{a:12.1f} {b:14.1f} {b / a:7.2f}" if a else f"{a:12} {b:14}"
        print(f"{label:46} {cells}")
    print("-" * 82)


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
    parser.add_argument(
        "--open-load",
        type=float,
        default=0.0,
        help="also run both phases as an open loop, offered this fraction of the many-tenant "
        "closed loop's rate (0: not)",
    )
    parser.add_argument(
        "--open-instances", type=int, default=600, help="instances per open-loop phase"
    )
    parser.add_argument(
        "--bare-runs", type=int, default=30, help="runs of the bare jail, for its CPU floor"
    )
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--sample-seconds", type=float, default=0.5)
    parser.add_argument("--clock-interval", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a phase may take")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    args = parser.parse_args(argv)
    for name in ("tenants", "instances_per_tenant", "steps", "workers", "concurrency", "bare_runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.open_load < 1:
        parser.error("--open-load must be at least 0 and under 1 (a fraction of the capacity)")
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

        say(f"the bare jail's CPU, {args.bare_runs} runs (before the workers start)")
        bare = bare_jail_cpu(args.bare_runs)

        say(f"starting redis, {args.workers} x {args.concurrency} workers and the clock")
        stack.start(workers=args.workers, concurrency=args.concurrency)
        point_celery_at(stack.redis.url)
        wait_for_the_clock(stack.redis.url)

        say("all warm: warming up (uncounted)")
        warm_up(warm_workflows, args)
        baseline = phase("all warm", warm_workflows, args, stack, metrics_dir, rng)
        many = phase("many tenants", many_workflows, args, stack, metrics_dir, rng)
        report(args, baseline, many, bare)
        if args.open_load:
            rate = args.open_load * many["steps_per_s"] / args.steps
            say("all warm, open loop: warming up (uncounted)")
            warm_up(warm_workflows, args)
            open_phases = [
                phase(f"{name}, open loop", workflows, args, stack, metrics_dir, rng,
                      args.open_instances, rate)
                for name, workflows in (("all warm", warm_workflows), ("many", many_workflows))
            ]  # fmt: skip
            report_open(rate, *open_phases)
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
