"""API tokens over the API: shown once, stored hashed, scoped, expiring, revocable, audited."""

import logging
from datetime import timedelta

from django.utils import timezone

from tenants.models import ApiToken, AuditLog
from tenants.tokens import hash_token
from tests.api.conftest import Api
from tests.factories import make_token


def test_a_token_is_shown_once_and_stored_only_as_its_hash(alice, client):
    status, made = alice.call("post", "/tokens", {"name": "ci"})
    assert status == 201
    raw = made["token"]
    assert raw.startswith(made["prefix"]) and made["active"] and not made["read_only"]
    row = ApiToken.objects.get(pk=made["id"])
    assert row.token_hash == hash_token(raw) and raw not in (row.prefix, row.name)
    status, listed = alice.call("get", "/tokens")
    assert status == 200 and "ci" in {t["name"] for t in listed}
    assert all("token" not in t for t in listed)
    assert Api(client, raw).call("get", "/workflows")[0] == 200


def test_last_use_is_recorded(alice, client):
    made = alice.call("post", "/tokens", {"name": "ci"})[1]
    assert made["last_used_at"] is None
    Api(client, made["token"]).call("get", "/workflows")
    listed = {t["id"]: t for t in alice.call("get", "/tokens")[1]}
    assert listed[made["id"]]["last_used_at"] is not None


def test_a_revoked_token_fails_on_the_next_request(alice, client):
    made = alice.call("post", "/tokens", {"name": "ci"})[1]
    ci = Api(client, made["token"])
    assert ci.call("get", "/workflows")[0] == 200
    status, revoked = alice.call("delete", f"/tokens/{made['id']}")
    assert status == 200 and revoked["revoked_at"] and not revoked["active"]
    assert ci.call("get", "/workflows") == (401, {"detail": "Unauthorized"})
    # Revoking again changes nothing and is not an error.
    assert alice.call("delete", f"/tokens/{made['id']}")[1]["revoked_at"] == revoked["revoked_at"]


def test_a_token_may_revoke_itself(alice):
    own = ApiToken.objects.get(token_hash=hash_token(alice.token))
    assert alice.call("delete", f"/tokens/{own.pk}")[0] == 200
    assert alice.call("get", "/tokens")[0] == 401


def test_an_expiring_token_expires(alice, client):
    soon = timezone.now() + timedelta(seconds=60)
    made = alice.call("post", "/tokens", {"name": "brief", "expires_at": soon.isoformat()})[1]
    assert made["expires_at"]
    row = ApiToken.objects.get(pk=made["id"])
    row.expires_at = timezone.now() - timedelta(seconds=1)
    row.save()
    assert Api(client, made["token"]).call("get", "/workflows")[0] == 401


def test_a_new_token_cannot_outlive_the_token_that_made_it(acme, client):
    until = timezone.now() + timedelta(days=1)
    short = Api(client, make_token(acme, "short", expires_at=until))
    made = short.call("post", "/tokens", {"name": "forever"})[1]
    assert ApiToken.objects.get(pk=made["id"]).expires_at == until
    later = (until + timedelta(days=30)).isoformat()
    made = short.call("post", "/tokens", {"name": "later", "expires_at": later})[1]
    assert ApiToken.objects.get(pk=made["id"]).expires_at == until


def test_a_past_or_naive_expiry_is_422_naming_the_field(alice):
    past = (timezone.now() - timedelta(days=1)).isoformat()
    status, body = alice.call("post", "/tokens", {"name": "x", "expires_at": past})
    assert status == 422 and body["detail"][0]["field"] == "expires_at"
    status, body = alice.call("post", "/tokens", {"name": "x", "expires_at": "2999-01-01T00:00"})
    assert status == 422 and body["detail"][0]["field"] == "expires_at"


def test_a_read_only_token_may_list_tokens_but_not_make_or_revoke_them(acme, client):
    ro = Api(client, make_token(acme, "ro", read_only=True))
    other = ApiToken.objects.get(token_hash=hash_token(make_token(acme, "other")))
    assert ro.call("get", "/tokens")[0] == 200
    assert ro.call("post", "/tokens", {"name": "escalate"}) == (
        403,
        {"detail": "this token is read-only"},
    )
    assert ro.call("delete", f"/tokens/{other.pk}")[0] == 403
    assert ApiToken.objects.get(pk=other.pk).revoked_at is None


def test_a_token_made_read_only_cannot_write(alice, client):
    made = alice.call("post", "/tokens", {"name": "viewer", "read_only": True})[1]
    viewer = Api(client, made["token"])
    assert made["read_only"] and viewer.call("get", "/instances")[0] == 200
    assert viewer.call("put", "/workflows/x", {"code": "def run(e, s):\n  pass\n"})[0] == 403


def test_creating_and_revoking_are_audited_with_the_acting_token(alice, acme):
    made = alice.call("post", "/tokens", {"name": "ci"})[1]
    alice.call("delete", f"/tokens/{made['id']}")
    actor = ApiToken.objects.get(token_hash=hash_token(alice.token))
    rows = AuditLog.objects.filter(tenant=acme).order_by("id")
    assert [(r.action, r.target_id, r.actor_token_id) for r in rows] == [
        ("token.created", str(made["id"]), actor.pk),
        ("token.revoked", str(made["id"]), actor.pk),
    ]
    assert made["token"] not in str([r.details for r in rows])


def test_a_tenant_has_at_most_the_allowed_number_of_active_tokens(alice, settings):
    settings.STEPWELL_MAX_TOKENS_PER_TENANT = 3
    assert alice.call("post", "/tokens", {"name": "two"})[0] == 201
    assert alice.call("post", "/tokens", {"name": "three"})[0] == 201
    status, body = alice.call("post", "/tokens", {"name": "four"})
    assert status == 429 and "the limit is 3" in body["detail"]


def test_tokens_never_appear_in_the_logs(alice, client, caplog):
    caplog.set_level(logging.DEBUG)
    made = alice.call("post", "/tokens", {"name": "ci"})[1]
    raw = made["token"]
    ci = Api(client, raw)
    ci.call("get", "/workflows")
    ci.call("get", "/instances/nope")  # 404
    ci.call("post", "/workflows/x/validate", {"code": 1})  # 422
    ci.request("post", "/workflows/x/validate", b"{not json")  # 422
    alice.call("delete", f"/tokens/{made['id']}")
    ci.call("get", "/workflows")  # 401
    client.get("/api/v1/workflows", headers={"Authorization": f"Bearer {raw}x"})
    assert caplog.records, "the requests above should have logged something"
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert raw not in logged and alice.token not in logged
