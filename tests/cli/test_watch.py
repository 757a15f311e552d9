"""What `stepwell watch` prints for each stream message, and for an instance that ended
before the watch began (its stream is a snapshot alone)."""

from __future__ import annotations

from stepwell_cli.watch import describe

ERROR = {"type": "NonRetryableError", "message": "asked to fail"}


def snapshot(status: str, error: dict | None = None) -> dict:
    instance = {"id": "o-2", "workflow": "orders", "status": status, "error": error}
    return {"type": "snapshot", "seq": 7, "instance": {**instance, "steps": [{}, {}]}}


def test_a_snapshot_of_an_instance_that_errored_says_why():
    line = describe(snapshot("errored", ERROR))
    assert line == "[7] o-2 (orders): errored, 2 steps so far: NonRetryableError: asked to fail"


def test_a_snapshot_without_an_error_says_only_where_the_instance_is():
    assert describe(snapshot("running")) == "[7] o-2 (orders): running, 2 steps so far"


def test_the_status_event_says_why_an_instance_errored():
    message = {"type": "instance.status", "seq": 9, "status": "errored", "error": ERROR}
    assert describe(message) == "[9] instance errored: NonRetryableError: asked to fail"
    assert describe({"type": "instance.status", "seq": 9, "status": "complete"}) == (
        "[9] instance complete"
    )


def test_an_error_that_is_not_an_object_is_not_shown_as_one():
    assert describe(snapshot("errored", "boom")).endswith("2 steps so far")  # type: ignore[arg-type]
