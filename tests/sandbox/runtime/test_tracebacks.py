"""stepwell/_tracebacks.py: error reports show the tenant its own code, and nothing the
database cannot store."""

from tests.sandbox.runtime.activations import rec, run, tenant


def test_an_exception_escaping_run_reports_only_tenant_frames():
    module = tenant("""
        def check(order):
            if order["qty"] < 1:
                raise ValueError(f"bad quantity {order['qty']}")

        def run(event, step):
            total = step.do("price", lambda: 10)
            check(event.payload)
    """)

    outcome = run(module, [rec("price", output=10)], payload={"qty": 0})

    error = outcome["error"]
    assert outcome["kind"] == "error"
    assert (error["type"], error["message"]) == ("ValueError", "bad quantity 0")
    assert error["traceback"].startswith("Traceback (most recent call last):\n")
    assert 'File "/code/tenant.py", line 8, in run' in error["traceback"]
    assert 'File "/code/tenant.py", line 4, in check' in error["traceback"]
    assert "stepwell" not in error["traceback"]
    assert error["traceback"].endswith("ValueError: bad quantity 0\n")


def test_an_error_message_holding_nul_or_a_lone_surrogate_is_escaped():
    module = tenant("""
        def fail():
            print("logged")
            raise ValueError("bad\\x00byte \\ud800 here")

        def run(event, step):
            step.do("fails", fail)
    """)

    outcome = run(module)

    assert outcome["error"]["message"] == "bad\\x00byte \\ud800 here"
    assert "\x00" not in outcome["error"]["traceback"]
    assert "\\ud800" in outcome["error"]["traceback"]
