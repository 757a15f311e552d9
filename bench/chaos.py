"""The chaos run: a mixed workflow under SIGKILLed workers and restarted Redis and PostgreSQL.

    .venv/bin/python bench/chaos.py [--instances 200] [--nodes 1] [--workers 3]
        [--concurrency 2] [--start-seconds 40] [--chaos-seconds 150] [--fault-every 5]
        [--timeout 480] [--faults KIND,...] [--seed N]

Starts the real stack on private services: its own PostgreSQL cluster (initdb into a
temporary directory, on a free port; the machine's shared cluster is never touched),
a private Redis, the Procfile's web server (uvicorn), W Celery workers and the clock. Through
the HTTP API it uploads a parent and a child workflow, starts N parent instances
(each with a client-chosen id, so a retried start is harmless) and sends each one
its event, half before the instance waits for it and half after.

The parent runs deterministic steps, a step that fails at random and is retried, a
sleep, a wait for the event and a child workflow it starts and joins. Every step
returns a random nonce next to its value, so a completed step that ran again and
was recorded again would show as a nonce that differs between the step row and the
output the instance built from its replayed history.

While instances run, a fault comes every few seconds at random: SIGKILL of a worker
(its pool and its jails with it; sometimes of every worker) followed by a
replacement, a Redis restart, or a PostgreSQL restart (fast, or immediate: a crash
with WAL recovery). With --nodes N (2 or more) the run is N machines on the one
PostgreSQL and the one Redis, each with its own web, workers, clock, var dir and range
of sandbox uids; the client spreads its calls over the webs as a load balancer would, and
a further fault kills a whole node (every process of it, SIGKILL) and brings it back a
few seconds later. Faults stop after --chaos-seconds, or earlier when few instances
are left, so that recovery can be measured: from the end of the last fault to the
last instance finishing.

At the end it checks, straight in the database: every instance complete with its
expected output; step indexes contiguous; no step result recorded twice; no
completed step ran again (nonces, attempts against recorded failures); progress
sequence numbers 1..N without a gap; every sleep and wait suspended and resumed its
instance exactly once, a sleep not before its time (two clocks never fired one timer
twice). It prints a summary and exits 1 on any violation or when instances do not end
within --timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import engine as eb  # noqa: E402
from tests.integration.stack import Redis, free_port, node_env  # noqa: E402

PARENT = "chaos-order"
CHILD = "chaos-child"
EVENT_TYPE = "approve"

PARENT_CODE = textwrap.dedent(
    """\
    import random

    def value(v):
        return lambda: {"value": v, "nonce": random.random()}

    def run(event, step):
        n = event.payload["n"]
        a = step.do("a", value(n * 10 + 1))

        def flaky():
            if random.random() < 0.4:
                raise RuntimeError("flaky failure")
            return {"value": n * 7, "nonce": random.random()}

        b = step.do("flaky", flaky,
                    retries={"limit": 15, "delay": "0.1 seconds", "backoff": "constant"})
        step.sleep("nap", event.payload["sleep"])
        approval = step.wait_for_event("approval", "approve", timeout="30 minutes")
        kid = step.start_workflow("spawn", "chaos-child", {"n": n, "sleep": event.payload["sleep"]})
        child = step.wait_for_workflow("join", kid, timeout="30 minutes")
        c = step.do("c", value(n * 10 + 3))
        return {"n": n, "a": a, "flaky": b, "approval": approval, "child": child, "c": c}
    """
)

CHILD_CODE = textwrap.dedent(
    """\
    import random

    def run(event, step):
        n = event.payload["n"]
        step.sleep("breathe", event.payload["sleep"] / 2)
        return step.do("double", lambda: {"value": n * 2, "nonce": random.random()})
    """
)

# The do steps of each workflow, with the value each one returns for payload n.
PARENT_VALUES = {"a": lambda n: n * 10 + 1, "flaky": lambda n: n * 7, "c": lambda n: n * 10 + 3}
CHILD_VALUES = {"double": lambda n: n * 2}


def parent_payload(n: int, sleep: float) -> dict:
    return {"n": n, "sleep": sleep}


def approval_payload(n: int) -> dict:
    return {"by": f"driver-{n}"}


# --- the checks ----------------------------------------------------------------------------


def violations(parent_keys: list[str], tenant) -> list[str]:
    """Everything that went wrong with these parents and their children; empty when none."""
    from execution.models import Instance

    found: list[str] = []
    parents = {i.key: i for i in Instance.objects.filter(tenant=tenant, key__in=parent_keys)}
    for key in parent_keys:
        parent = parents.get(key)
        if parent is None:
            found.append(f"{key}: the instance does not exist")
            continue
        found += check_instance(parent, PARENT_VALUES)
        children = list(Instance.objects.filter(parent=parent))
        if len(children) != 1:
            found.append(f"{key}: {len(children)} child instances, expected 1")
            continue
        found += check_instance(children[0], CHILD_VALUES)
        if parent.status == "complete":
            found += check_parent_output(parent, children[0])
    return found


def check_instance(instance, values: dict) -> list[str]:
    """Status, steps and progress events of one instance."""
    from execution.models import ProgressEvent

    key = instance.key
    found = []
    if instance.status != "complete":
        found.append(f"{key}: ended {instance.status}, not complete: {instance.error}")
    steps = list(instance.steps.order_by("index"))
    if [s.index for s in steps] != list(range(len(steps))):
        found.append(f"{key}: step indexes {[s.index for s in steps]} are not contiguous")
    events = list(ProgressEvent.objects.filter(instance=instance).order_by("seq"))
    seqs = [e.seq for e in events]
    if seqs != list(range(1, len(seqs) + 1)) or instance.last_seq != len(seqs):
        found.append(
            f"{key}: progress seqs have a gap: {gaps(seqs)} (last_seq {instance.last_seq})"
        )
    per_index: dict[tuple[str, int], int] = Counter(
        (e.type, e.data["step"]["index"]) for e in events if "step" in e.data
    )
    for (kind, index), count in per_index.items():
        # step.started comes once per attempt that succeeds after a failure, so only
        # step.completed is unique by design.
        if kind == "step.completed" and count > 1:
            found.append(f"{key}: step {index} has {count} {kind} events")
    payload_n = instance.payload.get("n")
    for step in steps:
        if step.kind != "do":
            continue
        failed = per_index.get(("step.failed", step.index), 0)
        if step.status == "complete":
            if per_index.get(("step.completed", step.index), 0) != 1:
                found.append(f"{key}: complete step {step.name!r} has no step.completed event")
            if step.attempts != failed + 1:
                found.append(
                    f"{key}: step {step.name!r} made {step.attempts} attempts with "
                    f"{failed} recorded failures: a completed attempt ran again"
                )
        expected = values.get(step.name)
        output = step.output if isinstance(step.output, dict) else {}
        if expected and step.status == "complete" and output.get("value") != expected(payload_n):
            found.append(f"{key}: step {step.name!r} returned {step.output}")
    return found + check_resumptions(key, steps, events)


SUSPENDING_KINDS = {"sleep": "step.sleeping", "wait_for_event": "step.waiting"}


def check_resumptions(key: str, steps: list, events: list) -> list[str]:
    """Each sleep and wait suspended the instance once and resumed it once, a sleep not
    before its wake time: two clocks (or a clock and a worker) that fired one timer twice
    would resume the instance twice from one step."""
    found = []
    by_index: dict[tuple[str, int], list] = {}
    for event in events:
        if "step" in event.data:
            by_index.setdefault((event.type, event.data["step"]["index"]), []).append(event)
    for step in steps:
        if step.kind not in (*SUSPENDING_KINDS, "wait_for_workflow") or step.status != "complete":
            continue
        suspended = by_index.get((SUSPENDING_KINDS.get(step.kind, "step.waiting"), step.index), [])
        resumed = by_index.get(("instance.resumed", step.index), [])
        if len(suspended) != 1 or len(resumed) != 1:
            found.append(
                f"{key}: {step.kind} step {step.name!r} suspended {len(suspended)} times and "
                f"resumed {len(resumed)} times, expected once each"
            )
        elif step.kind == "sleep" and resumed[0].created_at < step.wake_at:
            found.append(
                f"{key}: sleep {step.name!r} woke at {resumed[0].created_at}, "
                f"before its time {step.wake_at}"
            )
    return found


def check_parent_output(parent, child) -> list[str]:
    """The output built from replayed history equals the step rows: no step ran twice."""
    found = []
    out = parent.output or {}
    n = parent.payload["n"]
    rows = {s.name: s.output for s in parent.steps.all()}
    for name in PARENT_VALUES:
        if out.get(name) != rows.get(name):
            found.append(
                f"{parent.key}: output {name}={out.get(name)} but its step row says "
                f"{rows.get(name)}: the step was recorded twice"
            )
    if out.get("approval") != approval_payload(n):
        found.append(
            f"{parent.key}: approval {out.get('approval')}, expected {approval_payload(n)}"
        )
    double = child.steps.filter(name="double").values_list("output", flat=True).first()
    if not (out.get("child") == child.output == double) or (double or {}).get("value") != 2 * n:
        found.append(
            f"{parent.key}: child output {out.get('child')} vs child {child.output} "
            f"vs its step {double}"
        )
    if out.get("n") != n:
        found.append(f"{parent.key}: output n={out.get('n')}, expected {n}")
    return found


def gaps(seqs: list[int]) -> list[int]:
    have = set(seqs)
    return [s for s in range(1, max(seqs, default=0) + 1) if s not in have][:10]


# --- a private PostgreSQL --------------------------------------------------------------------


def postgres_bin() -> Path:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
    )
    if not versions:
        raise eb.BenchError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return versions[-1].parent


class PrivatePostgres:
    """A throwaway cluster owned by the postgres user, on a free loopback port."""

    def __init__(self):
        self.bin = postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="stepwell-chaos-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/stepwell_chaos"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise eb.BenchError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def init(self) -> None:
        shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c fsync=off -c full_page_writes=off"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "postgres.log"),
            "-w",
            "-t",
            "120",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False
        )

    def restart(self, mode: str, down_for: float) -> None:
        self.stop(mode)
        time.sleep(down_for)
        self.start()

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- the HTTP API ----------------------------------------------------------------------------


class ApiError(RuntimeError):
    pass


class Api:
    """A small client that retries while the server or its database is away.

    With several base URLs (one web per node, as behind a load balancer) the calls take
    turns, and a call that fails goes to the next one at once.
    """

    def __init__(self, base_urls: str | list[str], token: str):
        self.base_urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        self.token = token
        self.retries = 0
        self.turn = 0

    def call(self, method: str, path: str, body=None, *, patience: float = 120) -> dict:
        deadline = time.monotonic() + patience
        data = None if body is None else json.dumps(body).encode()
        failures = 0
        while True:
            self.turn += 1
            request = urllib.request.Request(
                self.base_urls[self.turn % len(self.base_urls)] + path,
                data=data,
                method=method,
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "Content-Type": "application/json",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=15) as response:
                    return json.loads(response.read() or b"null")
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise ApiError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None
                problem = f"{exc.code}"
            except (OSError, ValueError) as exc:  # refused, reset, timed out, cut short
                problem = repr(exc)
            if time.monotonic() > deadline:
                raise ApiError(f"{method} {path}: still failing after {patience:.0f} s: {problem}")
            self.retries += 1
            failures += 1
            if failures % len(self.base_urls) == 0:  # every web failed this round
                time.sleep(0.5)


FAULT_WEIGHTS = {
    "kill_worker": 5,
    "kill_all_workers": 1,
    "redis": 2,
    "postgres": 2,
    "kill_node": 2,
}
# kill_node needs a second node to carry on; a single-node run leaves it out.
SINGLE_NODE_FAULTS = ["kill_worker", "kill_all_workers", "redis", "postgres"]


# --- chaos -----------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    started: float
    ended: float = 0.0
    detail: str = ""


@dataclass
class Chaos:
    nodes: list
    redis: Redis
    postgres: PrivatePostgres | None
    concurrency: int
    every: float
    rng: random.Random
    kinds: list[str]
    stop: threading.Event = field(default_factory=threading.Event)
    faults: list[Fault] = field(default_factory=list)
    self_deaths: list[str] = field(default_factory=list)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.wait(self.rng.uniform(0.5, 1.5) * self.every):
                self.replace_dead_workers()
                self.inject()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def inject(self) -> None:
        if len(self.faults) < len(self.kinds):
            # Every kind once, in a random order, before the weighted draw.
            kind = self.first_round()[len(self.faults)]
        else:
            kind = self.rng.choice([k for k in self.kinds for _ in range(FAULT_WEIGHTS[k])])
        fault = Fault(kind, time.monotonic())
        if kind == "kill_worker":
            node = self.rng.choice(self.nodes)
            victim = self.rng.choice(node.workers)
            fault.detail = f"{node.name}{'/' if node.name else ''}{victim.name}"
            self.kill(node, victim)
            time.sleep(self.rng.uniform(0, 2))
            node.start_worker(self.concurrency)
        elif kind == "kill_all_workers":
            counts = [len(node.workers) for node in self.nodes]
            for node in self.nodes:
                for victim in list(node.workers):
                    self.kill(node, victim)
            time.sleep(self.rng.uniform(1, 3))
            for node, count in zip(self.nodes, counts, strict=True):
                for _ in range(count):
                    node.start_worker(self.concurrency)
        elif kind == "kill_node":
            # A machine lost whole: its web, workers (their jails) and clock at once.
            # It comes back a few seconds later, on the same state directory and port.
            node = self.rng.choice(self.nodes)
            down = self.rng.uniform(2, 5)
            fault.detail = f"{node.name} down {down:.1f} s"
            node.kill()
            time.sleep(down)
            restart_node(node, len(node.workers), self.concurrency)
        elif kind == "redis":
            down = self.rng.uniform(0.5, 3)
            fault.detail = f"down {down:.1f} s"
            self.redis.restart(down_for=down)
        else:
            done = sum(f.kind.startswith("postgres") for f in self.faults)
            mode = ["immediate", "fast"][done % 2]
            down = self.rng.uniform(1, 3)
            fault.kind = f"postgres_{mode}"
            fault.detail = f"down {down:.1f} s"
            self.postgres.restart(mode, down)
        fault.ended = time.monotonic()
        self.faults.append(fault)
        say(f"fault: {fault.kind} {fault.detail} ({fault.ended - fault.started:.1f} s)")

    def first_round(self) -> list[str]:
        if not hasattr(self, "_first_round"):
            self._first_round = self.rng.sample(self.kinds, len(self.kinds))
        return self._first_round

    def kill(self, node, worker) -> None:
        worker.kill(signal.SIGKILL)
        worker.proc.wait(10)
        node.workers.remove(worker)

    def workers(self) -> int:
        return sum(len(node.workers) for node in self.nodes)

    def replace_dead_workers(self) -> None:
        """A worker that died without being killed is a finding: note it, replace it."""
        for node in self.nodes:
            for worker in list(node.workers):
                if worker.proc.poll() is not None:
                    self.self_deaths.append(
                        f"{node.name} {worker.name} exited {worker.proc.returncode}; "
                        "its log ends:\n" + textwrap.indent(worker.log()[-3000:], "    | ")
                    )
                    say(f"!! {worker.name} died by itself (exit {worker.proc.returncode})")
                    node.workers.remove(worker)
                    node.start_worker(self.concurrency)


def restart_node(node, workers: int, concurrency: int) -> None:
    """Start a killed node's processes again: its web on the port it had, so that the
    API client's list of webs (the load balancer) stays right."""
    ports = [web.port for web in node.webs]
    node.workers, node.clock, node.webs = [], None, []
    node.start(workers=workers, concurrency=concurrency)
    for port in ports:
        node.start_web(port=port)


# --- the driver ------------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"==> [{time.strftime('%H:%M:%S')}] {message}", flush=True)


def db_retry(fn, default=None):
    """Run a query; while PostgreSQL is restarting, answer `default` instead."""
    from django.db import Error, connections

    try:
        return fn()
    except Error:
        connections.close_all()
        return default


def make_tenant(env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "create_tenant", "chaos", "--token", "chaos"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise eb.BenchError(f"create_tenant failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def loosen_quota(total_processes: int, slug: str = "chaos") -> None:
    """Rate quotas out of the way: the run starts hundreds of instances in a minute."""
    from tenants.models import Quota

    Quota.objects.filter(tenant__slug=slug).update(
        concurrent_activations=max(8, 2 * total_processes),
        instance_starts_per_minute=100_000,
        events_per_minute=100_000,
        running_instances=100_000,
    )


@dataclass
class Drive:
    keys: list[str]
    sleeps: dict[str, float]
    early: set[str]
    sent: set[str] = field(default_factory=set)
    started: int = 0


def drive(api: Api, args, rng: random.Random, chaos: Chaos, tenant) -> tuple[Drive, float]:
    """Start the instances at a steady rate, send their events; wait until all have ended."""

    keys = [f"chaos-{n}" for n in range(args.instances)]
    plan = Drive(
        keys=keys,
        sleeps={k: rng.choice([1, 1.5, 2, 3]) for k in keys},
        early={k for k in keys if rng.random() < 0.5},
    )
    begin = time.monotonic()
    deadline = begin + args.timeout
    chaos_until = begin + args.chaos_seconds
    last_report = 0.0
    ended = 0
    while True:
        now = time.monotonic()
        due = min(len(keys), int((now - begin) / args.start_seconds * len(keys)) + 1)
        start_due(api, plan, due)
        send_late_events(api, tenant, plan)
        count = ended_count(tenant, keys)
        ended = ended if count is None else count
        if not chaos.stop.is_set() and (
            now > chaos_until or (plan.started == len(keys) and ended >= 0.9 * len(keys))
        ):
            chaos.stop.set()
            say(f"chaos over after {now - begin:.0f} s; {ended}/{len(keys)} ended")
        if chaos.stop.is_set() and ended == len(keys):
            return plan, time.monotonic() - begin
        if chaos.error is not None:
            raise eb.BenchError(f"the chaos thread failed: {chaos.error!r}") from chaos.error
        if now > deadline:
            raise TimeoutError(
                f"{len(keys) - ended} of {len(keys)} instances had not ended "
                f"after {args.timeout:.0f} s"
            )
        if now - last_report >= 10:
            last_report = now
            say(
                f"{now - begin:5.0f} s: started {plan.started}, ended {ended}/{len(keys)}, "
                f"events sent {len(plan.sent)}, faults {len(chaos.faults)}, "
                f"workers {chaos.workers()}"
            )
        time.sleep(0.3)


def start_due(api: Api, plan: Drive, due: int) -> None:
    """Start the parents up to the `due`th, sending the early ones their event at once."""
    while plan.started < due:
        key = plan.keys[plan.started]
        n = plan.started
        api.call(
            "POST",
            f"/api/v1/workflows/{PARENT}/instances",
            {"id": key, "payload": parent_payload(n, plan.sleeps[key])},
        )
        if key in plan.early:
            send_event(api, key, n, plan)
        plan.started += 1


def send_late_events(api: Api, tenant, plan: Drive) -> None:
    """Its event to every started parent that now waits for one it was not sent."""
    from execution.models import Step

    late = [k for k in plan.keys[: plan.started] if k not in plan.sent]
    if not late:
        return
    waiting = db_retry(
        lambda: list(
            Step.objects.filter(
                instance__tenant=tenant, instance__key__in=late, name="approval", status="waiting"
            ).values_list("instance__key", flat=True)
        ),
        default=[],
    )
    for key in waiting:
        send_event(api, key, int(key.split("-")[1]), plan)


def ended_count(tenant, keys: list[str]) -> int | None:
    """How many of these parents have ended; None while the database is away."""
    from execution.models import Instance

    return db_retry(
        lambda: Instance.objects.filter(
            tenant=tenant, key__in=keys, status__in=Instance.TERMINAL_STATUSES
        ).count(),
        default=None,
    )


def send_event(api: Api, key: str, n: int, plan: Drive) -> None:
    if key in plan.sent:
        return
    api.call(
        "POST",
        f"/api/v1/instances/{key}/events",
        {"type": EVENT_TYPE, "payload": approval_payload(n)},
    )
    plan.sent.add(key)


# --- the report ------------------------------------------------------------------------------


def figures(plan: Drive, tenant) -> dict:
    from django.db.models import Count, Max, Min, Sum

    from execution.models import Event, Instance, ProgressEvent, Step

    everything = Instance.objects.filter(tenant=tenant)
    totals = everything.aggregate(
        n=Count("id"),
        activations=Sum("activations"),
        first=Min("created_at"),
        last=Max("finished_at"),
    )
    return {
        "instances": totals["n"],
        "parents": len(plan.keys),
        "complete": everything.filter(status="complete").count(),
        "steps": Step.objects.filter(instance__tenant=tenant).count(),
        "retried_attempts": ProgressEvent.objects.filter(
            instance__tenant=tenant, type="step.failed"
        ).count(),
        "activations": totals["activations"] or 0,
        "progress_events": ProgressEvent.objects.filter(instance__tenant=tenant).count(),
        "events": Event.objects.filter(instance__tenant=tenant).count(),
        "last_finished": totals["last"],
    }


def recovery_seconds(
    chaos: Chaos, last_finished, started_wall: float, started_mono: float
) -> float | None:
    """From the end of the last fault to the last instance finishing."""
    if not chaos.faults or last_finished is None:
        return None
    last_fault_wall = started_wall + (chaos.faults[-1].ended - started_mono)
    return last_finished.timestamp() - last_fault_wall


def report(
    args, fig: dict, chaos: Chaos, found: list[str], wall: float, recovery, api: Api
) -> None:
    kinds = Counter(f.kind for f in chaos.faults)
    longest = max((f.ended - f.started for f in chaos.faults), default=0)
    rows = [
        (
            "parameters",
            f"{args.instances} parents, {args.nodes} node(s) of {args.workers} workers x "
            f"{args.concurrency}, seed {args.seed}",
        ),
        ("instances (parents + children)", f"{fig['instances']} ({fig['complete']} complete)"),
        ("steps recorded", fig["steps"]),
        ("failed attempts retried (flaky step)", fig["retried_attempts"]),
        ("activations", fig["activations"]),
        ("progress events", fig["progress_events"]),
        ("events sent (incl. HTTP retries)", fig["events"]),
        ("HTTP requests retried", api.retries),
        ("faults injected", f"{len(chaos.faults)} (longest {longest:.1f} s)"),
        *((f"  {kind}", count) for kind, count in sorted(kinds.items())),
        ("workers that died by themselves", len(chaos.self_deaths)),
        ("wall time of the run", f"{wall:.1f} s"),
        (
            "recovery (last fault -> last instance done)",
            "n/a" if recovery is None else f"{recovery:.1f} s",
        ),
        ("violations", len(found)),
    ]
    print()
    print("chaos run")
    print("-" * 72)
    for label, value in rows:
        print(f"{label:44} {value}")
    print("-" * 72)
    for line in found[:50]:
        print(f"VIOLATION {line}")
    if len(found) > 50:
        print(f"... and {len(found) - 50} more")
    print("PASS: nothing lost" if not found else "FAIL: see the violations above")


# --- main ------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200, help="parent instances")
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="machines: each its own web, workers, clock, var dir and sandbox uids, on one "
        "PostgreSQL and one Redis; with 2 or more, a fault may kill a whole node",
    )
    parser.add_argument(
        "--workers", type=int, default=3, help="Celery workers per node (at least 2)"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    parser.add_argument(
        "--start-seconds",
        type=float,
        default=40,
        help="the starts are spread over this many seconds",
    )
    parser.add_argument(
        "--chaos-seconds", type=float, default=150, help="faults stop after this many seconds"
    )
    parser.add_argument("--fault-every", type=float, default=5, help="mean seconds between faults")
    parser.add_argument(
        "--faults",
        default=None,
        help=f"kinds of fault to inject, comma-separated, from {', '.join(FAULT_WEIGHTS)} "
        "(default: all; kill_node only with --nodes 2 or more)",
    )
    parser.add_argument("--timeout", type=float, default=480, help="seconds the run may take")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error("--workers must be at least 2")
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    kinds = list(FAULT_WEIGHTS) if args.nodes > 1 else SINGLE_NODE_FAULTS
    if args.faults is None:
        args.faults = kinds
    else:
        args.faults = [k.strip() for k in args.faults.split(",") if k.strip()]
    if set(args.faults) - set(kinds) or not args.faults:
        parser.error(f"--faults: choose from {', '.join(kinds)}")
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    return args


def make_nodes(database_url: str, redis: Redis, args) -> list[eb.BenchStack]:
    """One stack per node on the shared database and Redis; with several, each gets its
    own sandbox uid range, slots enough for its pool processes and their warm jails."""
    if args.nodes == 1:
        return [eb.BenchStack(database_url, clock_interval=0.25, redis=redis)]
    slots = args.workers * args.concurrency * 5 + 2
    return [
        eb.BenchStack(
            database_url, clock_interval=0.25, redis=redis, name=f"node{i}", **node_env(i, slots)
        )
        for i in range(args.nodes)
    ]


def run(args) -> int:
    if os.geteuid() != 0:
        raise eb.BenchError("the workers run nsjail and PostgreSQL runs as postgres: run as root")
    rng = random.Random(args.seed)
    postgres = PrivatePostgres()
    redis = Redis(postgres.dir)
    nodes = make_nodes(postgres.url, redis, args)
    chaos = None
    thread = None
    try:
        say(f"private PostgreSQL on port {postgres.port} ({postgres.bin})")
        postgres.init()
        postgres.start()
        eb.create_database(postgres.url)
        env = dict(nodes[0].env(), DATABASE_URL=postgres.url)
        eb.migrate(env)
        token = make_tenant(env)
        eb.configure_django(postgres.url, redis.url)
        loosen_quota(args.nodes * args.workers * args.concurrency)
        from tenants.models import Tenant

        tenant = Tenant.objects.get(slug="chaos")

        say(
            f"starting redis and {args.nodes} node(s) of {args.workers} x {args.concurrency} "
            "workers, the clock, uvicorn"
        )
        redis.start()
        eb.point_celery_at(redis.url)
        for node in nodes:
            node.start(workers=args.workers, concurrency=args.concurrency)
            node.start_web()
        api = Api([node.webs[0].url for node in nodes], token)
        for name, code in ((CHILD, CHILD_CODE), (PARENT, PARENT_CODE)):
            api.call("PUT", f"/api/v1/workflows/{name}", {"code": code})

        chaos = Chaos(
            nodes=nodes,
            redis=redis,
            postgres=postgres,
            concurrency=args.concurrency,
            every=args.fault_every,
            rng=random.Random(rng.random()),
            kinds=args.faults,
        )
        thread = threading.Thread(target=chaos.run, name="chaos", daemon=True)
        say(
            f"{args.instances} instances over {args.start_seconds:.0f} s, a fault every "
            f"~{args.fault_every:g} s for {args.chaos_seconds:.0f} s (seed {args.seed})"
        )
        started_wall, started_mono = time.time(), time.monotonic()
        thread.start()
        try:
            plan, wall = drive(api, args, rng, chaos, tenant)
            timed_out = None
        except TimeoutError as exc:
            plan, wall, timed_out = None, time.monotonic() - started_mono, exc
        chaos.stop.set()
        thread.join(120)

        say("checking")
        if plan is None:
            keys = [f"chaos-{n}" for n in range(args.instances)]
            plan = Drive(keys=keys, sleeps={}, early=set())
        found = ([f"timeout: {timed_out}"] if timed_out else []) + violations(plan.keys, tenant)
        found += [f"worker died by itself: {d}" for d in chaos.self_deaths]
        fig = figures(plan, tenant)
        recovery = recovery_seconds(chaos, fig["last_finished"], started_wall, started_mono)
        report(args, fig, chaos, found, wall, recovery, api)
        return 1 if found else 0
    except BaseException:
        for node in nodes:
            print(node.logs(), file=sys.stderr)
        raise
    finally:
        if chaos is not None:
            chaos.stop.set()
        if thread is not None and thread.is_alive():
            thread.join(120)
        for node in nodes:
            node.stop()
        redis.stop()
        eb.point_celery_at()
        eb.close_django_connections()
        postgres.destroy()


def main(argv=None) -> int:
    args = parse_args(argv)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        return eb.run_main(run, args)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
