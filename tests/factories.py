"""Personas and builders shared by the tests: tenant acme with alice, globex with bob."""

from __future__ import annotations

import textwrap

from django.contrib.auth import get_user_model

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
