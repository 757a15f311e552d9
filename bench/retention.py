"""Retention: how many finished instances (and rows) per second the sweep deletes.

    .venv/bin/python bench/retention.py [--instances 100000] [--with-history 100000]
        [--batch 1000] [--database-url postgres://postgres@127.0.0.1:5432/stepwell_bench_ret]

Creates (and at the end drops) its own PostgreSQL database, inserts the expired
instances in one statement (each of the first --with-history with a step, an event and
a progress event), then times execution.retention.sweep() deleting them all in
batches of --batch, each batch its own transaction. Prints instances/s, rows/s (the
instances and their steps, events and progress events) and the batches' durations.
No workers or Redis: the sweep runs in this process, as the clock runs it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import engine as eb  # noqa: E402


def run(args) -> None:
    made = False
    try:
        eb.say("creating the bench database")
        eb.create_database(args.database_url)
        made = True
        env = dict(os.environ, DATABASE_URL=args.database_url, DEBUG="false")
        env.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
        eb.migrate(env)
        eb.configure_django(
            args.database_url, os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        )

        from django.utils import timezone

        from execution import retention
        from tests.factories import insert_finished_instances, make_tenant

        tenant = make_tenant("retained", "ret-user", retention_days=30)
        eb.say(f"inserting {args.instances} expired instances")
        insert_finished_instances(
            tenant,
            args.instances,
            timezone.now() - timedelta(days=40),
            with_history=args.with_history,
        )
        history = min(args.with_history, args.instances)
        rows = args.instances + 3 * history
        eb.say(f"sweeping in batches of {args.batch}")
        started = time.monotonic()
        swept = retention.sweep(batch=args.batch)
        elapsed = time.monotonic() - started
        batch = eb.dist(swept.seconds)

        print()
        print(f"machine:    {eb.machine()}")
        print(f"load:       {eb.load_average()}")
        print(
            f"parameters: {args.instances} instances ({history} with a step, an event and a "
            f"progress event), batches of {args.batch}"
        )
        print(
            f"deleted:    {swept.deleted} instances, {rows} rows, in {len(swept.batches)} batches"
        )
        print(f"time:       {elapsed:.2f} s")
        print(
            f"rate:       {swept.deleted / elapsed:,.0f} instances/s, {rows / elapsed:,.0f} rows/s"
        )
        print(f"batch:      p50 {batch['p50']:.0f} ms, max {batch['max']:.0f} ms per transaction")
        if swept.deleted != args.instances:
            raise eb.BenchError(f"the sweep deleted {swept.deleted} of {args.instances}")
    finally:
        if made:
            eb.close_django_connections()
            eb.drop_database(args.database_url)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--with-history", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/stepwell_bench_ret"
    )
    return eb.run_main(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
