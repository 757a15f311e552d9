"""The review queue and the review page: code, diff, flags and decisions with reasons."""

import pytest
from django.urls import reverse

from execution import workflows
from execution.models import CodeVersion
from tenants.models import AuditLog, Tenant
from tests.factories import make_token, upload
from tests.operators.conftest import SLEEPER

QUEUE = reverse("admin:execution_codeversion_changelist")

FIRST = """
def run(event, step):
    return step.do("greet", lambda: "hello")
"""
SECOND = """
import socket

def run(event, step):
    if event.get("n", 0) < 1:
        return "<nothing>"
    return step.do("greet", lambda: "hello, world")
"""


def page(version: CodeVersion) -> str:
    return reverse("admin:execution_codeversion_change", args=[version.pk])


def hold_for_review(tenant: Tenant) -> None:
    tenant.review_policy = Tenant.ReviewPolicy.MANUAL
    tenant.save()


@pytest.fixture
def pending(acme):
    """A version awaiting review, uploaded after an approved one of the same workflow."""
    approved = upload(acme, "greeter", FIRST).version
    hold_for_review(acme)
    version = upload(acme, "greeter", SECOND).version
    assert (approved.status, version.status) == ("approved", "pending_review")
    return version


def test_the_review_queue_lists_pending_versions_only(staff_client, acme, pending):
    other = upload(acme, "other", FIRST).version
    CodeVersion.objects.filter(pk=other.pk).update(status="rejected")
    listed = list(staff_client.get(QUEUE).context["cl"].queryset)
    assert listed == [pending]
    everything = staff_client.get(QUEUE, {"status": "all"}).context["cl"].queryset
    assert set(everything) == set(CodeVersion.objects.all())
    assert list(staff_client.get(QUEUE, {"status": "rejected"}).context["cl"].queryset) == [other]


def test_the_review_page_shows_highlighted_code_the_diff_and_the_flags(staff_client, pending):
    html = staff_client.get(page(pending)).content.decode()
    assert '<span class="tok-kw">def</span> <span class="tok-def">run</span>' in html
    # Tenant code is text, never markup.
    assert '<span class="tok-str">&quot;&lt;nothing&gt;&quot;</span>' in html
    assert "<nothing>" not in html
    baseline = pending.workflow.versions.get(status="approved")
    assert f"approved {baseline.sha256[:12]}" in html
    assert '<span class="diff-add">+import socket</span>' in html
    assert (
        '<span class="diff-del">-    return step.do(&quot;greet&quot;, lambda: &quot;hello&quot;)'
        in html
    )
    assert "line 2</a>: imports socket: opens network connections" in html
    assert '<tr id="L2" class="flagged">' in html


def test_a_first_version_has_nothing_to_compare_with(staff_client, acme):
    hold_for_review(acme)
    version = upload(acme, "fresh", FIRST).version
    html = staff_client.get(page(version)).content.decode()
    assert "First version" in html
    assert "No flags" in html


def test_a_decision_without_a_reason_shows_an_error_and_changes_nothing(staff_client, pending):
    response = staff_client.post(page(pending), {"decision": "approved", "reason": "   "})
    assert response.status_code == 200
    assert "A reason is required: the tenant sees it." in response.content.decode()
    pending.refresh_from_db()
    assert (pending.status, pending.status_reason, pending.reviewed_by) == (
        "pending_review",
        "",
        None,
    )
    assert not AuditLog.objects.exists()


def test_an_unknown_decision_is_refused(staff_client, pending):
    response = staff_client.post(page(pending), {"decision": "pending_review", "reason": "x"})
    assert response.status_code == 200
    pending.refresh_from_db()
    assert pending.status == "pending_review"


@pytest.mark.parametrize("decision", ["approved", "rejected", "quarantined"])
def test_each_decision_is_recorded_and_the_tenant_reads_the_reason_in_the_api(
    staff_client, client, operator, acme, pending, decision
):
    reason = f"{decision}: opens a socket to the billing host"
    response = staff_client.post(page(pending), {"decision": decision, "reason": reason})
    assert response.status_code == 302
    pending.refresh_from_db()
    assert (pending.status, pending.status_reason, pending.reviewed_by) == (
        decision,
        reason,
        operator,
    )
    entry = AuditLog.objects.get(action=f"version.{decision}")
    assert (entry.actor, entry.tenant, entry.reason) == (operator, acme, reason)
    assert entry.target_id == str(pending.pk)

    client.logout()
    headers = {"Authorization": f"Bearer {make_token(acme)}"}
    body = client.get("/api/v1/workflows/greeter", headers=headers).json()
    mine = next(v for v in body["versions"] if v["id"] == pending.pk)
    assert (mine["status"], mine["status_reason"]) == (decision, reason)


def test_quarantine_from_the_admin_pauses_a_sleeping_instance_and_lifting_it_resumes(
    driver, staff_client, acme
):
    version = upload(acme, "sleeper", SLEEPER).version
    instance = driver.run(workflows.start_instance(version.workflow)[0])
    assert instance.status == "sleeping"

    staff_client.post(page(version), {"decision": "quarantined", "reason": "mining crypto"})
    instance.refresh_from_db()
    assert (instance.status, instance.paused_reason) == ("paused", "quarantine")

    staff_client.post(page(version), {"decision": "approved", "reason": "false alarm"})
    instance = driver.run(instance)
    assert instance.status == "sleeping"
    assert list(instance.steps.values_list("name", flat=True)) == ["one", "nap"]


def test_rejecting_an_approved_version_from_the_admin_pauses_its_instances(
    driver, staff_client, acme
):
    version = upload(acme, "sleeper", SLEEPER).version
    sleeping = driver.run(workflows.start_instance(version.workflow)[0])
    queued, _ = workflows.start_instance(version.workflow)

    staff_client.post(page(version), {"decision": "rejected", "reason": "calls home"})
    driver.drain()  # the message sent at the start finds it paused: nothing runs
    for instance in (sleeping, queued):
        instance.refresh_from_db()
        assert (instance.status, instance.paused_reason) == ("paused", "rejection")
    assert queued.steps.count() == 0
    with pytest.raises(workflows.StateConflict, match="rejected: calls home"):
        workflows.resume(queued)


def test_the_page_offers_the_decisions_other_than_the_current_status(staff_client, pending):
    CodeVersion.objects.filter(pk=pending.pk).update(status="approved")
    html = staff_client.get(page(pending)).content.decode()
    assert 'value="approved"' not in html
    assert 'value="rejected"' in html and 'value="quarantined"' in html
