"""Staff decisions: review, quarantine, suspension and termination, each audited."""

import pytest
from django.contrib.auth import get_user_model

from execution import moderation, workflows
from execution.models import CodeVersion
from tenants.models import AuditLog, Tenant
from tenants.tokens import authenticate_token
from tests.factories import SLEEPER, make_tenant, make_token, upload


@pytest.fixture
def staff(transactional_db):
    return get_user_model().objects.create_user("mod", is_staff=True)


@pytest.fixture
def acme(transactional_db):
    return make_tenant("acme", "alice")


def test_a_version_held_for_review_cannot_start_until_approved(driver, acme, staff):
    acme.review_policy = Tenant.ReviewPolicy.MANUAL
    acme.save()
    version = upload(acme, "held", SLEEPER).version
    assert version.status == "pending_review"
    with pytest.raises(workflows.StartError, match="pending_review"):
        workflows.start_instance(version.workflow)
    moderation.review(version, "rejected", actor=staff, reason="calls out to the network")
    with pytest.raises(workflows.StartError, match="calls out to the network"):
        workflows.start_instance(version.workflow)
    moderation.review(version, "approved", actor=staff, reason="fixed upstream")
    instance, _ = workflows.start_instance(version.workflow)
    assert driver.run(instance).status == "sleeping"


def test_a_decision_needs_a_reason(acme, staff):
    version = upload(acme, "wf", SLEEPER).version
    with pytest.raises(moderation.ModerationError, match="reason is required"):
        moderation.review(version, "rejected", actor=staff, reason="  ")


def test_quarantine_pauses_running_instances_and_lifting_it_resumes_them(driver, acme, staff):
    version = upload(acme, "q", SLEEPER).version
    sleeping = driver.run(workflows.start_instance(version.workflow)[0])
    mine = driver.run(workflows.start_instance(version.workflow)[0])
    workflows.pause(mine)  # paused by the tenant: lifting the quarantine leaves it
    moderation.review(version, "quarantined", actor=staff, reason="mining crypto")
    sleeping.refresh_from_db()
    assert (sleeping.status, sleeping.paused_reason) == ("paused", "quarantine")
    with pytest.raises(workflows.StartError, match="quarantined: mining crypto"):
        workflows.start_instance(version.workflow)
    moderation.review(version, "approved", actor=staff, reason="false alarm")
    sleeping = driver.run(sleeping)
    mine.refresh_from_db()
    assert sleeping.status == "sleeping"
    assert list(sleeping.steps.values_list("name", flat=True)) == ["one", "nap"]
    assert (mine.status, mine.paused_reason) == ("paused", "user")
    actions = list(AuditLog.objects.values_list("action", "reason"))
    assert ("version.quarantined", "mining crypto") in actions
    assert ("version.approved", "false alarm") in actions


def test_suspending_a_tenant_pauses_everything_and_stops_its_tokens(driver, acme, staff):
    raw = make_token(acme)
    instance = driver.run(workflows.start_instance(upload(acme, "s", SLEEPER).workflow)[0])
    moderation.suspend_tenant(acme, actor=staff, reason="unpaid invoice")
    instance.refresh_from_db()
    assert (instance.status, instance.paused_reason) == ("paused", "suspension")
    assert authenticate_token(raw) is None
    with pytest.raises(workflows.StartError, match="suspended"):
        workflows.start_instance(instance.workflow)
    moderation.unsuspend_tenant(acme, actor=staff, reason="paid")
    assert driver.run(instance).status == "sleeping"
    assert authenticate_token(raw) is not None
    assert AuditLog.objects.filter(action="tenant.suspended", reason="unpaid invoice").exists()


def test_staff_can_terminate_any_instance_with_a_reason(driver, acme, staff):
    instance = driver.run(workflows.start_instance(upload(acme, "t", SLEEPER).workflow)[0])
    moderation.staff_terminate(instance, actor=staff, reason="abuse report #12")
    instance.refresh_from_db()
    assert instance.status == "terminated"
    entry = AuditLog.objects.get(action="instance.terminated")
    assert (entry.actor, entry.tenant, entry.reason) == (staff, acme, "abuse report #12")


def test_only_real_decisions_are_allowed(acme, staff):
    version = upload(acme, "wf", SLEEPER).version
    with pytest.raises(moderation.ModerationError):
        moderation.review(version, CodeVersion.Status.PENDING_REVIEW, actor=staff, reason="x")
