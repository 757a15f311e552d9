"""The instance page's history download, runs, "restart from here" and rerun."""

import json

import pytest

from execution.models import Instance, Run, Step
from execution.workflows import start_instance
from tenants.models import AuditLog
from tests.console.conftest import ORDER_FLOW
from tests.factories import upload

FETCH = {"x-requested-with": "fetch"}


@pytest.fixture
def orders(acme):
    return upload(acme, "orders", ORDER_FLOW).workflow


@pytest.fixture
def instance(orders):
    """An instance that priced its order and sleeps: two steps recorded."""
    instance, _ = start_instance(orders, payload={"items": [1, 2]}, key="o-1")
    Step.objects.create(
        instance=instance, index=0, name="price", kind="do", status="complete", output=3
    )
    Step.objects.create(
        instance=instance,
        index=1,
        name="cool-off",
        kind="sleep",
        status="complete",
        shape={"duration_seconds": 1.0},
    )
    return instance


def test_the_instance_page_has_the_history_runs_and_rerun_controls(alice, instance, orders):
    page = alice.get("/instances/o-1/").content.decode()

    assert 'id="download-history" href="/instances/o-1/history/?download=1"' in page
    assert 'action="/instances/o-1/restart/"' in page
    assert 'action="/instances/o-1/rerun/"' in page
    assert 'data-run="1"' in page
    assert orders.current_version.sha256 in page  # the versions "restart from here" offers
    assert "Restart from here" in alice.get("/static/console/instance.js").getvalue().decode()


def test_the_history_downloads_as_the_api_gives_it(alice, instance):
    response = alice.get("/instances/o-1/history/?download=1")

    assert response["Content-Disposition"] == 'attachment; filename="o-1.run1.history.json"'
    body = json.loads(response.content)
    assert body["format"] == "stepwell.history/1"
    assert [s["shape"] for s in body["steps"]] == [{}, {"duration_seconds": 1.0}]
    assert alice.get("/instances/o-1/history/?run=2").status_code == 404
    assert alice.get("/instances/o-1/history/?run=x").status_code == 404


def test_restart_from_a_step_keeps_the_steps_before_it(alice, instance, orders):
    v2 = upload(instance.tenant, "orders", ORDER_FLOW + "\n# v2\n").version

    response = alice.post(
        "/instances/o-1/restart/", {"from_step": "1", "version": v2.sha256}, headers=FETCH
    )

    assert response.json() == {"ok": True, "detail": "Restarted."}
    instance.refresh_from_db()
    assert (instance.run, instance.version_id, instance.steps.count()) == (2, v2.pk, 1)
    assert len(Run.objects.get(instance=instance).steps) == 2
    assert alice.get("/instances/o-1/history/?run=1").json()["run"] == 1
    assert AuditLog.objects.get(action="instance.restarted").actor.username == "alice"


def test_restart_from_the_page_says_what_it_cannot_do(alice, instance):
    bad = alice.post("/instances/o-1/restart/", {"from_step": "7"}, headers=FETCH)
    assert bad.status_code == 400 and "from_step is 7" in bad.json()["detail"]
    bad = alice.post("/instances/o-1/restart/", {"version": "x"}, headers=FETCH)
    assert bad.status_code == 400 and "sha256" in bad.json()["detail"]


def test_rerun_opens_the_new_instance(alice, instance):
    response = alice.post("/instances/o-1/rerun/", {"payload": '{"items": [5]}', "key": "o-2"})

    assert response.status_code == 302 and response["Location"] == "/instances/o-2/"
    assert Instance.objects.get(key="o-2").payload == {"items": [5]}
    fetched = alice.post("/instances/o-1/rerun/", {"payload": "{}"}, headers=FETCH).json()
    assert fetched["ok"] and fetched["url"].startswith("/instances/")


@pytest.mark.parametrize("path", ["history/", "restart/", "rerun/"])
def test_bob_gets_404_and_carol_cannot_change_anything(bob, carol, instance, path):
    call = bob.get if path == "history/" else bob.post
    assert call(f"/instances/o-1/{path}").status_code == 404
    if path != "history/":
        assert carol.post(f"/instances/o-1/{path}").status_code == 403
    assert Instance.objects.get(key="o-1").run == 1
