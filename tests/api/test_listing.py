"""GET /api/v1/instances, up to 100,000 rows: filtered, keyset-paginated, constant queries."""

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from execution.models import Instance
from tests.factories import upload

CODE = "def run(event, step):\n    return 1\n"


def make_instances(acme, globex, count: int):
    """`count` instances of acme over two workflows, and a few of globex."""
    first = upload(acme, "first", CODE).workflow
    second = upload(acme, "second", CODE).workflow
    theirs = upload(globex, "theirs", CODE).workflow
    start = timezone.now() - timedelta(days=30)
    statuses = [Instance.Status.COMPLETE] * 9 + [Instance.Status.ERRORED]
    rows = [
        Instance(
            tenant=acme,
            workflow=first if n % 2 else second,
            version=(first if n % 2 else second).current_version,
            status=statuses[n % 10],
            key=f"i{n}",
            # Some share a creation time, so the cursor's tie-break matters.
            created_at=start + timedelta(seconds=n // 3),
            updated_at=start,
        )
        for n in range(count)
    ]
    rows += [
        Instance(tenant=theirs.tenant, workflow=theirs, version=theirs.current_version, key=f"g{n}")
        for n in range(50)
    ]
    Instance.objects.bulk_create(rows, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Instance._meta.db_table}")
    return acme


@pytest.fixture
def many(acme, globex):
    return make_instances(acme, globex, 3000)


@pytest.fixture
def lots(acme, globex):
    return make_instances(acme, globex, 100_000)


def page(alice, query: str):
    started = time.perf_counter()
    status, body = alice.call("get", f"/instances?{query}")
    assert status == 200
    return body, time.perf_counter() - started


def test_pages_follow_each_other_without_gaps_or_repeats(alice, many):
    seen, cursor = [], ""
    for _ in range(5):
        body, _ = page(alice, f"limit=200&workflow=first{cursor}")
        seen += [i["id"] for i in body["items"]]
        cursor = f"&cursor={body['next_cursor']}"
    expected = [f"i{n}" for n in range(2999, -1, -1) if n % 2][:1000]
    assert seen == expected


def test_filters_by_workflow_and_status_and_stays_within_the_tenant(alice, bob, many):
    body, _ = page(alice, "status=errored&workflow=first&limit=200")
    assert {(i["workflow"], i["status"]) for i in body["items"]} == {("first", "errored")}
    assert not [i for i in page(bob, "limit=200")[0]["items"] if i["id"].startswith("i")]


def test_with_100000_instances_a_page_is_fast_and_its_query_count_constant(alice, lots):
    alice.call("get", "/instances?limit=1")  # records the token's first use
    counts = {}
    for limit in (10, 200):
        with CaptureQueriesContext(connection) as queries:
            body, _ = page(alice, f"limit={limit}")
        assert len(body["items"]) == limit
        counts[limit] = len(queries)
    assert counts[10] == counts[200] <= 3
    for _ in range(3):
        body, _ = page(alice, f"limit=200&cursor={body['next_cursor']}")
    timings = {}
    for query in ("limit=200", f"limit=200&cursor={body['next_cursor']}", "status=errored"):
        timings[query] = round(min(page(alice, query)[1] for _ in range(3)), 4)
    print("listing timings (s) over 100,000 rows:", timings, "queries:", counts)
    assert max(timings.values()) < 0.5
    if connection.vendor == "postgresql":
        plan = page_query(lots, after=500).explain()
        print(plan)
        assert "Index Scan using instance_listing" in plan


def page_query(tenant, after: int):
    """The query of a page that starts after the `after`-th instance."""
    last = Instance.objects.for_tenant(tenant).order_by("-created_at", "-id")[after]
    return (
        Instance.objects.for_tenant(tenant)
        .filter(created_at__lte=last.created_at)
        .exclude(created_at=last.created_at, pk__gte=last.pk)
        .order_by("-created_at", "-id")[:51]
    )
