"""Fair scheduling and quarantine with real workers, nsjail, PostgreSQL and Redis."""

import time

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Min

from execution import moderation, workflows
from execution.models import Instance, Step
from tests.factories import make_tenant, upload
from tests.integration.stack import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WORK = """
def run(event, step):
    return [step.do(f"work {i}", lambda i=i: i) for i in range(3)]
"""
# Steps of real length: with trivial ones warm workers finish all 300 instances in
# about two seconds, before the second tenant starts, and the test shows nothing.
FLOOD = """
import time

def run(event, step):
    return [step.do(f"work {i}", lambda i=i: time.sleep(0.02) or i) for i in range(3)]
"""


def test_a_flooding_tenant_does_not_starve_another(stack):
    acme = make_tenant("acme", "alice", concurrent_activations=4)
    globex = make_tenant("globex", "bob", concurrent_activations=4)
    flood = upload(acme, "flood", FLOOD).workflow
    for _ in range(300):
        workflows.start_instance(flood)
    time.sleep(2)  # the flood is in full swing
    started = time.monotonic()
    bob, _ = workflows.start_instance(upload(globex, "single", WORK).workflow)
    wait_until(lambda: Step.objects.filter(instance=bob).exists(), 20, what="bob's first step")
    first_step_after = time.monotonic() - started
    wait_until(
        lambda: Instance.objects.get(pk=bob.pk).status == "complete",
        30,
        what="bob's instance to complete",
    )
    acme_done = Instance.objects.filter(tenant=acme, status="complete").count()
    assert first_step_after < 5, first_step_after
    assert acme_done < 300, "the flood was over before bob started; the test proves nothing"


def test_quarantine_pauses_a_sleeping_instance_and_lifting_it_lets_it_finish(stack):
    acme = make_tenant("acme", "alice")
    staff = get_user_model().objects.create_user("mod", is_staff=True)
    version = upload(
        acme,
        "q",
        """
    def run(event, step):
        step.do("before", lambda: 1)
        step.sleep("nap", "1 second")
        return step.do("after", lambda: 2)
    """,
    ).version
    instance, _ = workflows.start_instance(version.workflow)
    wait_until(
        lambda: Step.objects.filter(instance=instance, name="nap").exists(), 30, what="the nap"
    )
    moderation.review(version, "quarantined", actor=staff, reason="suspicious")
    time.sleep(2)  # past the wake time: a quarantined instance must not run
    instance.refresh_from_db()
    assert (instance.status, instance.paused_reason) == ("paused", "quarantine")
    assert not Step.objects.filter(instance=instance, name="after").exists()
    moderation.review(version, "approved", actor=staff, reason="looked fine")
    wait_until(
        lambda: Instance.objects.get(pk=instance.pk).status == "complete",
        30,
        what="the instance to finish",
    )
    assert Instance.objects.get(pk=instance.pk).output == 2
    assert Step.objects.filter(instance=instance).aggregate(Min("attempts"))["attempts__min"] == 1
