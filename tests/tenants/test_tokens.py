from datetime import timedelta

import pytest
from django.utils import timezone

from tenants.models import ApiToken
from tenants.tokens import (
    TokenQuotaExceeded,
    authenticate_token,
    create_token,
    hash_token,
    revoke_token,
)


def test_a_token_is_stored_only_as_its_hash(acme):
    token, raw = create_token(acme, "ci")
    assert raw.startswith("sw_") and len(raw) > 40
    row = ApiToken.objects.get(pk=token.pk)
    assert row.token_hash == hash_token(raw)
    assert raw not in {row.token_hash, row.prefix, row.name}
    assert raw.startswith(row.prefix)


def test_a_valid_token_authenticates_and_records_its_use(acme):
    token, raw = create_token(acme, "ci")
    assert authenticate_token(raw).pk == token.pk
    assert ApiToken.objects.get(pk=token.pk).last_used_at is not None


def test_revoked_expired_and_malformed_tokens_do_not_authenticate(acme):
    revoked, raw_revoked = create_token(acme, "old")
    revoke_token(revoked)
    _, raw_expired = create_token(acme, "gone", expires_at=timezone.now() - timedelta(seconds=1))
    assert authenticate_token(raw_revoked) is None
    assert authenticate_token(raw_expired) is None
    for bad in ("", "sw_", "Bearer x", "sw_" + "a" * 500, "not-a-token"):
        assert authenticate_token(bad) is None


def test_a_suspended_tenants_tokens_stop_working(acme):
    _, raw = create_token(acme, "ci")
    acme.suspended_at = timezone.now()
    acme.save()
    assert authenticate_token(raw) is None


def test_every_token_creation_is_held_to_the_tenant_cap_and_revoking_makes_room(acme, settings):
    settings.STEPWELL_MAX_TOKENS_PER_TENANT = 2
    first, _ = create_token(acme, "one")
    create_token(acme, "expired", expires_at=timezone.now() - timedelta(seconds=1))
    create_token(acme, "two")
    with pytest.raises(TokenQuotaExceeded, match="2 active tokens; the limit is 2"):
        create_token(acme, "three")
    revoke_token(first)
    create_token(acme, "three")
    assert ApiToken.objects.filter(tenant=acme).active().count() == 2
