"""Where a warm step's time goes: the engine run in this process, its parts timed.

    .venv/bin/python bench/step_profile.py [--instances 20] [--steps 10] [--mode warm]
        [--database-url postgres://postgres@127.0.0.1:5432/stepwell_bench_profile]

No Celery: the benchmark starts M-step instances of the trivial workflow of `make bench`
and runs `execution.engine.advance` on each, one after another, in its own process (as a
pool process does), with the engine's parts wrapped in timers: the claim, the secrets
read, the sandbox run (its step's own duration as the runtime reports it, and the rest:
the job sent, fork, replay, the result read), the record (the completion statement with
its commit, the end statement, the webhook check, the waiting-parents query, the fill,
the publisher's send), the watch and what is left. A statement's time on the server is
not split from its round trip and commit here: point --database-url at a cluster with
pg_stat_statements for that (bench/README.md). Prints the mean per activation and per
step of each part. A benchmark tool: it asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import engine as eb  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/stepwell_bench_profile"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"

spent: collections.Counter = collections.Counter()
calls: collections.Counter = collections.Counter()


def timed(owner, name: str, label: str) -> None:
    """Wrap owner.name so that its time (and calls) add up under `label`."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - began
            calls[label] += 1

    setattr(owner, name, wrapper)


def instrument(sent: list[int]) -> None:
    from execution import dispatch, engine, fast_records, outcomes
    from execution.lifecycle import due, notices, records, states

    # No broker: what a fill sends is collected, and run here in turn.
    dispatch.enqueue = sent.append
    timed(engine, "advance", "task: engine.advance, all")
    timed(engine.leases, "claim", "claim: lease statements")
    timed(engine, "prepare_activation", "claim: prepare_activation")
    timed(engine, "values_for", "claim: secrets read")
    timed(engine, "begin", "claim: begin, all (with its commit)")
    timed(engine, "run_sandbox", "sandbox: run, all")
    timed(engine, "watch", "watch: made")
    timed(outcomes, "record", "record: outcomes.record, all")
    timed(fast_records, "store_completion_in_one_statement", "record: completion statement")
    timed(records, "finish_in_one_statement", "record: end statement")
    timed(notices, "listened", "record: webhook check (listened)")
    timed(states, "wake_waiting_parents", "record: waiting parents query")
    timed(due, "fill", "record: fill")
    timed(fast_records, "send", "record: publish (step)")
    timed(records, "send", "record: publish (end)")
    timed(engine, "observe", "metrics: observe")


def step_seconds_of(pks: list[int]) -> float:
    """The steps' own time as the runtime measured it (Step.started_at -> finished_at)."""
    from execution.models import Step

    total = 0.0
    for started, finished in Step.objects.filter(instance_id__in=pks).values_list(
        "started_at", "finished_at"
    ):
        total += (finished - started).total_seconds()
    return total


def run(args) -> None:
    os.environ.setdefault("STEPWELL_LEASE_SECONDS", "10")
    eb.create_database(args.database_url)
    try:
        env = dict(os.environ, DATABASE_URL=args.database_url, DEBUG="false")
        env.setdefault("SECRET_KEY", "bench-step-profile-" + "x" * 40)
        os.environ["SECRET_KEY"] = env["SECRET_KEY"]
        eb.migrate(env)
        eb.configure_django(args.database_url, args.redis_url)
        profile(args)
    finally:
        eb.close_django_connections()
        eb.drop_database(args.database_url)


def profile(args) -> None:
    from execution import engine
    from execution.sandbox import prepare
    from execution.workflows import upload_version
    from tenants.models import Quota
    from tests.factories import make_tenant

    prepare()
    sent: list[int] = []
    tenant = make_tenant("bench", "bench-user", steps_per_instance=args.steps + 10)
    Quota.objects.filter(tenant=tenant).update(sandbox_mode=args.mode)
    workflow = upload_version(tenant, "profile", eb.steps_workflow(args.steps)).workflow
    instrument(sent)
    for label in ("warm-up", "measured"):
        spent.clear()
        calls.clear()
        began = time.perf_counter()
        pks = []
        for _ in range(args.instances if label == "measured" else 3):
            pks += eb.start(workflow, 1)
            while sent:
                engine.advance(sent.pop(0))
        wall = time.perf_counter() - began
    eb.wait_done(pks, 10, "profile")
    activations = calls["sandbox: run, all"]
    steps = args.instances * args.steps
    step_own = step_seconds_of(pks)
    print(
        f"load avg {eb.load_average()}; {args.instances} instances x {args.steps} steps, "
        f"{activations} activations, mode {args.mode}, {wall:.2f} s wall "
        f"({1000 * wall / steps:.2f} ms per step, starts included)"
    )
    print(f"{'part':55} {'calls':>6} {'ms/call':>8} {'ms/step':>8}")
    for label in sorted(spent):
        print(
            f"{label:55} {calls[label]:6d} {1000 * spent[label] / calls[label]:8.3f} "
            f"{1000 * spent[label] / steps:8.3f}"
        )
    print(
        f"{'sandbox: the steps themselves (step rows)':55} {'':6} {'':8} "
        f"{1000 * step_own / steps:8.3f}"
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--mode", default="warm", choices=eb.MODES)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return eb.run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
