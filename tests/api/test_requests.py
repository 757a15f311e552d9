"""What an agent gets back for bad input: every problem, where it is, and the limit."""

import json

import pytest

BROKEN = "import subprocess\nx = (\n"


def test_validate_reports_the_syntax_error_and_the_missing_run_with_positions(alice):
    status, body = alice.call("post", "/workflows/x/validate", {"code": BROKEN})
    assert status == 200 and body["ok"] is False
    assert [(e["line"], e["column"]) for e in body["errors"]] == [(2, 4), (1, 0)]
    assert "never closed" in body["errors"][0]["message"]
    assert "no run(event, step)" in body["errors"][1]["message"]


def test_a_bad_put_is_422_with_the_same_errors_and_saves_nothing(alice):
    status, body = alice.call("put", "/workflows/x", {"code": BROKEN})
    assert status == 422
    assert [(e["line"], e["column"]) for e in body["detail"]] == [(2, 4), (1, 0)]
    assert alice.call("get", "/workflows/x")[0] == 404


def test_validate_flags_risky_code_that_is_otherwise_valid(alice):
    code = "import subprocess\ndef run(event, step):\n    return eval('1')\n"
    body = alice.call("post", "/workflows/x/validate", {"code": code})[1]
    assert body["ok"] and [f["line"] for f in body["flags"]] == [1, 3]


def test_code_over_the_code_limit_is_an_error_naming_the_limit(alice, settings):
    settings.STEPWELL_MAX_CODE_BYTES = 2000
    code = "def run(event, step):\n    pass\n" + "# padding\n" * 300
    body = alice.call("post", "/workflows/x/validate", {"code": code})[1]
    assert "the limit is 2000 bytes" in body["errors"][0]["message"]
    assert alice.call("put", "/workflows/x", {"code": code})[0] == 422


def test_a_body_over_the_limit_is_413_with_the_limit(alice, settings):
    settings.STEPWELL_MAX_BODY_BYTES = 5000
    status, body = alice.call("post", "/workflows/x/validate", {"code": "#" * 6000})
    assert status == 413
    assert body == {"detail": "the request body is over the limit of 5000 bytes"}


def test_a_body_over_djangos_own_limit_is_413_too(alice, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4000
    status, body = alice.call("put", "/workflows/x", {"code": "#" * 6000})
    assert status == 413 and "4000 bytes" in body["detail"]


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"code": "x"', b"\xff\xfe\xfd", b'{"code": NaN}', b"[" * 100_000],
    ids=["garbage", "truncated", "not utf-8", "NaN", "deep"],
)
def test_malformed_json_is_422_saying_so(alice, raw):
    response = alice.request("post", "/workflows/x/validate", raw)
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body"] and problem["type"] == "json_invalid"


@pytest.mark.parametrize("raw", [b"1", b"[]", b'"x"', b"true"])
def test_a_body_that_is_not_an_object_is_422_and_starts_nothing(alice, raw):
    code = "def run(event, step):\n    return 1\n"
    assert alice.request("put", "/workflows/adder", {"code": code}).status_code in (200, 201)
    response = alice.request("post", "/workflows/adder/instances", raw)
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body"] and "not a JSON object" in problem["msg"]
    assert alice.request("get", "/instances").json()["items"] == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/workflows/x/validate", {"code": 12}, "code"),
        ("/workflows/x/validate", {}, "code"),
        ("/workflows/x/instances", {"payload": [1, 2]}, "payload"),
        ("/workflows/x/instances", {"id": "no spaces"}, "id"),
        ("/workflows/x/instances", {"version": "abc"}, "version"),
        ("/instances/x/events", {"type": ""}, "type"),
        ("/tokens", {"name": "t", "read_only": "perhaps"}, "read_only"),
    ],
)
def test_a_wrong_type_or_value_is_422_naming_the_field(alice, path, body, field):
    status, answer = alice.call("post", path, body)
    assert status == 422
    assert field in [p["field"] for p in answer["detail"]]
    assert all(p["msg"] for p in answer["detail"])


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/workflows/x", {"code": "def run(e, s):\n  pass\n", "description": "nul\u0000"}),
        ("/instances/x/events", {"type": "x", "payload": {"nul\u0000": 1}}),
        ("/instances/x/events", {"type": "x", "payload": ["\ud800"]}),
    ],
    ids=["nul", "nul in a key", "lone surrogate"],
)
def test_text_that_cannot_be_stored_is_422_not_a_crash(alice, path, body):
    response = alice.request("put" if path == "/workflows/x" else "post", path, json.dumps(body))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=x",
        "status=sleepy",
        "cursor=abc",
        "cursor=1.9999999999999999999",
    ],
)
def test_bad_listing_parameters_are_422(alice, query):
    status, body = alice.call("get", f"/instances?{query}")
    assert status == 422 and body["detail"][0]["loc"][0] == "query"


def test_a_bad_path_is_422_or_404_never_a_crash(alice):
    assert alice.call("get", "/workflows/-bad")[0] == 422
    assert alice.call("get", "/instances/a%00b")[0] == 422
    assert alice.call("delete", "/tokens/99999999999999999999")[0] == 422
    assert alice.call("delete", "/tokens/123456")[0] == 404


def test_every_error_has_a_json_detail(alice, client):
    answers = [
        client.get("/api/v1/workflows"),
        alice.request("get", "/workflows/nope"),
        alice.request("post", "/workflows/x/validate", b"{"),
    ]
    for response in answers:
        assert response["Content-Type"].startswith("application/json")
        assert "detail" in response.json()


def test_an_unknown_api_path_is_a_json_404(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert "no route" in response.json()["detail"]
