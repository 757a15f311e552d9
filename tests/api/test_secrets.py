"""The secret endpoints (API.md, Secrets): write-only values, names and dates, isolation."""

import pytest
from django.test import override_settings

from tenants.models import AuditLog, Secret
from tenants.secrets import decrypt
from tests.api.conftest import Api
from tests.factories import make_token

VALUE = "hunter2-correct-horse"


def test_it_creates_then_replaces_a_secret_and_never_answers_the_value(alice, acme):
    status, body = alice.call("put", "/secrets/API_KEY", {"value": VALUE})
    assert status == 201
    assert set(body) == {"name", "created_at", "updated_at"}
    assert body["name"] == "API_KEY"
    status, again = alice.call("put", "/secrets/API_KEY", {"value": VALUE + "-2"})
    assert status == 200
    assert again["created_at"] == body["created_at"]
    assert again["updated_at"] > body["updated_at"]
    row = Secret.objects.get(tenant=acme, name="API_KEY")
    assert VALUE not in row.ciphertext
    assert decrypt(row.ciphertext) == VALUE + "-2"


def test_it_lists_names_and_dates_in_pages(alice):
    for name in ("B_KEY", "A_KEY", "C_KEY"):
        alice.call("put", f"/secrets/{name}", {"value": VALUE})
    status, page = alice.call("get", "/secrets?limit=2")
    assert status == 200
    assert [s["name"] for s in page["items"]] == ["A_KEY", "B_KEY"]
    assert all(set(s) == {"name", "created_at", "updated_at"} for s in page["items"])
    status, rest = alice.call("get", f"/secrets?limit=2&cursor={page['next_cursor']}")
    assert [s["name"] for s in rest["items"]] == ["C_KEY"]
    assert rest["next_cursor"] is None


def test_it_deletes_a_secret(alice, acme):
    alice.call("put", "/secrets/GONE", {"value": VALUE})
    response = alice.request("delete", "/secrets/GONE")
    assert response.status_code == 204
    assert not Secret.objects.filter(tenant=acme).exists()
    assert alice.call("delete", "/secrets/GONE")[0] == 404


def test_changes_are_audited_by_name_and_never_by_value(alice, acme):
    alice.call("put", "/secrets/API_KEY", {"value": VALUE})
    alice.call("put", "/secrets/API_KEY", {"value": VALUE})
    alice.request("delete", "/secrets/API_KEY")
    entries = list(AuditLog.objects.filter(tenant=acme).order_by("id"))
    assert [e.action for e in entries][-3:] == [
        "secret.created",
        "secret.updated",
        "secret.deleted",
    ]
    for entry in entries[-3:]:
        assert entry.details == {"name": "API_KEY"}
        assert entry.actor_token is not None
        assert VALUE not in str(entry.details) + entry.reason


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/secrets/API_KEY", {"value": "short"}, "value"),
        ("/secrets/API_KEY", {"value": "x" * 4097}, "value"),
        ("/secrets/API_KEY", {"value": "é" * 2049}, "value"),  # 4098 bytes of UTF-8
        ("/secrets/API_KEY", {}, "value"),
        ("/secrets/api_key", {"value": VALUE}, "name"),
        ("/secrets/9KEY", {"value": VALUE}, "name"),
        ("/secrets/" + "K" * 65, {"value": VALUE}, "name"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(alice, path, body, field):
    status, answer = alice.call("put", path, body)
    assert status == 422
    assert field in [e["field"] for e in answer["detail"]]


def test_a_bad_cursor_is_a_422(alice):
    status, answer = alice.call("get", "/secrets?cursor=not-a-name")
    assert status == 422
    assert answer["detail"][0]["field"] == "cursor"


@override_settings(STEPWELL_MAX_SECRETS_PER_TENANT=2)
def test_the_count_quota_is_a_429_but_replacing_still_works(alice):
    assert alice.call("put", "/secrets/ONE", {"value": VALUE})[0] == 201
    assert alice.call("put", "/secrets/TWO", {"value": VALUE})[0] == 201
    status, body = alice.call("put", "/secrets/THREE", {"value": VALUE})
    assert status == 429
    assert "secrets quota" in body["detail"]
    assert alice.call("put", "/secrets/ONE", {"value": VALUE + "!"})[0] == 200


@override_settings(STEPWELL_SECRET_KEYS=[])
def test_without_keys_setting_a_secret_is_a_503_saying_so(alice):
    status, body = alice.call("put", "/secrets/API_KEY", {"value": VALUE})
    assert status == 503
    assert "STEPWELL_SECRET_KEYS" in body["detail"]


def test_bob_sees_and_touches_none_of_acmes_secrets(alice, bob, globex):
    alice.call("put", "/secrets/API_KEY", {"value": VALUE})
    assert bob.call("get", "/secrets")[1]["items"] == []
    assert bob.call("delete", "/secrets/API_KEY")[0] == 404
    # The same name in another tenant is another secret.
    assert bob.call("put", "/secrets/API_KEY", {"value": "bobs-own-value"})[0] == 201
    assert [s["name"] for s in alice.call("get", "/secrets")[1]["items"]] == ["API_KEY"]
    assert decrypt(Secret.objects.get(tenant=globex).ciphertext) == "bobs-own-value"


def test_a_read_only_token_may_list_but_not_change(client, acme):
    reader = Api(client, make_token(acme, "reader", read_only=True))
    assert reader.call("put", "/secrets/API_KEY", {"value": VALUE})[0] == 403
    assert reader.call("get", "/secrets")[0] == 200
