"""The console's secrets page: names and dates, a write-only value, delete; per tenant."""

from tenants.models import AuditLog, Secret
from tenants.secrets import set_secret, values_for

VALUE = "console-secret-value-1"


def test_a_member_sets_replaces_and_deletes_a_secret_and_never_sees_the_value(alice, acme):
    response = alice.post("/secrets/", {"name": "API_KEY", "value": VALUE})
    assert response.status_code == 302
    page = alice.get("/secrets/")
    assert b"API_KEY" in page.content
    assert VALUE.encode() not in page.content
    alice.post("/secrets/", {"name": "API_KEY", "value": VALUE + "-new"})
    assert values_for(acme.pk) == {"API_KEY": VALUE + "-new"}
    assert alice.post("/secrets/API_KEY/delete/").status_code == 302
    assert not Secret.objects.filter(tenant=acme).exists()
    actions = list(
        AuditLog.objects.filter(tenant=acme, action__startswith="secret.").values_list(
            "action", "actor__username", "details"
        )
    )
    assert sorted(actions) == sorted(
        [
            ("secret.created", "alice", {"name": "API_KEY"}),
            ("secret.updated", "alice", {"name": "API_KEY"}),
            ("secret.deleted", "alice", {"name": "API_KEY"}),
        ]
    )


def test_a_bad_name_or_short_value_is_refused_and_the_value_not_echoed(alice, acme):
    page = alice.post("/secrets/", {"name": "lower", "value": "short"})
    assert page.status_code == 200
    assert b"field-error" in page.content
    assert b"short" not in page.content.split(b'id="id_value"')[1][:200]
    assert not Secret.objects.filter(tenant=acme).exists()


def test_viewers_may_look_but_not_set(carol, acme):
    set_secret(acme, "API_KEY", VALUE)
    assert b"API_KEY" in carol.get("/secrets/").content
    assert carol.post("/secrets/", {"name": "OTHER", "value": VALUE}).status_code == 403
    carol.post("/secrets/API_KEY/delete/")
    assert Secret.objects.filter(tenant=acme, name="API_KEY").exists()


def test_bob_sees_and_deletes_nothing_of_acmes(bob, acme):
    set_secret(acme, "ACME_KEY", VALUE)
    assert b"ACME_KEY" not in bob.get("/secrets/").content
    bob.post("/secrets/ACME_KEY/delete/")
    assert Secret.objects.filter(tenant=acme, name="ACME_KEY").exists()
