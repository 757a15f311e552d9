"""Staff decisions: review, quarantine, suspension and termination, each audited."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from execution import moderation, runs, workflows
from execution.lifecycle import due, leases
from execution.models import CodeVersion, Instance
from tenants.models import AuditLog, Tenant
from tenants.tokens import authenticate_token
from tests.factories import SLEEPER, WAITER, make_token, upload


@pytest.fixture
def staff(transactional_db):
    return get_user_model().objects.create_user("mod", is_staff=True)


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


# -- Moderation holds at every entrance (SANDBOX.md case 26) ------------------------

ONE_STEP = """
def run(event, step):
    return step.do("one", lambda: 1)
"""


# The claim's ways that this database runs: its ORM twin everywhere, the statement on PostgreSQL.
PATHS = ["sql", "orm"] if connection.vendor == "postgresql" else ["orm"]


def claim_by(path: str, instance_pk: int) -> bool:
    """The engine's claim, by the PostgreSQL statement or by its ORM twin (SQLite's)."""
    with transaction.atomic():
        if path == "sql":
            now = timezone.now()
            return (
                leases.claim_in_three_statements(
                    instance_pk, "w", now, now + leases.lease_duration()
                )
                is not None
            )
        return leases.take_lease(instance_pk, "w")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("verdict", "held_by"),
    [("quarantined", "quarantine"), ("rejected", "rejection"), ("pending_review", "review")],
)
def test_an_instance_of_a_version_that_is_not_approved_is_never_claimed(
    driver, acme, staff, path, verdict, held_by
):
    version = upload(acme, "wf", ONE_STEP).version
    instance, _ = workflows.start_instance(version.workflow)
    # The verdict lands while the instance is queued and already sent to a worker, as if
    # the staff's pass over its instances had missed it: the claim alone must hold it.
    CodeVersion.objects.filter(pk=version.pk).update(status=verdict, status_reason="mines coins")
    assert not claim_by(path, instance.pk)
    instance.refresh_from_db()
    assert (instance.status, instance.paused_reason) == ("paused", held_by)
    assert (instance.lease_owner, instance.activations) == ("", 0)
    assert instance.status_before_pause == "queued"
    driver.queue.clear()
    # No longer due, even once a lost message would be sent again: it holds no worker.
    assert due.sweep(now=timezone.now() + timedelta(hours=1)) == 0
    assert driver.queue == [] and not claim_by(path, instance.pk)
    moderation.review(version, "approved", actor=staff, reason="checked")
    assert driver.run(instance).status == "complete"


def test_a_version_quarantined_while_its_instance_is_queued_is_paused_and_not_claimed(
    driver, acme, staff
):
    version = upload(acme, "wf", ONE_STEP).version
    instance, _ = workflows.start_instance(version.workflow)
    moderation.review(version, "quarantined", actor=staff, reason="mining crypto")
    for path in PATHS:
        assert not claim_by(path, instance.pk)
    driver.drain()  # the message sent at the start finds it paused
    instance.refresh_from_db()
    assert (instance.status, instance.paused_reason, instance.activations) == (
        "paused",
        "quarantine",
        0,
    )


def test_the_tenant_cannot_resume_a_quarantine_pause_but_may_resume_its_own(driver, acme, staff):
    version = upload(acme, "q", SLEEPER).version
    held = driver.run(workflows.start_instance(version.workflow)[0])
    mine = driver.run(workflows.start_instance(version.workflow)[0])
    workflows.pause(mine)
    moderation.review(version, "quarantined", actor=staff, reason="mining crypto")
    with pytest.raises(workflows.StateConflict, match=r"paused for quarantine.*mining crypto"):
        workflows.resume(held)
    # The tenant's own pause is still the tenant's, but the code may not run meanwhile.
    with pytest.raises(workflows.StateConflict, match=r"cannot run.*quarantined: mining crypto"):
        workflows.resume(mine)
    held.refresh_from_db()
    assert (held.status, held.paused_reason) == ("paused", "quarantine")
    moderation.review(version, "approved", actor=staff, reason="false alarm")
    workflows.resume(mine)
    assert driver.run(mine).status == "sleeping"
    assert driver.run(held).status == "sleeping"


def test_the_tenant_cannot_resume_a_suspension_pause(driver, acme, staff):
    instance = driver.run(workflows.start_instance(upload(acme, "s", SLEEPER).workflow)[0])
    moderation.suspend_tenant(acme, actor=staff, reason="unpaid invoice")
    with pytest.raises(workflows.StateConflict, match=r"paused for suspension.*'acme' is susp"):
        workflows.resume(instance)


def test_rejecting_an_approved_version_pauses_its_instances_and_approving_resumes_them(
    driver, acme, staff
):
    version = upload(acme, "r", SLEEPER).version
    waiting = upload(acme, "w", WAITER).version
    sleeping = driver.run(workflows.start_instance(version.workflow)[0])
    waiter = driver.run(workflows.start_instance(waiting.workflow)[0])
    queued, _ = workflows.start_instance(version.workflow)
    moderation.review(version, "rejected", actor=staff, reason="calls out to the network")
    moderation.review(waiting, "rejected", actor=staff, reason="same")
    driver.drain()
    for instance, before in ((sleeping, "sleeping"), (waiter, "waiting"), (queued, "queued")):
        instance.refresh_from_db()
        assert (instance.status, instance.paused_reason) == ("paused", "rejection")
        assert instance.status_before_pause == before
    entry = AuditLog.objects.get(action="version.rejected", target_id=str(version.pk))
    assert entry.details["paused"] == 2
    moderation.review(version, "approved", actor=staff, reason="fixed")
    assert driver.run(sleeping).status == "sleeping"
    assert driver.run(queued).status == "sleeping"
    waiter.refresh_from_db()
    assert waiter.status == "paused"  # its own version is still rejected


def test_quarantining_then_rejecting_keeps_the_instances_paused(driver, acme, staff):
    version = upload(acme, "q", SLEEPER).version
    instance = driver.run(workflows.start_instance(version.workflow)[0])
    moderation.review(version, "quarantined", actor=staff, reason="looks bad")
    moderation.review(version, "rejected", actor=staff, reason="is bad")
    driver.drain()
    instance.refresh_from_db()
    assert (instance.status, instance.paused_reason) == ("paused", "rejection")
    moderation.review(version, "approved", actor=staff, reason="is fine after all")
    assert driver.run(instance).status == "sleeping"


def test_lifting_one_decision_leaves_an_instance_paused_for_another(driver, acme, staff):
    version = upload(acme, "q", SLEEPER).version
    instance = driver.run(workflows.start_instance(version.workflow)[0])
    moderation.review(version, "quarantined", actor=staff, reason="looks bad")
    moderation.suspend_tenant(acme, actor=staff, reason="unpaid invoice")
    moderation.review(version, "approved", actor=staff, reason="fine")
    instance.refresh_from_db()
    assert (instance.status, instance.paused_reason) == ("paused", "suspension")
    moderation.unsuspend_tenant(acme, actor=staff, reason="paid")
    assert driver.run(instance).status == "sleeping"


@pytest.mark.parametrize("verdict", ["rejected", "quarantined"])
def test_a_finished_instance_of_a_version_that_is_not_approved_cannot_restart(
    driver, acme, staff, verdict
):
    version = upload(acme, "done", ONE_STEP).version
    instance = driver.run(workflows.start_instance(version.workflow)[0])
    assert instance.status == "complete"
    moderation.review(version, verdict, actor=staff, reason="calls out to the network")
    with pytest.raises(workflows.StateConflict, match=f"{verdict}: calls out to the network"):
        runs.restart(instance)
    instance.refresh_from_db()
    assert (instance.status, instance.output, instance.steps.count()) == ("complete", 1, 1)


def test_a_restart_clears_the_tenants_pause(driver, acme):
    instance = driver.run(workflows.start_instance(upload(acme, "p", SLEEPER).workflow)[0])
    workflows.pause(instance)
    runs.restart(instance)
    instance.refresh_from_db()
    assert (instance.status, instance.paused_reason) == ("queued", "")


@pytest.mark.parametrize("verdict", ["pending_review", "rejected", "quarantined"])
def test_a_child_start_of_a_version_that_is_not_approved_is_a_step_error(driver, acme, verdict):
    child = upload(acme, "child", ONE_STEP).version
    CodeVersion.objects.filter(pk=child.pk).update(status=verdict, status_reason="held")
    parent_code = """
    def run(event, step):
        child = step.start_workflow("spawn", "child", {})
        return step.wait_for_workflow("join", child)
    """
    parent, _ = workflows.start_instance(upload(acme, "parent", parent_code).workflow)
    parent = driver.run(parent)
    assert parent.status == "errored"
    assert f"is {verdict}: held" in parent.error["message"]
    assert not Instance.objects.filter(version=child).exists()
