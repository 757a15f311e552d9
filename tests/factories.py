"""Personas and builders shared by the tests: tenant acme with alice, globex with bob."""

from __future__ import annotations

import textwrap
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from execution.workflows import upload_version
from tenants.models import Membership, Quota, Tenant
from tenants.tokens import create_token

# One step, an hour's sleep, one more step: an instance that stays suspended.
SLEEPER = """
def run(event, step):
    step.do("one", lambda: 1)
    step.sleep("nap", 3600)
    return step.do("two", lambda: 2)
"""

# One step that waits for a "go" event an hour: an instance that stays unfinished.
WAITER = """
def run(event, step):
    return step.wait_for_event("go", "go")
"""


def make_tenant(slug: str, username: str, **quota) -> Tenant:
    tenant = Tenant.objects.create(slug=slug, name=slug.title())
    Quota.objects.create(tenant=tenant, **quota)
    user = get_user_model().objects.create_user(username, password="pw-" + username + "-123!")
    Membership.objects.create(tenant=tenant, user=user, role=Membership.Role.OWNER)
    return tenant


def make_token(tenant: Tenant, name: str = "test", **kwargs) -> str:
    _, raw = create_token(tenant, name, **kwargs)
    return raw


def upload(tenant: Tenant, name: str, code: str):
    return upload_version(tenant, name, textwrap.dedent(code))


def set_quota(tenant, **limits) -> None:
    for name, value in limits.items():
        setattr(tenant.quota_row, name, value)
    tenant.quota_row.save()


def insert_finished_instances(
    tenant: Tenant, n: int, finished: datetime, *, with_history: int = 0
) -> None:
    """n complete instances of a one-step workflow, finished a second apart before
    `finished`, in one PostgreSQL statement (retention's tests and bench/retention.py);
    the first `with_history` get a step, an event and a progress event each."""
    version = upload(tenant, "bulk", "def run(event, step):\n    return 1\n").version
    now = timezone.now()
    first = (
        "SELECT id FROM execution_instance WHERE key LIKE 'bulk-%%' "
        f"ORDER BY id LIMIT {int(with_history)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO execution_instance (tenant_id, key, workflow_id, version_id, status, "
            "status_before_pause, paused_reason, payload, lease_owner, generation, last_seq, "
            "activations, history_bytes, sandbox_failures, run, created_at, updated_at, "
            "finished_at) "
            "SELECT %s, 'bulk-' || g, %s, %s, 'complete', '', '', '{}'::jsonb, '', 0, 1, 1, 0, "
            "0, 1, %s, %s, %s - (g * interval '1 second') FROM generate_series(1, %s) g",
            [tenant.pk, version.workflow_id, version.pk, now, now, finished, n],
        )
        cursor.execute(
            "INSERT INTO execution_step (instance_id, index, name, kind, status, attempts, logs, "
            "event_type, config, earlier_attempts, started_at) SELECT id, 0, 'one', 'do', "
            f"'complete', 1, '', '', '{{}}'::jsonb, '[]'::jsonb, now() FROM ({first}) i"
        )
        cursor.execute(
            f"INSERT INTO execution_event (instance_id, type, created_at) "
            f"SELECT id, 'go', now() FROM ({first}) i"
        )
        cursor.execute(
            "INSERT INTO execution_progressevent (instance_id, seq, type, data, created_at) "
            f"SELECT id, 1, 'instance.status', '{{}}'::jsonb, now() FROM ({first}) i"
        )
        for table in ("instance", "step", "event", "progressevent"):
            cursor.execute(f"ANALYZE execution_{table}")
