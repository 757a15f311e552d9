"""Two machines on one PostgreSQL and one Redis, and one of them lost whole mid-run.

Each node has its own web (the Procfile's uvicorn), worker and clock, its own var dir
and its own range of sandbox uids. The client spreads its calls over both webs, as a
load balancer would. The workflows, the client and the end checks are bench/chaos.py's;
`make chaos ARGS="--nodes 2"` is the long run with every kind of fault.
"""

import time

import pytest
from django.db import connection

from bench import chaos
from execution.models import Instance, ScheduleFire
from execution.schedules import Spec, save_schedule
from tests.factories import make_tenant, make_token, upload
from tests.integration.stack import (
    Redis,
    Stack,
    current_database_url,
    node_env,
    point_celery_at,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

INSTANCES = 200
WORKERS_PER_NODE = 1
CONCURRENCY = 2


@pytest.fixture
def nodes(transactional_db, settings, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("the integration suite runs against PostgreSQL")
    redis = Redis(tmp_path)
    nodes = [
        Stack(current_database_url(), redis=redis, name=f"node{i}", **node_env(i)) for i in range(2)
    ]
    try:
        redis.start()
        point_celery_at(redis.url)
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
        for node in nodes:
            node.start(workers=WORKERS_PER_NODE, concurrency=CONCURRENCY)
            node.start_web()
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        redis.stop()
        point_celery_at()


def in_flight(tenant) -> dict[str, int]:
    """What the tenant's instances are doing now, by status, leased ones apart."""
    counts = {"leased": Instance.objects.filter(tenant=tenant).exclude(lease_owner="").count()}
    for status in ("running", "sleeping", "waiting", "complete"):
        counts[status] = Instance.objects.filter(tenant=tenant, status=status).count()
    return counts


def test_a_whole_node_killed_mid_run_loses_nothing_and_the_survivor_finishes(nodes):
    tenant = make_tenant("acme", "alice", step_timeout_seconds=20)
    chaos.loosen_quota(len(nodes) * WORKERS_PER_NODE * CONCURRENCY, slug="acme")
    upload(tenant, chaos.CHILD, chaos.CHILD_CODE)
    upload(tenant, chaos.PARENT, chaos.PARENT_CODE)
    api = chaos.Api([node.webs[0].url for node in nodes], make_token(tenant))
    keys = [f"nodes-{n}" for n in range(INSTANCES)]
    plan = chaos.Drive(
        keys=keys,
        sleeps={k: 1 + n % 2 for n, k in enumerate(keys)},  # 1 or 2 s; children half that
        early={k for n, k in enumerate(keys) if n % 2 == 0},
    )
    # Meanwhile another tenant's schedule fires every second: both clocks sweep it, one
    # with the other until the kill, and each fire must start one instance, once.
    globex = make_tenant("globex", "bob", schedule_min_interval_seconds=1)
    tick = upload(globex, "tick", "def run(event, step):\n    return event.payload\n")
    save_schedule(tick.workflow, "every-second", Spec(every=1, overlap="allow"))
    victim, survivor = nodes[1], nodes[0]
    at_kill = None
    deadline = time.monotonic() + 300

    chaos.start_due(api, plan, INSTANCES)
    while True:
        chaos.send_late_events(api, tenant, plan)
        ended = chaos.ended_count(tenant, keys)
        if at_kill is None and ended >= INSTANCES // 3:
            # Both clocks have swept side by side until now; the victim's worker holds
            # leases and its jails run steps.
            at_kill = {**in_flight(tenant), "jails": len(victim.jail_pids())}
            victim.kill()
            print(f"killed {victim.name} with {ended}/{INSTANCES} parents ended: {at_kill}")
        if at_kill is not None and ended == INSTANCES:
            break
        dead = [p for p in survivor.processes() if p.proc.poll() is not None]
        assert not dead, f"{dead[0].name} died by itself:\n{dead[0].log()[-3000:]}"
        assert time.monotonic() < deadline, survivor.logs() + victim.logs()
        time.sleep(0.2)

    found = chaos.violations(keys, tenant)
    assert not found, "\n".join(found)
    assert Instance.objects.filter(tenant=tenant, status="complete").count() == 2 * INSTANCES
    # The kill came mid-run: work was in flight, and the survivor finished it.
    assert at_kill["complete"] < 2 * INSTANCES - 50, at_kill
    assert at_kill["leased"] + at_kill["running"] + at_kill["sleeping"] > 0, at_kill
    assert at_kill["jails"] > 0, at_kill
    assert all(p.proc.poll() is not None for p in victim.processes())
    wait_until(lambda: not victim.jail_pids(), 10, what="the victim's jails to be gone")
    fires = list(ScheduleFire.objects.filter(schedule__tenant=globex).order_by("fire_at"))
    assert len(fires) >= 5, fires
    # A quota may skip a fire while the workers are busy; two clocks taking one fire
    # would show as a second start refused for its id.
    assert [f for f in fires if f.skipped == "id_taken"] == []
    started = Instance.objects.filter(tenant=globex).values_list("key", flat=True)
    assert sorted(started) == sorted(f.instance_key for f in fires if not f.skipped)
    assert all(p.proc.poll() is None for p in survivor.processes())
