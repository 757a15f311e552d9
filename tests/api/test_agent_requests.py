"""API.md's "Changes that agents asked for": attempts, waits, events, versions, terminate,
an unchanged upload, and JSON for every error under /api/v1."""

import json

from django.http import HttpResponse, HttpResponseServerError
from django.test import RequestFactory

from console.api_answers import JSONErrorsUnderAPI
from execution.models import Workflow

FLAKY = """
def run(event, step):
    def boom():
        print("trying")
        raise ValueError("nope")

    try:
        step.do("boom", boom, retries={"limit": 1, "delay": 0, "backoff": "constant"})
    except Exception:
        pass
    got = step.wait_for_event("approval", "approved")
    child = step.start_workflow("kid", "child", {}, instance_id="kid-1")
    return [got, step.wait_for_workflow("kid", child)]
"""

CHILD = """
def run(event, step):
    return step.wait_for_event("go", "go")
"""


def started(alice, driver, key="job"):
    alice.call("put", "/workflows/child", {"code": CHILD})
    alice.call("put", "/workflows/flaky", {"code": FLAKY})
    assert alice.call("post", "/workflows/flaky/instances", {"id": key})[0] == 201
    driver.drain()
    return alice.call("get", f"/instances/{key}")[1]


def test_a_step_lists_every_attempt_and_a_wait_says_what_it_waits_for(alice, driver):
    body = started(alice, driver)
    boom, approval = body["steps"]
    assert [(a["attempt"], a["status"]) for a in boom["attempts_detail"]] == [
        (1, "failed"),
        (2, "failed"),
    ]
    for attempt in boom["attempts_detail"]:
        assert attempt["error"]["message"] == "nope" and "trying" in attempt["logs"]
        assert attempt["started_at"] <= attempt["finished_at"]
    assert boom["waiting_for"] is None
    assert approval["waiting_for"] == {"event_type": "approved"}
    assert approval["attempts_detail"][0]["status"] == "waiting"

    alice.call("post", "/instances/job/events", {"type": "approved", "payload": 1})
    driver.drain()
    kid_wait = alice.call("get", "/instances/job")[1]["steps"][3]
    assert kid_wait["waiting_for"] == {"instance": "kid-1"}
    assert json.loads(json.dumps(body)) == body


def test_events_are_listed_oldest_first_with_what_consumed_them(alice, bob, driver):
    started(alice, driver)
    alice.call("post", "/instances/job/events", {"type": "other", "payload": {"n": 1}})
    alice.call("post", "/instances/job/events", {"type": "approved", "payload": {"n": 2}})
    driver.drain()
    status, page = alice.call("get", "/instances/job/events")
    assert status == 200 and page["next_cursor"] is None
    assert [(e["type"], e["payload"], e["consumed_by"]) for e in page["items"]] == [
        ("other", {"n": 1}, None),
        ("approved", {"n": 2}, 1),
    ]
    assert page["items"][0]["sent_at"] <= page["items"][1]["sent_at"]

    first = alice.call("get", "/instances/job/events?limit=1")[1]
    assert [e["type"] for e in first["items"]] == ["other"] and first["next_cursor"]
    rest = alice.call("get", f"/instances/job/events?limit=1&cursor={first['next_cursor']}")[1]
    assert [e["type"] for e in rest["items"]] == ["approved"] and rest["next_cursor"] is None
    assert alice.call("get", "/instances/job/events?cursor=x")[0] == 422
    assert bob.call("get", "/instances/job/events")[0] == 404
    assert alice.call("get", "/instances/nope/events")[0] == 404


def test_sending_an_event_says_whether_a_wait_took_it(alice, driver):
    started(alice, driver)
    status, body = alice.call("post", "/instances/job/events", {"type": "other"})
    assert (status, body["matched"]) == (202, False)
    assert "no step waits for 'other'" in body["detail"]
    status, body = alice.call("post", "/instances/job/events", {"type": "approved"})
    assert (status, body["matched"]) == (202, True)


def test_an_event_to_an_ended_instance_is_not_matched_and_says_it_ended(alice, driver):
    started(alice, driver)
    alice.call("post", "/instances/job/terminate")
    status, body = alice.call("post", "/instances/job/events", {"type": "approved"})
    assert (status, body["matched"]) == (202, False)
    assert body["detail"] == "the instance has ended (terminated): nothing will consume the event"


def test_terminate_cancels_the_open_step(alice, driver):
    started(alice, driver)
    status, body = alice.call("post", "/instances/job/terminate")
    assert status == 200
    assert [s["status"] for s in body["steps"]] == ["errored", "cancelled"]


def test_a_version_and_its_code_by_sha256(alice, bob):
    sha = alice.call("put", "/workflows/child", {"code": CHILD})[1]["version"]["sha256"]
    status, version = alice.call("get", f"/workflows/child/versions/{sha}")
    assert status == 200
    assert (version["sha256"], version["status"], version["code"]) == (sha, "approved", CHILD)
    assert alice.call("get", f"/workflows/child/versions/{'0' * 64}")[0] == 404
    assert alice.call("get", "/workflows/child/versions/ABC")[0] == 422
    assert alice.call("get", f"/workflows/nope/versions/{sha}")[0] == 404
    assert bob.call("get", f"/workflows/child/versions/{sha}")[0] == 404
    bob.call("put", "/workflows/child", {"code": CHILD})  # the same code, bob's own
    assert bob.call("get", f"/workflows/child/versions/{sha}")[1]["code"] == CHILD


def test_putting_the_current_code_without_a_description_changes_nothing(alice):
    alice.call("put", "/workflows/child", {"code": CHILD, "description": "waits"})
    before = Workflow.objects.get(name="child")
    status, body = alice.call("put", "/workflows/child", {"code": CHILD})
    assert status == 200 and body["description"] == "waits"
    after = Workflow.objects.get(name="child")
    assert (after.description, after.updated_at) == ("waits", before.updated_at)
    assert alice.call("put", "/workflows/child", {"code": CHILD, "description": "new"})[0] == 200
    assert Workflow.objects.get(name="child").description == "new"


def test_a_method_a_route_does_not_take_is_405_in_json(alice):
    response = alice.request("delete", "/workflows")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"] == "DELETE is not allowed on /api/v1/workflows; allowed: GET"
    assert response["Allow"] == "GET"


def test_an_unknown_path_under_the_api_is_404_in_json(alice, client):
    for response in (alice.request("get", "/nothing/here"), client.post("/api/v2/x")):
        assert response.status_code == 404
        assert "no route for" in response.json()["detail"]


def test_an_error_page_made_outside_the_api_views_becomes_json():
    request = RequestFactory().get("/api/v1/workflows")
    answer = JSONErrorsUnderAPI(lambda r: HttpResponseServerError("<h1>Server Error</h1>"))(request)
    assert (answer.status_code, json.loads(answer.content)) == (500, {"detail": "internal error"})
    page = RequestFactory().get("/workflows/")
    html = HttpResponse("<h1>gone</h1>", status=410)
    assert JSONErrorsUnderAPI(lambda r: html)(page) is html  # the console keeps its pages
