"""examples/agent.py runs end to end against the API, with the engine in this process."""

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agent.py"


def load_example():
    spec = importlib.util.spec_from_file_location("agent_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class InProcess:
    """The example's client, served by Django's test client; the engine runs between calls."""

    def __init__(self, api, driver, example):
        self.api, self.driver, self.example = api, driver, example

    def call(self, method, path, body=None):
        self.driver.drain()
        status, answer = self.api.call(method, path, body)
        if status >= 400:
            raise self.example.ApiError(status, answer.get("detail"))
        return answer


def test_the_agent_example_uploads_starts_signals_and_prints_each_step(
    alice, driver, tmp_path, capsys
):
    example = load_example()
    done = example.main(InProcess(alice, driver, example), tmp_path, poll=0)
    assert done["status"] == "complete"
    assert done["output"]["total"] == 17
    printed = capsys.readouterr().out
    assert (tmp_path / "checkout.py").read_text() == example.WORKFLOW
    for line in ("uploaded checkout", "step 0 'price' complete: 17", "sent event 'approved'"):
        assert line in printed
    assert "step 2 'receipt' complete" in printed and printed.rstrip().endswith("}")
