"""stepwell/_capture.py: the runtime ends a step that prints past its log cap; the host reads
why from the exit code."""

import pytest
from stepwell import _capture

from execution.sandbox.outcome import OUTPUT_CAP_EXIT
from tests.sandbox.runtime.activations import run, tenant


class Stopped(BaseException):
    """What the tests' stand-in for os._exit raises, so the test process lives on."""


@pytest.fixture
def exits(monkeypatch) -> list[int]:
    """The exit codes the runtime asked for; os._exit would end the test process."""
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Stopped

    monkeypatch.setattr(_capture, "_exit", fake_exit)
    return codes


def test_a_step_that_prints_past_its_log_cap_ends_the_process_at_the_cap(exits, capfd):
    module = tenant("""
        def chatty():
            for _ in range(10_000):
                try:
                    print("x" * 100)
                except Exception:
                    pass

        def run(event, step):
            return step.do("chatty", chatty)
    """)

    run(module, log_bytes=500)

    assert exits == [_capture.OUTPUT_CAP_EXIT]
    # What the log kept went to the process's stdout, where the host keeps it.
    stdout = capfd.readouterr().out
    assert stdout.startswith("x" * 100 + "\n")
    assert stdout.endswith("[log truncated: 504 bytes written, limit 500 bytes]\n")
    assert len(stdout.encode()) <= 500


def test_printing_past_the_cap_outside_steps_ends_the_process_too(exits):
    module = tenant("""
        def run(event, step):
            for _ in range(10):
                print("x" * 100)
            return step.do("quiet", lambda: 1)
    """)

    run(module, log_bytes=500)

    assert exits == [_capture.OUTPUT_CAP_EXIT]


def test_a_capped_log_without_a_stop_keeps_its_head_and_says_it_was_cut():
    log = _capture.CappedLog(500)
    log.write("é" * 100 + "\n")
    for i in range(1000):
        log.write(f"line {i}\n")

    logs = log.getvalue()

    assert logs.startswith("é" * 100 + "\nline 0\n")
    assert logs.endswith("[log truncated: 9091 bytes written, limit 500 bytes]\n")
    assert len(logs.encode()) <= 500


def test_the_host_reads_the_runtimes_output_cap_exit_code():
    assert _capture.OUTPUT_CAP_EXIT == OUTPUT_CAP_EXIT
