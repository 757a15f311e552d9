"""Values PostgreSQL cannot store, sent from a real jail (both modes), as the host reads them."""

from execution.outcome_checks import check_outcome
from execution.sandbox import Status
from execution.storable import text_problem
from tests.sandbox.conftest import workflow_input

UNSTORABLE = """
def shout():
    print("nul\\x00 and \\ud800 in the logs")
    return {"text": "nul\\x00"}

def run(event, step):
    step.do("shout", shout)
"""

RAISES = """
def fail():
    raise ValueError("nul\\x00 and \\udfff in the message")

def run(event, step):
    step.do("fail", fail)
"""


def test_a_result_the_database_cannot_store_becomes_a_step_error_with_escaped_logs(run):
    result = run(UNSTORABLE, workflow_input(), mode="workflow")

    assert result.status == Status.OK
    outcome = check_outcome(result.result)
    assert outcome["status"] == "failed"
    assert outcome["retryable"] is False
    assert outcome["error"]["type"] == "ResultNotStorable"
    assert "holds a NUL character" in outcome["error"]["message"]
    # The capture writes the surrogate as it likes; the host escapes the NUL.
    assert outcome["logs"].startswith("nul\\u0000 and ")
    assert text_problem(outcome["logs"]) is None


def test_an_error_message_the_database_cannot_store_arrives_escaped(run):
    result = run(RAISES, workflow_input(), mode="workflow")

    outcome = check_outcome(result.result)
    assert outcome["error"]["type"] == "ValueError"
    assert outcome["error"]["message"] == "nul\\x00 and \\udfff in the message"
