import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from execution import dispatch
from tenants.models import Membership

ORDER_FLOW = """\
from stepwell import NonRetryableError


def run(event, step):
    total = step.do("price", lambda: sum(event.payload.get("items", [1, 2])))
    step.sleep("cool-off", "1 second")
    decision = step.wait_for_event("approval", event_type="approved", timeout="1 hour")
    return {"total": total, "by": decision["by"]}
"""


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    """Starts are recorded but never reach a worker: these tests drive the rows directly."""
    sent = []
    monkeypatch.setattr(dispatch, "enqueue", sent.append)
    return sent


def client_for(username: str) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    return client


@pytest.fixture
def alice(acme):
    return client_for("alice")


@pytest.fixture
def bob(globex):
    return client_for("bob")


@pytest.fixture
def carol(acme):
    """A viewer of acme: reads everything, changes nothing."""
    user = get_user_model().objects.create_user("carol", password="pw-carol-123!")
    Membership.objects.create(tenant=acme, user=user, role=Membership.Role.VIEWER)
    return client_for("carol")
