"""Fair scheduling: how long tenant B waits for its first step while tenant A floods.

    .venv/bin/python bench/fairness.py [--flood 300] [--probes 5]

In one run: B's start latency (instance created -> first step recorded) on an idle
platform, then the same while A has hundreds of instances ready, each tenant capped
at its quota's concurrent activations. Real workers, nsjail, PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import engine as eb  # noqa: E402

WORK = """
def run(event, step):
    return [step.do(f"work {i}", lambda i=i: i) for i in range(3)]
"""


def first_step_latency(workflow) -> float:
    from execution.models import ProgressEvent
    from execution.workflows import start_instance

    instance, _ = start_instance(workflow)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        event = (
            ProgressEvent.objects.filter(instance=instance, type="step.completed")
            .order_by("seq")
            .first()
        )
        if event is not None:
            return (event.created_at - instance.created_at).total_seconds()
        time.sleep(0.02)
    raise eb.BenchError("tenant B's first step did not run within 60 s")


def probe(workflow, n: int) -> dict:
    return eb.dist([first_step_latency(workflow) for _ in range(n)])


def run(args) -> None:
    stack = eb.BenchStack(args.database_url, 0.25)
    made = False
    try:
        eb.say("creating the bench database")
        eb.create_database(args.database_url)
        made = True
        env = dict(os.environ, DATABASE_URL=args.database_url, DEBUG="false")
        env.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
        eb.migrate(env)
        eb.configure_django(args.database_url, stack.redis.url)
        eb.say("starting redis, 1 x 2 workers and the clock")
        stack.start(workers=1, concurrency=2)
        eb.point_celery_at(stack.redis.url)

        from execution.models import Instance
        from execution.workflows import start_instance
        from tests.factories import make_tenant, upload

        a = make_tenant("flooder", "a-user", concurrent_activations=args.cap)
        b = make_tenant("quiet", "b-user", concurrent_activations=args.cap)
        flood_wf = upload(a, "flood", WORK).workflow
        probe_wf = upload(b, "probe", WORK).workflow

        eb.say(f"idle platform: {args.probes} instances of tenant B, one at a time")
        idle = probe(probe_wf, args.probes)
        eb.say(f"flood: {args.flood} instances of tenant A, then B again")
        for _ in range(args.flood):
            start_instance(flood_wf)
        time.sleep(2)
        flooded = probe(probe_wf, args.probes)
        left = Instance.objects.filter(tenant=a).exclude(status="complete").count()

        print()
        print(f"machine:    {eb.machine()}")
        print(
            f"parameters: flood {args.flood} x 3-step instances, cap {args.cap} per tenant, "
            f"1 worker x 2 pool processes, {args.probes} probes"
        )
        print(f"{'tenant B: created -> first step recorded':46} {'p50':>9} {'max':>9}")
        print("-" * 66)
        print(f"{'idle platform (baseline)':46} {idle['p50']:8.1f}ms {idle['max']:8.1f}ms")
        ratio = flooded["p50"] / idle["p50"] if idle["p50"] else float("nan")
        print(
            f"{'under tenant A flood':46} {flooded['p50']:8.1f}ms {flooded['max']:8.1f}ms"
            f"   x{ratio:.1f} of idle"
        )
        print(f"tenant A instances still unfinished when B was measured: {left} of {args.flood}")
    finally:
        stack.stop()
        eb.point_celery_at()
        if made:
            eb.close_django_connections()
            eb.drop_database(args.database_url)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=300)
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--cap", type=int, default=4, help="concurrent activations per tenant")
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/stepwell_bench_fair"
    )
    return eb.run_main(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
