"""Scale: the hot paths on an empty database and on one holding a million instances.

    .venv/bin/python bench/scale.py [--finished 1000000] [--sleeping 100000] [--tenants 1]
        [--samples 200] [--pages 50] [--sleepers 10000] [--spread-seconds 600]
        [--lead-seconds N] [--workers 1] [--concurrency 2] [--clock-interval 0.25]
        [--database-url postgres://postgres@127.0.0.1:5432/stepwell_bench_scale]

Creates (and at the end drops) its own PostgreSQL database and a private Redis, then in
one run:

1. on the empty database (one tenant, its quota, workflows and API token), measures
   start latency (POST /api/v1/workflows/{name}/instances, in process through Django's
   test client, --samples times), the claim (engine.begin: lifecycle.leases.claim and
   what an activation reads) and the record (outcomes.record) of the first step of
   those instances, timed apart in this process (the step itself runs in process, not
   in a jail: it is not what is measured), and the console's instance list page and the
   API's instance list (first page, a cursor's second page, and a status filter),
   --pages requests each;
2. fills the database: --finished complete instances (three do steps each, their
   progress events) and --sleeping instances asleep on a step.sleep thirty days ahead,
   split evenly over --tenants tenants (the measured one first; 1: all in the measured
   tenant, the hardest case). The rows are cloned, in INSERT ... SELECT statements of
   100,000 instances, from template instances that the real engine ran in process, so
   every column is what the application writes; every timestamp of a clone is its
   template's shifted by the clone's age (finished ones over the last 25 days, inside
   the 30 days' retention). Then VACUUM ANALYZE;
3. measures the same figures again, and prints each with the ratio filled/empty;
   goal: every ratio <= 1.2 (issue 18);
4. timer lateness on the filled database: starts W workers and the clock, starts
   --sleepers instances of `step.sleep_until("nap", wake)` then one do step, whose wake
   times are spread evenly over --spread-seconds starting --lead-seconds from now (time
   enough for every first activation to put its instance to sleep), waits for all,
   and prints the sleep steps' finished_at - wake_at p50/p99; goal p99 < 1 s.

Quick run: --finished 100000 --sleeping 10000 --sleepers 1000 --spread-seconds 60.
Exits 0 when a goal is missed (it is a benchmark); non-zero on errors.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench import engine as eb  # noqa: E402
from tests.integration.stack import point_celery_at, wait_until  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/stepwell_bench_scale"
RATIO_GOAL = 1.2
LATENESS_GOAL_MS = 1000.0
CHUNK = 100_000
FINISHED_AGE_DAYS = 25

ONE_STEP = "def run(event, step):\n    return step.do('one', lambda: 1)\n"
THREE_STEPS = (
    "def run(event, step):\n"
    "    a = step.do('fetch', lambda: {'rows': 12, 'source': 'crm'})\n"
    "    b = step.do('transform', lambda: [a['rows'], 2, 3])\n"
    "    return step.do('store', lambda: {'stored': sum(b)})\n"
)
SLEEPS_A_MONTH = (
    "def run(event, step):\n"
    "    step.do('prepare', lambda: {'ok': True})\n"
    "    step.sleep('nap', '30 days')\n"
    "    return step.do('after', lambda: 1)\n"
)
SLEEPS_UNTIL = (
    "def run(event, step):\n"
    "    step.sleep_until('nap', event.payload['wake'])\n"
    "    return step.do('after', lambda: 1)\n"
)


# --- driving the engine in this process --------------------------------------------------


def run_step_in_process(pk: int) -> tuple[float, float] | None:
    """One activation of the instance: (claim seconds, record seconds), None if not claimed.

    The claim is engine.begin (leases.claim and what the activation reads, in its
    transaction); the step runs in this process (tests/execution/inprocess.py), untimed;
    the record is outcomes.record, as a worker calls it."""
    from execution import engine, outcomes
    from tests.execution.inprocess import run_in_process

    began = time.perf_counter()
    activation = engine.begin(pk)
    claimed = time.perf_counter()
    if activation is None:
        return None
    result = run_in_process(activation)
    recording = time.perf_counter()
    outcomes.record(activation, result)
    return claimed - began, time.perf_counter() - recording


def run_until(pk: int, statuses: tuple[str, ...], limit: int = 20) -> None:
    from execution.models import Instance

    for _ in range(limit):
        if Instance.objects.get(pk=pk).status in statuses:
            return
        run_step_in_process(pk)
    raise eb.BenchError(f"template instance {pk} never reached {statuses}")


# --- the set-up --------------------------------------------------------------------------


class Bench:
    """The measured tenant, its workflows, a signed-in console client and an API client."""

    def __init__(self, slug: str):
        from django.contrib.auth import get_user_model
        from django.test import Client

        from tests.factories import make_tenant, make_token, upload

        self.tenant = make_tenant(
            slug,
            f"{slug}-user",
            running_instances=10**8,
            instance_starts_per_minute=10**8,
            concurrent_activations=64,
        )
        self.one_step = upload(self.tenant, "one-step", ONE_STEP).workflow
        token = make_token(self.tenant, "bench")
        self.api = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {token}")
        self.console = Client(HTTP_HOST="localhost")
        self.console.force_login(get_user_model().objects.get(username=f"{slug}-user"))


def timed_get(client, url: str, n: int) -> list[float]:
    for _ in range(3):  # warm-up, uncounted
        check(client.get(url), url)
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        answer = client.get(url)
        samples.append(time.perf_counter() - began)
        check(answer, url)
    return samples


def check(answer, what: str) -> None:
    if answer.status_code not in (200, 201):
        raise eb.BenchError(f"{what}: HTTP {answer.status_code}: {answer.content[:300]!r}")


GOALS = (
    "start (API POST)",
    "claim (engine.begin)",
    "record (outcomes.record)",
    "console instance list",
    "API instance list",
)


def measure_round(bench: Bench, starts: int, pages: int, into: dict) -> None:
    """One round of every figure on the database this process is connected to now."""
    from execution.models import Instance

    url = f"/api/v1/workflows/{bench.one_step.name}/instances"
    for _ in range(3):  # warm-up, uncounted
        check(bench.api.post(url, {}, content_type="application/json"), url)
    samples, keys = [], []
    for _ in range(starts):
        began = time.perf_counter()
        answer = bench.api.post(url, {}, content_type="application/json")
        samples.append(time.perf_counter() - began)
        check(answer, url)
        keys.append(answer.json()["id"])
    into.setdefault("start (API POST)", []).extend(samples)
    pks = Instance.objects.filter(tenant=bench.tenant, key__in=keys).values_list("pk", flat=True)
    for pk in pks:
        timed = run_step_in_process(pk)
        if timed is None:
            raise eb.BenchError(f"instance {pk} was not claimed")
        into.setdefault("claim (engine.begin)", []).append(timed[0])
        into.setdefault("record (outcomes.record)", []).append(timed[1])

    cursor = bench.api.get("/api/v1/instances?limit=50").json()["next_cursor"]
    for name, client, page in (
        ("console instance list", bench.console, "/instances/"),
        ("API instance list", bench.api, "/api/v1/instances?limit=50"),
        ("console list, status=running", bench.console, "/instances/?status=running"),
        ("API list, status=running", bench.api, "/api/v1/instances?limit=50&status=running"),
        ("API list, second page", bench.api, f"/api/v1/instances?limit=50&cursor={cursor}"),
    ):
        into.setdefault(name, []).extend(timed_get(client, page, pages))


def use_database(database_url: str) -> None:
    """Point this process's Django connection at another database of the same server."""
    from django.db import connection, connections

    connections.close_all()
    connection.close_pool()  # the pool keeps connections to the database it was made for
    connection.settings_dict["NAME"] = eb.admin_url(database_url)[1]


def measure(benches: dict, args) -> dict:
    """Every figure on both databases, in --rounds rounds that alternate which goes
    first, so that the load of a shared machine falls on both alike."""
    figures = {url: {} for url in benches}
    rounds = args.rounds
    for url, bench in benches.items():
        # Full pages from the first round on (the console shows 100 rows): uncounted.
        use_database(url)
        url_of_starts = f"/api/v1/workflows/{bench.one_step.name}/instances"
        for _ in range(110):
            check(bench.api.post(url_of_starts, {}, content_type="application/json"), url)
    for r in range(rounds):
        order = list(benches) if r % 2 == 0 else list(reversed(benches))
        for url in order:
            use_database(url)
            eb.say(f"round {r + 1}/{rounds}: {eb.admin_url(url)[1]}")
            measure_round(benches[url], args.samples // rounds, args.pages // rounds, figures[url])
    return figures


# --- the fill ----------------------------------------------------------------------------


def template(tenant, name: str, code: str, statuses: tuple[str, ...]) -> int:
    """An instance of `code` that the engine ran, in this process, to one of `statuses`."""
    from execution.workflows import start_instance
    from tests.factories import upload

    workflow = upload(tenant, name, code).workflow
    instance, _ = start_instance(workflow, payload={"order": 1, "note": "template"})
    run_until(instance.pk, statuses)
    return instance.pk


def cloned_columns(model, source: str, overrides: dict[str, str], shift: str) -> tuple[str, str]:
    """The column list and the SELECT list of an INSERT ... SELECT that clones `model`'s
    rows from `source`: every column as it is but the primary key (left out), those in
    `overrides` (SQL by column), and every timestamp, moved by the SQL interval `shift`."""
    from django.db import connection

    qn = connection.ops.quote_name
    names, values = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        names.append(qn(field.column))
        if field.column in overrides:
            values.append(overrides[field.column])
        elif field.get_internal_type() == "DateTimeField":
            values.append(f"{source}.{qn(field.column)} + {shift}")
        else:
            values.append(f"{source}.{qn(field.column)}")
    return ", ".join(names), ", ".join(values)


def clone_statements(template_pk: int, lo: int, n: int, age_seconds: float, prefix: str):
    """INSERTs of n clones of the template instance (keys prefix + md5, ages spread evenly
    over age_seconds), then of its steps and its progress events for every instance whose
    id is above `lo` (the clones just made). Every timestamp moves by the clone's age."""
    from django.db import connection

    from execution.models import Instance, ProgressEvent, Step

    qn = connection.ops.quote_name
    instances = qn(Instance._meta.db_table)
    age = f"((g - {lo}) * {age_seconds / max(n, 1):.6f} * interval '1 second')"
    cols, vals = cloned_columns(
        Instance,
        "t",
        {"key": f"'{prefix}' || md5('{prefix}' || g)"},
        f"(now() - t.created_at - {age})",
    )
    yield (
        f"INSERT INTO {instances} ({cols}) SELECT {vals} FROM {instances} t, "
        f"generate_series({lo + 1}, {lo + n}) g WHERE t.id = {template_pk}"
    )
    shift = "(i.created_at - t.created_at)"
    for model in (Step, ProgressEvent):
        table = qn(model._meta.db_table)
        cols, vals = cloned_columns(model, "s", {"instance_id": "i.id"}, shift)
        yield (
            f"INSERT INTO {table} ({cols}) SELECT {vals} FROM {instances} i "
            f"JOIN {table} s ON s.instance_id = {template_pk} "
            f"JOIN {instances} t ON t.id = {template_pk} "
            f"WHERE i.id > %(after)s AND i.key LIKE '{prefix}%%'"
        )


def fill(args, tenants: list) -> dict:
    from django.db import connection, transaction

    from execution.models import Instance

    counts = {"instances": 0}
    for index, tenant in enumerate(tenants):
        done_pk = template(tenant, "filled", THREE_STEPS, (Instance.Status.COMPLETE,))
        asleep_pk = template(tenant, "filled-sleeper", SLEEPS_A_MONTH, (Instance.Status.SLEEPING,))
        share = [
            (done_pk, args.finished // len(tenants), FINISHED_AGE_DAYS * 86400, "f"),
            (asleep_pk, args.sleeping // len(tenants), 86400, "s"),
        ]
        for pk, total, age, kind in share:
            made = 0
            while made < total:
                n = min(CHUNK, total - made)
                prefix = f"{kind}{index}-{made // CHUNK}-"
                with transaction.atomic(), connection.cursor() as cursor:
                    # Clones of valid rows refer to rows that exist: the foreign-key
                    # triggers (checked at commit, one probe per row and key) are skipped,
                    # most of the fill's time otherwise.
                    cursor.execute("SET LOCAL session_replication_role = replica")
                    cursor.execute(f"SELECT coalesce(max(id), 0) FROM {Instance._meta.db_table}")
                    after = cursor.fetchone()[0]
                    for statement in clone_statements(pk, made, n, age, prefix):
                        cursor.execute(statement, {"after": after})
                made += n
                counts["instances"] += n
                what = "finished" if kind == "f" else "sleeping"
                eb.say(f"  tenant {tenant.slug}: {made:,}/{total:,} {what}")
    with connection.cursor() as cursor:
        for table in ("instance", "step", "progressevent"):
            cursor.execute(f"SELECT count(*) FROM execution_{table}")
            counts[table] = cursor.fetchone()[0]
    eb.say("VACUUM ANALYZE")
    connection.ensure_connection()
    connection.connection.autocommit = True
    with connection.cursor() as cursor:
        for table in ("instance", "step", "progressevent", "event"):
            cursor.execute(f"VACUUM ANALYZE execution_{table}")
    return counts


# --- timers ------------------------------------------------------------------------------


def phase_timers(bench: Bench, args) -> dict:
    from execution.models import Instance, Step
    from execution.workflows import start_instance
    from tests.factories import upload

    workflow = upload(bench.tenant, "timer", SLEEPS_UNTIL).workflow
    gap = args.spread_seconds / max(args.sleepers - 1, 1)
    if args.sleepers_from == "clones":
        # One sleeper the workers put to sleep, cloned asleep with its wake times spread:
        # the timers are the engine's, without the hour of first activations before them.
        template_pk = start_instance(workflow, payload={"wake": "2100-01-01T00:00:00Z"})[0].pk
        wait_until_asleep(template_pk)
        lead = args.lead_seconds if args.lead_seconds is not None else 30
        first_wake = time.time() + lead
        eb.say(
            f"timers: cloning {args.sleepers} sleepers, wake times from {lead:.0f} s ahead, "
            f"evenly over {args.spread_seconds} s"
        )
        pks = clone_sleepers(template_pk, args.sleepers, first_wake, gap)
    else:
        # Every sleeper's first activation (the one that puts it to sleep) should be over
        # before the first wake, or the wakes queue behind the starts: at 12 starts/s (W=1x2
        # on a busy 2-core machine) 10,000 sleepers take 850 s to fall asleep.
        lead = args.lead_seconds if args.lead_seconds is not None else max(30, args.sleepers / 10)
        first_wake = time.time() + lead
        eb.say(
            f"timers: starting {args.sleepers} sleepers, wake times from {lead:.0f} s ahead, "
            f"evenly over {args.spread_seconds} s"
        )
        pks = []
        for i in range(args.sleepers):
            wake = datetime.fromtimestamp(first_wake + i * gap, UTC).isoformat()
            pks.append(start_instance(workflow, payload={"wake": wake})[0].pk)
    asleep_after = None
    deadline = time.monotonic() + lead + args.spread_seconds + 300
    while True:
        rows = Instance.objects.filter(pk__in=pks)
        ended = rows.filter(status__in=Instance.TERMINAL_STATUSES).count()
        if asleep_after is None and rows.filter(
            status=Instance.Status.SLEEPING
        ).count() + ended == len(pks):
            asleep_after = time.time() - (first_wake - lead)
            eb.say(f"timers: all asleep {asleep_after:.0f} s after the first start")
        if ended == len(pks):
            break
        if time.monotonic() > deadline:
            raise eb.BenchError(f"timers: {len(pks) - ended} of {len(pks)} sleepers had not ended")
        time.sleep(2)
    bad = rows.exclude(status=Instance.Status.COMPLETE).first()
    if bad is not None:
        raise eb.BenchError(f"timers: a sleeper ended {bad.status}: {bad.error}")
    naps = list(Step.objects.filter(instance_id__in=pks, kind=Step.Kind.SLEEP))
    # A timer counts if it was set before it was due (the sleep step recorded before its
    # wake time); one set after, when the workers fell behind the starts, is counted apart.
    timely = [s for s in naps if s.started_at < s.wake_at]
    lateness = [(s.finished_at - s.wake_at).total_seconds() for s in timely]
    if not lateness:
        raise eb.BenchError("timers: no sleeper fell asleep before its wake time")
    return {
        "lateness": eb.dist(lateness),
        "set_late": len(naps) - len(timely),
        "lead": lead,
        "asleep_after": asleep_after,
    }


def wait_until_asleep(pk: int) -> None:
    from execution.models import Instance

    wait_until(
        lambda: Instance.objects.get(pk=pk).status == Instance.Status.SLEEPING,
        60,
        what="the template sleeper to fall asleep",
    )


def clone_sleepers(template_pk: int, n: int, first_wake: float, gap: float) -> list[int]:
    """n clones of the sleeping template, as the engine left it (its sleep step and its
    events), each due at its own wake time: clone i wakes at first_wake + i * gap. Its
    payload and its step's recorded `until` stay the template's, so that a replay finds
    the same call; the wake time the engine goes by is the step's wake_at (and the
    instance's next_run_at, which the clock reads)."""
    from django.db import connection, transaction

    from execution.models import Instance, ProgressEvent, Step

    qn = connection.ops.quote_name
    instances = qn(Instance._meta.db_table)
    wake = f"(to_timestamp({first_wake:.6f}) + (g - 1) * {gap:.6f} * interval '1 second')"
    shift = "(now() - t.created_at)"
    prefix = f"t{int(first_wake)}-"

    cols, vals = cloned_columns(
        Instance, "t", {"key": f"'{prefix}' || g", "next_run_at": wake}, shift
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT coalesce(max(id), 0) FROM {instances}")
        after = cursor.fetchone()[0]
        cursor.execute(
            f"INSERT INTO {instances} ({cols}) SELECT {vals} FROM {instances} t, "
            f"generate_series(1, {n}) g WHERE t.id = {template_pk}"
        )
        for model, overrides in (
            (Step, {"instance_id": "i.id", "wake_at": "i.next_run_at"}),
            (ProgressEvent, {"instance_id": "i.id"}),
        ):
            table = qn(model._meta.db_table)
            cols, vals = cloned_columns(model, "s", overrides, "(i.created_at - t.created_at)")
            cursor.execute(
                f"INSERT INTO {table} ({cols}) SELECT {vals} FROM {instances} i "
                f"JOIN {table} s ON s.instance_id = {template_pk} "
                f"JOIN {instances} t ON t.id = {template_pk} "
                f"WHERE i.id > %s AND i.key LIKE %s",
                [after, prefix + "%"],
            )
        cursor.execute(
            f"SELECT id FROM {instances} WHERE id > %s AND key LIKE %s ORDER BY id",
            [after, prefix + "%"],
        )
        return [row[0] for row in cursor.fetchall()]


# --- the report --------------------------------------------------------------------------


def report(args, empty: dict, filled: dict, counts: dict, fill_seconds: float, tim) -> None:
    print()
    print(f"machine:    {eb.machine()}")
    print(f"date:       {datetime.now(UTC).isoformat(timespec='seconds')}")
    print(f"load avg:   {eb.load_average()} (1/5/15 min) at the report")
    print(
        f"filled:     {counts['instance']:,} instances ({args.finished:,} finished, "
        f"{args.sleeping:,} sleeping, over {args.tenants} tenant(s)), {counts['step']:,} steps, "
        f"{counts['progressevent']:,} progress events, in {fill_seconds:.0f} s "
        "(with VACUUM ANALYZE)"
    )
    print()
    print(f"{'figure (p50, ms)':40} {'empty':>9} {'filled':>9} {'ratio':>7}  goal")
    print("-" * 84)
    misses = 0
    for name, before in empty.items():
        a = eb.ms(eb.percentile(before, 0.5))
        b = eb.ms(eb.percentile(filled[name], 0.5))
        ratio = b / a
        verdict = ""
        if name in GOALS:
            verdict = f"{eb.verdict(ratio <= RATIO_GOAL)} (<= {RATIO_GOAL:g}x)"
            misses += ratio > RATIO_GOAL
        print(f"{name:40} {a:9.2f} {b:9.2f} {ratio:7.2f}  {verdict}")
    print("-" * 84)
    print(
        f"samples per database: {args.samples} starts, claims and records, {args.pages} "
        f"requests per page, in {args.rounds} alternating rounds"
    )
    if tim is not None:
        d = tim["lateness"]
        ok = d["p99"] < LATENESS_GOAL_MS
        print(
            f"timer lateness, {d['n']} sleepers over {args.spread_seconds} s "
            f"(finished_at - wake_at): p50 {d['p50']:.0f} ms, p95 {d['p95']:.0f} ms, "
            f"p99 {d['p99']:.0f} ms, max {d['max']:.0f} ms  "
            f"{eb.verdict(ok)} (p99 < {LATENESS_GOAL_MS:g} ms)"
        )
        print(
            f"  {tim['set_late']} sleepers fell asleep after their wake time (not counted); "
            f"all asleep {tim['asleep_after'] or -1:.0f} s after the first start "
            f"(first wake at {tim['lead']:.0f} s); W={args.workers}x{args.concurrency}, "
            f"clock every {args.clock_interval} s"
        )
    late = tim is not None and tim["lateness"]["p99"] >= LATENESS_GOAL_MS
    print(f"goals missed: {misses + late}")


# --- main --------------------------------------------------------------------------------


def plain_static_files() -> None:
    """The pages link their static files by name: no collectstatic manifest to read (the
    pages' queries are measured, not the static files)."""
    from django.conf import settings

    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def run(args) -> None:
    if args.sleepers and os.geteuid() != 0:
        raise eb.BenchError("the workers run nsjail: run the benchmark as root")
    empty_url = args.database_url + "_empty"
    stack = eb.BenchStack(args.database_url, args.clock_interval)
    made = []
    try:
        for url in (empty_url, args.database_url):
            eb.say(f"creating database {eb.admin_url(url)[1]} and migrating")
            eb.create_database(url)
            made.append(url)
            env = dict(os.environ, DATABASE_URL=url, DEBUG="false")
            env.setdefault("SECRET_KEY", uuid.uuid4().hex * 2)
            eb.migrate(env)
        eb.configure_django(args.database_url, stack.redis.url)
        plain_static_files()
        stack.redis.start()
        point_celery_at(stack.redis.url)

        from tests.factories import make_tenant

        benches = {}
        for url in (empty_url, args.database_url):
            use_database(url)
            benches[url] = Bench("scale")
        others = [make_tenant(f"fill{i}", f"fill{i}-user") for i in range(1, args.tenants)]
        eb.say(f"filling: {args.finished:,} finished and {args.sleeping:,} sleeping instances")
        began = time.monotonic()
        counts = fill(args, [benches[args.database_url].tenant, *others])
        fill_seconds = time.monotonic() - began
        eb.say(f"filled in {fill_seconds:.0f} s: {counts}")

        figures = measure(benches, args)
        report(args, figures[empty_url], figures[args.database_url], counts, fill_seconds, None)
        use_database(args.database_url)
        tim = None
        if args.sleepers:
            # The starts measured sent messages for instances of both databases: none of
            # them is the timers' business.
            redis.Redis.from_url(stack.redis.url).flushdb()
            eb.say(f"starting {args.workers} x {args.concurrency} workers and the clock")
            for _ in range(args.workers):
                stack.start_worker(args.concurrency)
            stack.start_clock()
            tim = phase_timers(benches[args.database_url], args)
            report(args, figures[empty_url], figures[args.database_url], counts, fill_seconds, tim)
    except Exception:
        if stack.workers:
            print(stack.logs(), file=sys.stderr)
        raise
    finally:
        stack.stop()
        point_celery_at()
        eb.close_django_connections()
        for url in made if not args.keep else ():
            eb.drop_database(url)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--sleeping", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=1, help="the fill is split over them")
    parser.add_argument("--samples", type=int, default=200, help="starts, claims and records")
    parser.add_argument("--pages", type=int, default=50, help="requests per list page")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the databases")
    parser.add_argument("--sleepers", type=int, default=10_000, help="0: no timer phase")
    parser.add_argument("--spread-seconds", type=float, default=600)
    parser.add_argument(
        "--lead-seconds",
        type=float,
        default=None,
        help="to the first wake (30 s with clones, sleepers/10 with starts)",
    )
    parser.add_argument(
        "--sleepers-from",
        choices=("clones", "starts"),
        default="clones",
        help="clones of one sleeper the workers put to sleep (default), or one start each",
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--clock-interval", type=float, default=0.25)
    parser.add_argument("--keep", action="store_true", help="keep the database at the end")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    args = parser.parse_args(argv)
    if args.tenants < 1 or args.pages < 1:
        parser.error("--tenants and --pages must be at least 1")
    if args.samples < 110 or args.rounds < 1:
        # The empty database's pages must be full too: the console shows 100 rows.
        parser.error("--samples must be at least 110, --rounds at least 1")
    return args


def main(argv=None) -> int:
    return eb.run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
