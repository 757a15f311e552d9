"""What the staff overview shows: the review queue, the work waiting per tenant, sandbox
failures, warm jails on this machine and the slowest tenants.

Every query is bounded by an index or a LIMIT, since the page must stay cheap on a
platform with millions of steps: the review queue by `version_review_queue`, the work
per tenant and the instances counting sandbox failures by `instance_dispatch`, recent
errors by `instance_errored`, step durations by the primary key (the newest
STEP_SAMPLE steps only).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.db.models import Aggregate, Count, F, FloatField, Func, Min, Q, Sum

from execution.models import CodeVersion, Instance, Step
from execution.sandbox.cgroups import Layout
from execution.sandbox.config import SandboxSetupError

WINDOW = timedelta(hours=1)
TENANT_ROWS = 50
FAILURE_ROWS = 20
SLOWEST_TENANTS = 10
# Step durations come from at most this many of the newest steps (by id, so through the
# primary key): no scan of the steps table, however long its history.
STEP_SAMPLE = 50_000
# An instance in a run of sandbox failures is due again within seconds of each failure
# (outcomes.SANDBOX_RETRY), or is held by the worker trying it: either way its
# next_run_at is at most this far ahead, which keeps the query on instance_dispatch.
RETRY_HORIZON = timedelta(minutes=1)
# How warm.py names a warm jail's job cgroup: job-<worker pid>-warm<n>.
WARM_JAIL_NAME = re.compile(r"job-(\d+)-warm\d+")


@dataclass(frozen=True)
class ReviewQueue:
    length: int
    oldest_at: datetime | None

    def age(self, now: datetime) -> timedelta | None:
        return now - self.oldest_at if self.oldest_at else None


def review_queue() -> ReviewQueue:
    waiting = CodeVersion.objects.filter(status=CodeVersion.Status.PENDING_REVIEW)
    totals = waiting.aggregate(length=Count("pk"), oldest_at=Min("created_at"))
    return ReviewQueue(**totals)


def work_per_tenant(now: datetime) -> list[dict]:
    """Per tenant, the instances running and those due that no worker holds, with the
    oldest due time: the tenants with most waiting first."""
    held = ~Q(lease_owner="") & Q(lease_expires_at__gte=now)
    running = Q(status=Instance.Status.RUNNING)
    due = Q(next_run_at__lte=now) & ~held
    return list(
        Instance.objects.filter(status__in=Instance.ACTIVE_STATUSES)
        .filter(running | Q(next_run_at__lte=now))
        .values("tenant_id", "tenant__slug")
        .annotate(
            running=Count("pk", filter=running),
            due=Count("pk", filter=due),
            oldest_due=Min("next_run_at", filter=due),
        )
        .order_by("-due", "-running", "tenant__slug")[:TENANT_ROWS]
    )


@dataclass(frozen=True)
class SandboxFailures:
    """No row records each sandbox failure with its time, so "the last hour" is read from
    what is recorded: the instances that ended with a SandboxFailure error in the window,
    and the active instances whose current run of failures has not ended yet."""

    errored: int
    errored_rows: list[dict]
    counting: int
    counted_failures: int
    counting_rows: list[dict]


ROW_FIELDS = ("key", "tenant__slug", "workflow__name", "sandbox_failures", "finished_at", "error")


def sandbox_failures(now: datetime) -> SandboxFailures:
    errored = Instance.objects.filter(
        status=Instance.Status.ERRORED,
        finished_at__gte=now - WINDOW,
        error__type="SandboxFailure",
    )
    counting = Instance.objects.filter(
        status__in=Instance.ACTIVE_STATUSES,
        next_run_at__lte=now + RETRY_HORIZON,
        sandbox_failures__gt=0,
    )
    totals = counting.aggregate(n=Count("pk"), failures=Sum("sandbox_failures"))
    return SandboxFailures(
        errored=errored.count(),
        errored_rows=list(errored.order_by("-finished_at").values(*ROW_FIELDS)[:FAILURE_ROWS]),
        counting=totals["n"],
        counted_failures=totals["failures"] or 0,
        counting_rows=list(
            counting.order_by("-sandbox_failures", "pk").values(*ROW_FIELDS)[:FAILURE_ROWS]
        ),
    )


class Percentile(Aggregate):
    """PostgreSQL's percentile_cont: the value below which `fraction` of the rows fall."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, fraction: float, **extra):
        super().__init__(expression, fraction=float(fraction), output_field=FloatField(), **extra)


def slowest_tenants(now: datetime) -> list[dict] | None:
    """The tenants whose `do` steps took longest in the window, by p95 then p50 of their
    duration in seconds; None on a database without percentile_cont (SQLite)."""
    if connection.vendor != "postgresql":
        return None
    newest = Step.objects.order_by("-pk").values_list("pk", flat=True)
    floor = next(iter(newest[STEP_SAMPLE - 1 : STEP_SAMPLE]), 0)
    seconds = Func(
        F("finished_at") - F("started_at"),
        template="EXTRACT(EPOCH FROM %(expressions)s)",
        output_field=FloatField(),
    )
    return list(
        Step.objects.filter(
            pk__gte=floor,
            kind=Step.Kind.DO,
            started_at__gte=now - WINDOW,
            finished_at__isnull=False,
        )
        .values("instance__tenant__slug")
        .annotate(
            steps=Count("pk"),
            p50=Percentile(seconds, 0.5),
            p95=Percentile(seconds, 0.95),
        )
        .order_by("-p95", "-p50")[:SLOWEST_TENANTS]
    )


@dataclass
class WarmJails:
    """Warm jails live inside the worker processes; the web process sees them only as the
    job cgroups they run in, and only on its own machine."""

    host: str
    workers: dict[int, int] = field(default_factory=dict)  # worker pid: warm jails
    unavailable: str = ""

    @property
    def total(self) -> int:
        return sum(self.workers.values())


def warm_jails(cgroup_root: str | Path | None = None) -> WarmJails:
    jails = WarmJails(host=socket.gethostname())
    try:
        layout = Layout.detect(cgroup_root or settings.STEPWELL_CGROUP_ROOT)
    except SandboxSetupError as exc:
        jails.unavailable = str(exc)
        return jails
    parent = layout.job_path("-").parent
    try:
        names = [entry.name for entry in parent.iterdir() if entry.is_dir()]
    except OSError as exc:
        jails.unavailable = f"cannot list {parent}: {exc.strerror}"
        return jails
    for name in names:
        match = WARM_JAIL_NAME.fullmatch(name)
        if match:
            pid = int(match[1])
            jails.workers[pid] = jails.workers.get(pid, 0) + 1
    return jails
