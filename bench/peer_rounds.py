"""bench/peers.py's variants (a2), (c) and (d) measured in interleaved rounds.

Run one after the other, each variant's few seconds of latency and throughput fell on
whatever the machine did then: on an idle 2-core VM the DBOS p50 moved from 30 to 44 ms
between runs a minute apart, and a run of 10 samples could not say which variant was
faster. Here every variant stays up for the whole run (idle workers wait on the broker,
DBOS's threads on its database), and each round runs every variant's latency samples and
one throughput batch in turn, in an order that rotates from round to round, so that the
machine's moods fall on all of them alike (DBOS, which runs in this process, is
launched for its turns only). Each turn begins with W uncounted workflows. Latency:
p50/p95 over all rounds' samples; throughput: the median of the rounds' steps/s.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from bench import engine


class StepwellWarm:
    """(a2): the Stepwell stack's workers, the tenant in warm mode."""

    def __init__(self, tenant, args, label: str) -> None:
        from execution.workflows import upload_version
        from tenants.models import Quota

        self.engine = engine
        self.args = args
        self.label = label
        Quota.objects.filter(tenant=tenant).update(sandbox_mode="warm")
        code = engine.steps_workflow(args.steps) + f"# {label}\n"
        self.workflow = upload_version(tenant, "peers-warm", code).workflow

    def warm_up(self, w: int) -> None:
        self.engine.wait_done(self.engine.start(self.workflow, w), self.args.timeout, "warm-up")

    def latency(self) -> float:
        pks = self.engine.start(self.workflow, 1)
        (row,) = self.engine.wait_done(pks, self.args.timeout, f"{self.label} latency")
        return (row.finished_at - row.created_at).total_seconds()

    def throughput(self, n: int) -> float:
        pks = self.engine.start(self.workflow, n)
        rows = self.engine.wait_done(pks, self.args.timeout, f"{self.label} throughput")
        return (max(i.finished_at for i in rows) - min(i.created_at for i in rows)).total_seconds()


class CeleryChain:
    """(c): M plain Celery tasks chained, on chain workers that stay up."""

    def __init__(self, args) -> None:
        from bench import celery_chain

        self.peer = celery_chain
        self.args = args

    def warm_up(self, w: int) -> None:
        for _ in range(w):
            self.latency()

    def latency(self) -> float:
        started = time.time()
        done = self.peer.workflow(self.args.steps).apply_async()
        return done.get(timeout=self.args.timeout)["at"] - started

    def throughput(self, n: int) -> float:
        started = time.time()
        pending = [self.peer.workflow(self.args.steps).apply_async() for _ in range(n)]
        return max(p.get(timeout=self.args.timeout)["at"] for p in pending) - started


class DbosTransact:
    """(d): M DBOS steps in a DBOS workflow, in this process. Launched for each of its
    turns and destroyed after it: its threads (queue poller, notification listener) run in
    this process, which starts and waits for the other variants' workflows."""

    def __init__(self, args, database_url: str, w: int) -> None:
        self.url = database_url.replace("postgres://", "postgresql://", 1)
        self.steps = args.steps
        self.w = w
        self.m_steps = None

    def open(self) -> None:
        from dbos import DBOS

        DBOS(
            config={"name": "stepwell-bench-peers", "system_database_url": self.url,
                    "log_level": "WARNING"}
        )  # fmt: skip
        steps = self.steps

        @DBOS.step()
        def trivial(i: int) -> int:
            return i

        @DBOS.workflow()
        def m_steps() -> int:
            total = 0
            for i in range(steps):
                total += trivial(i)
            return total

        self.m_steps = m_steps
        DBOS.launch()

    def close(self) -> None:
        from dbos import DBOS

        if self.m_steps is not None:
            DBOS.destroy(destroy_registry=True)
            self.m_steps = None

    def warm_up(self, w: int) -> None:
        for _ in range(w):
            self.latency()

    def latency(self) -> float:
        started = time.perf_counter()
        self.m_steps()
        return time.perf_counter() - started

    def throughput(self, n: int) -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.w) as pool:
            list(pool.map(lambda _: self.m_steps(), range(n)))
        return time.perf_counter() - started


def interleaved(variants: dict, args, rounds: int, say) -> dict[str, dict]:
    """{label: {"latencies": [...], "rates": [...]}}: every variant in every round, the
    order rotated by one each round."""
    labels = list(variants)
    w = args.workers * args.concurrency
    taken = {label: {"latencies": [], "rates": []} for label in labels}
    for r in range(rounds):
        order = labels[r % len(labels) :] + labels[: r % len(labels)]
        say(f"round {r + 1}/{rounds}: {', '.join(order)}")
        for label in order:
            variant = variants[label]
            opened = getattr(variant, "open", None)
            if opened:
                opened()
            try:
                variant.warm_up(w)  # not counted: imports, connections, jails
                taken[label]["latencies"] += [variant.latency() for _ in range(args.sequential)]
                elapsed = variant.throughput(args.instances)
            finally:
                getattr(variant, "close", lambda: None)()
            taken[label]["rates"].append(args.instances * args.steps / elapsed)
    return taken


def median(values: list[float]) -> float:
    return statistics.median(values)
