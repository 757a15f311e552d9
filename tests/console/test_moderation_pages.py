"""Staff decisions hold in the console too: resume and restart answer 409 with the reason."""

import pytest

from execution import moderation, workflows
from execution.models import Instance
from tests.console.conftest import ORDER_FLOW
from tests.factories import upload

FETCH = {"x-requested-with": "fetch"}


@pytest.fixture
def version(acme):
    return upload(acme, "orders", ORDER_FLOW).version


def test_resuming_a_quarantined_instance_from_the_page_is_409_with_the_reason(
    alice, version, staff
):
    instance, _ = workflows.start_instance(version.workflow, key="held")
    moderation.review(version, "quarantined", actor=staff, reason="mining crypto")
    refused = alice.post("/instances/held/resume/", headers=FETCH)
    assert refused.status_code == 409
    assert "quarantine" in refused.json()["detail"]
    assert "mining crypto" in refused.json()["detail"]
    page = alice.post("/instances/held/resume/", follow=True)
    assert b"mining crypto" in page.content
    instance.refresh_from_db()
    assert (instance.status, instance.paused_reason) == ("paused", "quarantine")


def test_a_pause_from_the_page_stays_resumable(alice, version):
    instance, _ = workflows.start_instance(version.workflow, key="mine")
    assert alice.post("/instances/mine/pause/").status_code == 302
    assert alice.post("/instances/mine/resume/", headers=FETCH).status_code == 200
    instance.refresh_from_db()
    assert instance.status == "queued"


def test_restarting_an_instance_of_a_rejected_version_from_the_page_is_409(alice, version, staff):
    instance, _ = workflows.start_instance(version.workflow, key="done")
    workflows.terminate(instance)
    moderation.review(version, "rejected", actor=staff, reason="calls out to the network")
    refused = alice.post("/instances/done/restart/", headers=FETCH)
    assert refused.status_code == 409
    assert "rejected: calls out to the network" in refused.json()["detail"]
    assert Instance.objects.get(pk=instance.pk).status == "terminated"
