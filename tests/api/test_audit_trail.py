"""Every tenant action through the API is audited with the token that did it."""

from execution.models import Instance
from tenants.models import ApiToken, AuditLog
from tests.factories import WAITER


def trail(tenant) -> list[tuple]:
    """(action, token name, target type, details) of the tenant's entries, oldest first."""
    return [
        (e.action, e.actor_token.name if e.actor_token else None, e.target_type, e.details)
        for e in AuditLog.objects.filter(tenant=tenant).select_related("actor_token").reverse()
    ]


def test_uploads_starts_events_and_controls_name_the_token(alice, acme):
    assert alice.call("put", "/workflows/waiter", {"code": WAITER})[0] == 201
    assert alice.call("put", "/workflows/waiter", {"code": WAITER})[0] == 200  # no change
    assert alice.call("post", "/workflows/waiter/instances", {"id": "order-1"})[0] == 201
    assert alice.call("post", "/workflows/waiter/instances", {"id": "order-1"})[0] == 200
    status, _ = alice.call("post", "/instances/order-1/events", {"type": "go", "payload": {}})
    assert status == 202
    for control in ("pause", "resume", "terminate", "restart"):
        assert alice.call("post", f"/instances/order-1/{control}")[0] == 200, control
    instance = Instance.objects.get(key="order-1")
    entries = trail(acme)
    version = instance.version.sha256
    assert entries[0] == (
        "workflow.uploaded",
        "alice's",
        "workflow",
        {"workflow": "waiter", "version": version, "status": "approved"},
    )
    about = {"instance": "order-1"}
    assert entries[1:] == [
        ("instance.started", "alice's", "instance", {"workflow": "waiter", **about}),
        ("event.sent", "alice's", "instance", {"type": "go", **about}),
        ("instance.paused", "alice's", "instance", about),
        ("instance.resumed", "alice's", "instance", about),
        ("instance.terminated", "alice's", "instance", about),
        (
            "instance.restarted",
            "alice's",
            "instance",
            {**about, "run": 2, "from_step": 0, "version": version},
        ),
    ]
    started = AuditLog.objects.get(action="instance.started")
    assert started.target_id == str(instance.pk)
    assert started.created_at == instance.created_at  # written by the start's statement


def test_tokens_made_and_revoked_through_the_api_name_the_token_that_did_it(alice, acme):
    status, made = alice.call("post", "/tokens", {"name": "ci", "read_only": True})
    assert status == 201
    assert alice.call("delete", f"/tokens/{made['id']}")[0] == 200
    details = {"name": "ci", "prefix": made["prefix"], "read_only": True}
    assert trail(acme) == [
        ("token.created", "alice's", "token", details),
        ("token.revoked", "alice's", "token", details),
    ]
    actor = AuditLog.objects.filter(action="token.created").get().actor_token
    assert actor == ApiToken.objects.get(name="alice's")


def test_refused_actions_are_not_audited(alice, bob, acme):
    alice.call("put", "/workflows/waiter", {"code": WAITER})
    alice.call("post", "/workflows/waiter/instances", {"id": "order-1"})
    before = AuditLog.objects.count()
    assert alice.call("post", "/instances/order-1/resume")[0] == 409  # not paused
    assert bob.call("post", "/instances/order-1/pause")[0] == 404
    assert AuditLog.objects.count() == before
