"""stepwell/_engine.py: one activation always ends in one outcome, whatever the tenant's
code or the input does."""

from stepwell._engine import activate

from tests.sandbox.runtime.activations import run, tenant


def test_prints_outside_steps_do_not_reach_the_process_output(capfd):
    module = tenant("""
        import sys

        def run(event, step):
            print("noise")
            sys.stderr.write("more noise")
            return step.do("quiet", lambda: print("logged") or 1)
    """)

    outcome = run(module)

    assert outcome["logs"] == "logged\n"
    assert capfd.readouterr() == ("", "")


def test_system_exit_in_run_errors_the_instance():
    module = tenant("""
        import sys

        def run(event, step):
            sys.exit(3)
    """)

    assert run(module)["error"]["type"] == "SystemExit"


def test_tenant_code_that_catches_base_exception_still_yields_the_new_step():
    module = tenant("""
        def run(event, step):
            try:
                step.do("charge", lambda: "charged")
            except BaseException:
                pass
            try:
                step.do("second", lambda: "never runs")
            except BaseException:
                pass
            return "pretend I finished"
    """)

    outcome = run(module)

    assert (outcome["kind"], outcome["name"], outcome["output"]) == ("step", "charge", "charged")


def test_a_broken_input_or_module_still_gets_an_outcome():
    no_run = tenant("x = 1")

    broken = activate(no_run, {"instance_id": "i"})
    missing = run(no_run)

    assert broken["kind"] == "error"
    assert broken["error"]["type"] == "ProtocolError"
    assert missing["error"]["message"] == "the workflow module defines no run(event, step) function"
