"""The staff overview's queries, on rows made directly: per-tenant work, the review
queue, sandbox failures, the slowest tenants and warm jails seen through cgroups."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from execution import overview
from execution.models import CodeVersion, Instance, Step
from tests.factories import upload

CODE = "def run(event, step):\n    return step.do('one', lambda: 1)\n"


@pytest.fixture
def now():
    return timezone.now()


def make(tenant, status="queued", **fields) -> Instance:
    version = upload(tenant, "flow", CODE).version
    return Instance.objects.create(
        tenant=tenant, workflow=version.workflow, version=version, status=status, **fields
    )


def by_slug(rows: list[dict], key: str = "tenant__slug") -> dict[str, dict]:
    return {row[key]: row for row in rows}


def test_it_counts_running_and_due_instances_per_tenant(acme, globex, now):
    make(
        acme,
        "running",
        lease_owner="w1",
        lease_expires_at=now + timedelta(seconds=30),
        next_run_at=now - timedelta(seconds=5),
    )
    make(acme, "running")
    make(acme, "queued", next_run_at=now - timedelta(minutes=5))
    make(acme, "sleeping", next_run_at=now + timedelta(hours=1))
    make(acme, "complete", next_run_at=now - timedelta(hours=1))
    make(globex, "sleeping", next_run_at=now - timedelta(seconds=1))
    rows = by_slug(overview.work_per_tenant(now))
    assert (rows["acme"]["running"], rows["acme"]["due"]) == (2, 1)
    assert rows["acme"]["oldest_due"] == now - timedelta(minutes=5)
    assert (rows["globex"]["running"], rows["globex"]["due"]) == (0, 1)
    assert list(by_slug(overview.work_per_tenant(now))) == ["acme", "globex"]


def test_the_review_queue_has_its_length_and_oldest_version(acme, now):
    assert overview.review_queue() == overview.ReviewQueue(0, None)
    first = upload(acme, "one", CODE).version
    second = upload(acme, "two", CODE).version
    CodeVersion.objects.filter(pk=first.pk).update(
        status="pending_review", created_at=now - timedelta(hours=3)
    )
    CodeVersion.objects.filter(pk=second.pk).update(status="pending_review")
    queue = overview.review_queue()
    assert queue.length == 2
    assert queue.age(now) == timedelta(hours=3)


def test_sandbox_failures_are_recent_sandbox_errors_and_runs_of_failures(acme, globex, now):
    sandbox = {"type": "SandboxFailure", "message": "the sandbox kept failing: 5 in a row"}
    make(acme, "errored", error=sandbox, finished_at=now - timedelta(minutes=10), key="recent")
    make(acme, "errored", error=sandbox, finished_at=now - timedelta(hours=2), key="old")
    make(acme, "errored", error={"type": "ValueError"}, finished_at=now, key="other")
    make(globex, "queued", sandbox_failures=2, next_run_at=now + timedelta(seconds=5), key="f")
    make(globex, "queued", sandbox_failures=0, next_run_at=now, key="fine")
    failures = overview.sandbox_failures(now)
    assert failures.errored == 1
    assert [row["key"] for row in failures.errored_rows] == ["recent"]
    assert "kept failing" in failures.errored_rows[0]["error"]["message"]
    assert (failures.counting, failures.counted_failures) == (1, 2)
    assert [row["key"] for row in failures.counting_rows] == ["f"]


def add_step(instance, index, seconds, *, ago=timedelta(minutes=5), kind="do"):
    finished = timezone.now() - ago
    Step.objects.create(
        instance=instance,
        index=index,
        name=f"s{index}",
        kind=kind,
        status="complete",
        started_at=finished - timedelta(seconds=seconds),
        finished_at=finished,
    )


def test_the_slowest_tenants_are_ranked_by_step_duration_in_the_last_hour(acme, globex, now):
    slow, fast = make(acme, "complete"), make(globex, "complete")
    for index, seconds in enumerate([2, 4, 10]):
        add_step(slow, index, seconds)
    add_step(slow, 3, 3600, kind="sleep")  # a sleep is no step duration
    add_step(slow, 4, 900, ago=timedelta(hours=2))  # before the window
    for index in range(3):
        add_step(fast, index, 1)
    rows = overview.slowest_tenants(now)
    assert [row["instance__tenant__slug"] for row in rows] == ["acme", "globex"]
    assert rows[0]["steps"] == 3
    assert rows[0]["p50"] == pytest.approx(4, abs=0.01)
    assert 4 < rows[0]["p95"] <= 10
    assert rows[1]["p95"] == pytest.approx(1, abs=0.01)


def test_step_durations_come_from_the_newest_steps_only(acme, monkeypatch, now):
    instance = make(acme, "complete")
    add_step(instance, 0, 50)
    add_step(instance, 1, 1)
    monkeypatch.setattr(overview, "STEP_SAMPLE", 1)
    assert overview.slowest_tenants(now)[0]["p95"] == pytest.approx(1, abs=0.01)


def test_warm_jails_are_counted_per_worker_from_their_job_cgroups(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    for name in ["job-100-warm1", "job-100-warm7", "job-200-warm2", "job-100-3", "NSJAIL.5"]:
        (tmp_path / "NSJAIL" / name).mkdir(parents=True)
    jails = overview.warm_jails(tmp_path)
    assert (jails.workers, jails.total, jails.unavailable) == ({100: 2, 200: 1}, 3, "")


def test_warm_jails_say_why_they_cannot_be_seen(tmp_path):
    jails = overview.warm_jails(tmp_path)
    assert jails.total == 0
    assert "no usable cgroups" in jails.unavailable


def plans(run) -> str:
    """The plans of the queries `run` makes, with sequential scans priced out: a plan then
    holds one only where no index serves the query."""
    with CaptureQueriesContext(connection) as captured:
        run()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        explained = []
        for query in captured:
            cursor.execute("EXPLAIN " + query["sql"])
            explained += [row[0] for row in cursor.fetchall()]
    return "\n".join(explained)


QUERIES = {
    "review_queue": (lambda now: overview.review_queue(), ["version_review_queue"]),
    "work_per_tenant": (overview.work_per_tenant, ["instance_dispatch"]),
    "sandbox_failures": (overview.sandbox_failures, ["instance_errored", "instance_dispatch"]),
    "slowest_tenants": (overview.slowest_tenants, ["execution_step_pkey"]),
}


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_each_overview_query_uses_its_index_and_scans_no_table(name, acme, now):
    run, indexes = QUERIES[name]
    plan = plans(lambda: run(now))
    for index in indexes:
        assert index in plan
    assert "Seq Scan" not in plan.replace("Seq Scan on tenants_tenant", ""), plan
