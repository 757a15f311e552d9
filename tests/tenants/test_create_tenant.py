from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from tenants.models import Membership, Quota, Tenant
from tenants.tokens import authenticate_token


def run(*args) -> list[str]:
    out = StringIO()
    call_command("create_tenant", *args, stdout=out)
    return out.getvalue().splitlines()


@pytest.mark.django_db
def test_it_creates_a_tenant_with_an_owner_and_prints_the_token_last():
    get_user_model().objects.create_user("carol", password="x-very-long-pw")
    lines = run("initech", "--name", "Initech", "--owner", "carol", "--token", "deploy")
    tenant = Tenant.objects.get(slug="initech")
    assert tenant.name == "Initech"
    assert Quota.objects.filter(tenant=tenant).exists()
    assert Membership.objects.get(tenant=tenant).role == "owner"
    token = authenticate_token(lines[-1])
    assert token is not None and token.tenant == tenant and token.name == "deploy"


@pytest.mark.django_db
def test_an_existing_slug_is_reused_not_an_error():
    run("initech")
    lines = run("initech", "--token", "second")
    assert Tenant.objects.filter(slug="initech").count() == 1
    assert authenticate_token(lines[-1]).tenant.slug == "initech"


@pytest.mark.django_db
def test_an_unknown_owner_is_a_clear_error():
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        run("initech", "--owner", "nobody")
