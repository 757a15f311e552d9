"""History, runs, restart from a step and rerun over the HTTP API (API.md, "Debugging and
recovery"), with the engine driven in this process."""

import json

from execution.models import CodeVersion
from tenants.models import AuditLog

CODE = """
def run(event, step):
    a = step.do("add", lambda: event.payload["x"] + 1)
    got = step.wait_for_event("go", "go")
    return {"a": a, "got": got}
"""


def waiting(alice, driver, key="job"):
    alice.call("put", "/workflows/adder", {"code": CODE})
    alice.call("post", "/workflows/adder/instances", {"payload": {"x": 1}, "id": key})
    driver.drain()


def complete(alice, driver, key="job"):
    waiting(alice, driver, key)
    alice.call("post", f"/instances/{key}/events", {"type": "go", "payload": 7})
    driver.drain()


def test_the_history_holds_what_a_replay_needs(alice, driver):
    complete(alice, driver)

    status, body = alice.call("get", "/instances/job/history")

    assert status == 200
    assert json.loads(json.dumps(body)) == body
    assert body["format"] == "stepwell.history/1"
    assert (body["workflow"], body["instance"], body["run"]) == ("adder", "job", 1)
    assert body["version"]["code"].strip() == CODE.strip()
    assert (body["payload"], body["status"], body["output"]) == (
        {"x": 1},
        "complete",
        {"a": 2, "got": 7},
    )
    assert [(s["name"], s["kind"], s["output"], s["shape"]) for s in body["steps"]] == [
        ("add", "do", 2, {}),
        ("go", "wait_for_event", 7, {"event_type": "go"}),
    ]
    _, instance = alice.call("get", "/instances/job")
    assert body["created_at"].startswith(instance["created_at"][:19])


def test_a_restart_from_a_step_is_a_new_run_and_the_earlier_run_stays_readable(alice, driver):
    complete(alice, driver)

    status, body = alice.call("post", "/instances/job/restart", {"from_step": 1})
    assert status == 200 and body["status"] == "queued"
    assert [s["name"] for s in body["steps"]] == ["add"]
    driver.drain()

    # The event the discarded wait consumed was there to be consumed again.
    assert alice.call("get", "/instances/job")[1]["output"] == {"a": 2, "got": 7}
    status, page = alice.call("get", "/instances/job/runs")
    assert status == 200 and page["next_cursor"] is None
    assert [(r["run"], r["status"], r["restarted_from_step"]) for r in page["items"]] == [
        (2, "complete", 1),
        (1, "complete", None),
    ]
    status, earlier = alice.call("get", "/instances/job/history?run=1")
    assert (earlier["run"], earlier["status"], len(earlier["steps"])) == (1, "complete", 2)
    assert alice.call("get", "/instances/job/history?run=3")[0] == 404
    entry = AuditLog.objects.get(action="instance.restarted")
    assert entry.details["from_step"] == 1 and entry.actor_token is not None


def test_the_runs_list_pages(alice, driver):
    complete(alice, driver)
    for _ in range(2):
        assert alice.call("post", "/instances/job/restart", "")[0] == 200

    _, first = alice.call("get", "/instances/job/runs?limit=2")
    _, rest = alice.call("get", f"/instances/job/runs?limit=2&cursor={first['next_cursor']}")

    assert [r["run"] for r in first["items"]] == [3, 2]
    assert [r["run"] for r in rest["items"]] == [1] and rest["next_cursor"] is None


def test_a_restart_with_no_body_runs_again_from_the_start(alice, driver):
    complete(alice, driver)

    status, body = alice.call("post", "/instances/job/restart", "")  # no body at all

    assert status == 200 and body["steps"] == [] and body["status"] == "queued"
    assert alice.call("post", "/instances/job/restart", {})[0] == 200


def test_a_restart_on_a_version_answers_409_when_it_is_not_approved(alice, driver):
    complete(alice, driver)
    status, upload = alice.call("put", "/workflows/adder", {"code": CODE + "\n# v2\n"})
    sha = upload["version"]["sha256"]
    CodeVersion.objects.filter(sha256=sha).update(status="pending_review")

    status, body = alice.call("post", "/instances/job/restart", {"version": sha})

    assert status == 409 and "pending_review" in body["detail"]
    CodeVersion.objects.filter(sha256=sha).update(status="approved")
    status, body = alice.call("post", "/instances/job/restart", {"from_step": 1, "version": sha})
    assert status == 200 and body["version"] == sha


def test_a_restart_answers_422_naming_the_field_it_cannot_honour(alice, driver):
    waiting(alice, driver)
    alice.call("put", "/workflows/other", {"code": CODE + "\n# other\n"})
    other = alice.call("get", "/workflows/other")[1]["current_version"]["sha256"]

    cases = [
        ({"from_step": 5}, "from_step"),
        ({"from_step": 2}, "from_step"),  # step 1 waits: it has no result to keep
        ({"version": other}, "version"),
        ({"from_step": -1}, "from_step"),
        ({"version": "nope"}, "version"),
    ]
    for body, field in cases:
        status, answer = alice.call("post", "/instances/job/restart", body)
        assert status == 422, body
        assert answer["detail"][0]["field"] == field


def test_a_rerun_starts_a_new_instance_with_the_same_or_a_new_payload(alice, driver):
    complete(alice, driver)

    status, same = alice.call("post", "/instances/job/rerun", "")
    assert status == 201 and same["id"] != "job"
    assert (same["workflow"], same["payload"]) == ("adder", {"x": 1})
    status, other = alice.call("post", "/instances/job/rerun", {"id": "job-2", "payload": {"x": 5}})
    assert (status, other["id"], other["payload"]) == (201, "job-2", {"x": 5})
    assert alice.call("post", "/instances/job/rerun", {"id": "job-2"})[0] == 200
    driver.drain()
    assert alice.call("get", "/instances/job-2")[1]["steps"][0]["output"] == 6
    assert AuditLog.objects.filter(action="instance.rerun").count() == 2


def test_a_rerun_answers_409_for_a_version_that_cannot_run(alice, driver):
    complete(alice, driver)

    status, body = alice.call("post", "/instances/job/rerun", {"version": "0" * 64})

    assert status == 409 and "has no version" in body["detail"]


def test_bob_cannot_read_or_run_alices_instances(alice, bob, driver):
    complete(alice, driver)

    for method, path in [
        ("get", "/instances/job/history"),
        ("get", "/instances/job/history?run=1"),
        ("get", "/instances/job/runs"),
        ("post", "/instances/job/restart"),
        ("post", "/instances/job/rerun"),
    ]:
        status, body = bob.call(method, path, None if method == "get" else {})
        assert status == 404, path
        assert "job" not in json.dumps(body) or "no instance" in body["detail"]
    assert alice.call("get", "/instances/job/runs")[1]["items"][0]["run"] == 1
