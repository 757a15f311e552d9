"""stepwell/_results.py: values that leave the sandbox are JSON within the limit, and
nothing the database cannot store."""

import pytest

from tests.sandbox.runtime.activations import run, tenant


def test_the_return_value_of_run_is_the_output_and_must_be_json_within_the_limit():
    returns = tenant("""
        def run(event, step):
            return event.payload["answer"]
    """)

    complete = run(returns, payload={"answer": {"total": 42}})
    too_large = run(returns, payload={"answer": "x" * 200}, result_bytes=100)
    not_json = tenant("def run(event, step):\n    return object()\n")

    assert complete == {"kind": "complete", "output": {"total": 42}}
    assert too_large["error"] == {
        "type": "ResultTooLarge",
        "message": "the return value of run() is 202 bytes of JSON, over the limit of 100 bytes",
        "traceback": "",
    }
    assert run(not_json)["error"]["type"] == "ResultNotSerializable"


RETURNS = """
    def run(event, step):
        return step.do("value", lambda: event.payload["value"])
"""


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("a\x00b", "holds a NUL character"),
        ({"k\x00": 1}, "holds a NUL character"),
        (["\ud800"], "holds a lone surrogate ('\\ud800')"),
    ],
)
def test_a_result_the_database_cannot_store_fails_the_step_without_retries(value, words):
    outcome = run(tenant(RETURNS), payload={"value": value})

    assert outcome["status"] == "failed"
    assert outcome["retryable"] is False
    assert outcome["error"]["type"] == "ResultNotStorable"
    assert words in outcome["error"]["message"]
    assert "the result of step 'value'" in outcome["error"]["message"]


@pytest.mark.parametrize("value", ["\\u0000", "\\\\u0000", "\u00e9\U0001f600", "\\"])
def test_backslashes_and_other_characters_are_stored_as_they_are(value):
    outcome = run(tenant(RETURNS), payload={"value": value})

    assert outcome["status"] == "complete"
    assert outcome["output"] == value


def test_an_output_the_database_cannot_store_errors_the_instance_clearly():
    module = tenant("""
        def run(event, step):
            return {"text": "\\x00"}
    """)

    outcome = run(module)

    assert outcome["kind"] == "error"
    assert outcome["error"]["type"] == "ResultNotStorable"
    assert "the return value of run() holds a NUL character" in outcome["error"]["message"]


def test_a_child_payload_the_database_cannot_store_is_refused_at_the_call_site():
    module = tenant("""
        def run(event, step):
            step.start_workflow("child", "other", {"text": "\\ud800"})
    """)

    outcome = run(module)

    assert outcome["kind"] == "error"
    assert outcome["error"]["type"] == "ValueError"
    assert "the workflow payload holds a lone surrogate" in outcome["error"]["message"]
