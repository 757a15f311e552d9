"""Staff decisions hold through the API: what the tenant may no longer resume or restart."""

from execution import moderation
from execution.models import CodeVersion
from tests.factories import SLEEPER

ONE_STEP = """
def run(event, step):
    return step.do("one", lambda: 1)
"""


def start(alice, driver, name: str, code: str, key: str) -> CodeVersion:
    status, body = alice.call("put", f"/workflows/{name}", {"code": code})
    assert status == 201
    assert alice.call("post", f"/workflows/{name}/instances", {"id": key})[0] == 201
    driver.drain()
    return CodeVersion.objects.get(sha256=body["version"]["sha256"])


def test_resuming_a_quarantined_instance_is_409_with_the_reason(alice, driver, staff):
    version = start(alice, driver, "q", SLEEPER, "held")
    assert alice.call("get", "/instances/held")[1]["status"] == "sleeping"
    moderation.review(version, "quarantined", actor=staff, reason="mining crypto")
    assert alice.call("get", "/instances/held")[1]["status"] == "paused"
    status, body = alice.call("post", "/instances/held/resume")
    assert status == 409
    assert "quarantine" in body["detail"] and "mining crypto" in body["detail"]
    driver.drain()
    assert alice.call("get", "/instances/held")[1]["status"] == "paused"
    moderation.review(version, "approved", actor=staff, reason="false alarm")
    driver.drain()
    assert alice.call("get", "/instances/held")[1]["status"] == "sleeping"


def test_resuming_a_suspended_tenants_instance_is_409_and_its_own_pause_stays_resumable(
    alice, acme, driver, staff
):
    start(alice, driver, "s", SLEEPER, "mine")
    assert alice.call("post", "/instances/mine/pause")[0] == 200
    status, body = alice.call("post", "/instances/mine/resume")
    assert (status, body["status"]) == (200, "sleeping")
    moderation.suspend_tenant(acme, actor=staff, reason="unpaid invoice")
    moderation.unsuspend_tenant(acme, actor=staff, reason="paid")  # tokens stop meanwhile
    assert alice.call("get", "/instances/mine")[1]["status"] == "sleeping"


def test_restarting_a_finished_instance_of_a_rejected_version_is_409(alice, driver, staff):
    version = start(alice, driver, "done", ONE_STEP, "finished")
    assert alice.call("get", "/instances/finished")[1]["status"] == "complete"
    moderation.review(version, "rejected", actor=staff, reason="calls out to the network")
    status, body = alice.call("post", "/instances/finished/restart")
    assert status == 409 and "rejected: calls out to the network" in body["detail"]
    status, body = alice.call("get", "/instances/finished")
    assert (body["status"], body["output"], len(body["steps"])) == ("complete", 1, 1)


def test_rejecting_an_approved_version_pauses_its_instances(alice, driver, staff):
    version = start(alice, driver, "r", SLEEPER, "sleepy")
    assert alice.call("post", "/workflows/r/instances", {"id": "queued"})[0] == 201
    moderation.review(version, "rejected", actor=staff, reason="calls out to the network")
    driver.drain()
    for key in ("sleepy", "queued"):
        assert alice.call("get", f"/instances/{key}")[1]["status"] == "paused"
    status, body = alice.call("post", "/instances/queued/resume")
    assert status == 409 and "rejection" in body["detail"]
    status, body = alice.call("post", "/workflows/r/instances", {})
    assert status == 409 and "rejected" in body["detail"]
