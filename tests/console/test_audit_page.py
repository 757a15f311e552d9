from datetime import datetime

import pytest
from django.contrib.auth import get_user_model

from console import views
from tenants.models import ApiToken, AuditLog
from tests.console.conftest import ORDER_FLOW


def test_owners_see_their_own_tenants_audit_log(alice, acme, globex):
    AuditLog.objects.create(tenant=acme, action="version.rejected", reason="calls home")
    AuditLog.objects.create(tenant=globex, action="tenant.suspended", reason="globex secret")
    page = alice.get("/audit/").content.decode()
    assert "version.rejected" in page and "calls home" in page
    assert "globex secret" not in page


def test_viewers_may_not_read_the_audit_log(carol, acme):
    assert carol.get("/audit/").status_code == 403


def test_token_creation_in_the_console_lands_in_the_audit_log(alice, acme):
    alice.post("/tokens/", {"name": "deploy"})
    page = alice.get("/audit/").content.decode()
    assert "token.created" in page


def test_console_uploads_starts_events_and_controls_name_the_user(alice, acme):
    alice.post("/workflows/_new/", {"name": "order", "description": "", "code": ORDER_FLOW})
    alice.post("/workflows/order/start/", {"key": "o-1", "payload": "{}"})
    alice.post("/instances/o-1/events/", {"type": "approved", "payload": "{}"})
    alice.post("/instances/o-1/pause/")
    alice.post("/instances/o-1/nonsense/")  # 404: nothing done, nothing written
    entries = AuditLog.objects.filter(tenant=acme).select_related("actor").reverse()
    assert [(e.action, e.actor.username, e.actor_token) for e in entries] == [
        ("workflow.uploaded", "alice", None),
        ("instance.started", "alice", None),
        ("event.sent", "alice", None),
        ("instance.paused", "alice", None),
    ]


def entry_at(tenant, action: str, when: str, **actor) -> AuditLog:
    return AuditLog.objects.create(
        tenant=tenant, action=action, created_at=datetime.fromisoformat(when), **actor
    )


def shown(page) -> list[str]:
    return [f"{e.action}@{e.created_at:%m-%d}" for e in page.context["entries"]]


@pytest.fixture
def history(acme):
    alice = get_user_model().objects.get(username="alice")
    token = ApiToken.objects.create(tenant=acme, name="deploy", prefix="sw_abc", token_hash="h")
    entry_at(acme, "instance.started", "2026-03-01T10:00:00+00:00", actor=alice)
    entry_at(acme, "instance.paused", "2026-03-02T23:59:00+00:00", actor_token=token)
    entry_at(acme, "token.created", "2026-03-03T00:00:00+00:00", actor=alice)
    return token


def test_the_audit_page_filters_by_actor_action_and_days(alice, history):
    assert shown(alice.get("/audit/", {"actor": "deploy"})) == ["instance.paused@03-02"]
    assert shown(alice.get("/audit/", {"actor": "sw_abc"})) == ["instance.paused@03-02"]
    assert len(shown(alice.get("/audit/", {"actor": "alice"}))) == 2
    assert shown(alice.get("/audit/", {"action": "token.created"})) == ["token.created@03-03"]
    assert shown(alice.get("/audit/", {"action": "instance."})) == [
        "instance.paused@03-02",
        "instance.started@03-01",
    ]
    days = {"since": "2026-03-02", "until": "2026-03-02"}
    assert shown(alice.get("/audit/", days)) == ["instance.paused@03-02"]
    assert shown(alice.get("/audit/", {"since": "2026-03-03", "actor": "deploy"})) == []


@pytest.mark.parametrize(
    "query",
    [{"since": "yesterday"}, {"since": "2026-03-03", "until": "2026-03-01"}, {"page": "0"}],
)
def test_bad_filters_are_a_400_naming_the_field(alice, history, query):
    page = alice.get("/audit/", query)
    assert page.status_code == 400
    assert set(page.context["form"].errors) <= {*query, "until"}
    assert page.context["entries"] == []


def test_the_audit_page_comes_in_pages(alice, acme, monkeypatch):
    monkeypatch.setattr(views, "AUDIT_PAGE_SIZE", 2)
    for day in range(1, 6):
        entry_at(acme, "event.sent", f"2026-03-0{day}T12:00:00+00:00")
    first = alice.get("/audit/", {"action": "event.sent"})
    assert shown(first) == ["event.sent@03-05", "event.sent@03-04"]
    assert (
        first.context["next_page"] == 2 and "action=event.sent&amp;page=2" in first.content.decode()
    )
    last = alice.get("/audit/", {"action": "event.sent", "page": 3})
    assert shown(last) == ["event.sent@03-01"] and last.context["next_page"] is None
