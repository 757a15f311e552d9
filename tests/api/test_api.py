"""The core HTTP API of API.md, with the engine driven in this process."""

import json

from tests.api.conftest import Api
from tests.factories import make_token

CODE = """
def run(event, step):
    a = step.do("add", lambda: event.payload["x"] + 1)
    got = step.wait_for_event("go", "go")
    return {"a": a, "got": got}
"""


def test_put_creates_a_version_and_an_unchanged_put_does_not(alice):
    status, body = alice.call("put", "/workflows/adder", {"code": CODE, "description": "adds"})
    assert status == 201
    assert body["version"]["status"] == "approved"
    assert len(body["version"]["sha256"]) == 64
    status, again = alice.call("put", "/workflows/adder", {"code": CODE})
    assert status == 200
    assert again["version"]["sha256"] == body["version"]["sha256"]
    status, detail = alice.call("get", "/workflows/adder")
    assert status == 200 and len(detail["versions"]) == 1
    assert detail["description"] == "adds"


def test_invalid_code_is_422_with_line_and_column(alice):
    status, body = alice.call("put", "/workflows/bad", {"code": "def run(event, step):\n  x = (\n"})
    assert status == 422
    assert body["detail"][0]["line"] == 2
    assert "syntax" in body["detail"][0]["message"]
    status, body = alice.call("put", "/workflows/bad", {"code": "x = 1\n"})
    assert status == 422
    assert "run" in body["detail"][0]["message"]


def test_validate_reports_errors_and_flags_and_saves_nothing(alice):
    status, body = alice.call(
        "post",
        "/workflows/x/validate",
        {"code": "import subprocess\ndef run(event, step):\n  pass\n"},
    )
    assert status == 200
    assert body["ok"] is True
    assert body["flags"][0]["line"] == 1 and "subprocess" in body["flags"][0]["message"]
    assert alice.call("get", "/workflows/x")[0] == 404


def test_an_instance_runs_receives_an_event_and_completes(alice, driver):
    alice.call("put", "/workflows/adder", {"code": CODE})
    status, inst = alice.call(
        "post", "/workflows/adder/instances", {"payload": {"x": 1}, "id": "job-1"}
    )
    assert status == 201 and inst["id"] == "job-1" and inst["status"] == "queued"
    driver.drain()
    status, inst = alice.call("get", "/instances/job-1")
    assert inst["status"] == "waiting"
    assert [s["name"] for s in inst["steps"]] == ["add", "go"]
    assert alice.call("post", "/instances/job-1/events", {"type": "go", "payload": 7})[0] == 202
    driver.drain()
    status, inst = alice.call("get", "/instances/job-1")
    assert (inst["status"], inst["output"]) == ("complete", {"a": 2, "got": 7})
    assert json.loads(json.dumps(inst)) == inst


def test_the_same_id_again_returns_the_existing_instance(alice, driver):
    alice.call("put", "/workflows/adder", {"code": CODE})
    first = alice.call("post", "/workflows/adder/instances", {"payload": {"x": 1}, "id": "k"})
    again = alice.call("post", "/workflows/adder/instances", {"payload": {"x": 2}, "id": "k"})
    assert (first[0], again[0]) == (201, 200)
    assert again[1]["payload"] == {"x": 1}


def test_controls_answer_409_when_the_state_forbids(alice, driver):
    alice.call("put", "/workflows/adder", {"code": CODE})
    alice.call("post", "/workflows/adder/instances", {"payload": {"x": 1}, "id": "c"})
    driver.drain()
    assert alice.call("post", "/instances/c/resume")[0] == 409
    status, inst = alice.call("post", "/instances/c/pause")
    assert (status, inst["status"]) == (200, "paused")
    assert alice.call("post", "/instances/c/resume")[1]["status"] == "waiting"
    assert alice.call("post", "/instances/c/terminate")[1]["status"] == "terminated"
    assert alice.call("post", "/instances/c/terminate")[0] == 409
    status, inst = alice.call("post", "/instances/c/restart")
    assert (status, inst["status"], inst["steps"]) == (200, "queued", [])


def test_listing_filters_and_paginates(alice, driver):
    alice.call("put", "/workflows/adder", {"code": CODE})
    for n in range(5):
        alice.call("post", "/workflows/adder/instances", {"payload": {"x": n}})
    status, page = alice.call("get", "/instances?limit=2")
    assert status == 200 and len(page["items"]) == 2 and page["next_cursor"]
    seen = [i["id"] for i in page["items"]]
    while page["next_cursor"]:
        page = alice.call("get", f"/instances?limit=2&cursor={page['next_cursor']}")[1]
        seen += [i["id"] for i in page["items"]]
    assert len(set(seen)) == 5
    assert alice.call("get", "/instances?status=complete")[1]["items"] == []


def test_a_payload_over_the_quota_is_413(alice, acme):
    acme.quota_row.payload_bytes = 100
    acme.quota_row.save()
    alice.call("put", "/workflows/adder", {"code": CODE})
    status, body = alice.call("post", "/workflows/adder/instances", {"payload": {"x": "y" * 200}})
    assert status == 413 and "limit is 100 bytes" in body["detail"]


def test_missing_or_bad_tokens_are_401(client, acme):
    assert client.get("/api/v1/workflows").status_code == 401
    bad = {"Authorization": "Bearer sw_nope"}
    assert client.get("/api/v1/workflows", headers=bad).status_code == 401


def test_a_read_only_token_cannot_write(client, acme):
    ro = Api(client, make_token(acme, read_only=True))
    assert ro.call("get", "/workflows")[0] == 200
    assert ro.call("put", "/workflows/adder", {"code": CODE})[0] == 403


def test_another_tenant_gets_404_for_everything_of_acme(alice, bob, driver):
    alice.call("put", "/workflows/adder", {"code": CODE})
    alice.call("post", "/workflows/adder/instances", {"payload": {"x": 1}, "id": "secret"})
    assert bob.call("get", "/workflows")[1] == []
    assert bob.call("get", "/workflows/adder")[0] == 404
    assert bob.call("post", "/workflows/adder/instances", {})[0] == 404
    assert bob.call("get", "/instances")[1]["items"] == []
    assert bob.call("get", "/instances/secret")[0] == 404
    assert bob.call("post", "/instances/secret/events", {"type": "go"})[0] == 404
    for action in ("pause", "resume", "terminate", "restart"):
        assert bob.call("post", f"/instances/secret/{action}")[0] == 404
    # bob may use the same id for his own instance without learning anything.
    bob.call("put", "/workflows/adder", {"code": CODE})
    assert bob.call("post", "/workflows/adder/instances", {"id": "secret"})[0] == 201


def test_openapi_is_served(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert "/api/v1/workflows/{name}" in response.json()["paths"]
