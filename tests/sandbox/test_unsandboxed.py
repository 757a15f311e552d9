"""The benchmark-only unsandboxed mode: refused unless the bench asks for it."""

import pytest

from execution import sandbox as sandbox_module
from execution.sandbox import SandboxRequest, Status, get_sandbox
from execution.sandbox.unsandboxed import ENV_FLAG, SubprocessSandbox
from tests.sandbox.conftest import workflow_input

WORKFLOW = (
    "def run(event, step):\n"
    "    a = step.do('one', lambda: 1)\n"
    "    return a + step.do('two', lambda: 2)\n"
)


def activation(history):
    return workflow_input(history)


def test_it_is_refused_without_the_bench_flag(monkeypatch, sandbox_config):
    monkeypatch.delenv(ENV_FLAG, raising=False)
    with pytest.raises(ValueError, match="benchmark-only"):
        get_sandbox("unsandboxed")
    with pytest.raises(ValueError, match="benchmark-only"):
        SubprocessSandbox(sandbox_config)
    monkeypatch.setenv(ENV_FLAG, "yes")
    with pytest.raises(ValueError, match="benchmark-only"):
        get_sandbox("unsandboxed")


def test_get_sandbox_returns_it_with_the_bench_flag(monkeypatch, settings):
    monkeypatch.setenv(ENV_FLAG, "1")
    monkeypatch.setattr(sandbox_module, "_sandboxes", {})
    assert isinstance(get_sandbox("unsandboxed"), SubprocessSandbox)


def test_it_runs_a_workflow_activation_with_its_progress_notes(monkeypatch, sandbox_config):
    monkeypatch.setenv(ENV_FLAG, "1")
    box = SubprocessSandbox(sandbox_config)
    notes = []
    result = box.run(
        SandboxRequest(
            tenant="acme",
            code=WORKFLOW,
            input=activation([]),
            mode="workflow",
            on_progress=notes.append,
        )
    )
    assert result.status == Status.OK, result.error
    assert result.result["kind"] == "step"
    assert result.result["name"] == "one" and result.result["output"] == 1
    assert [n["name"] for n in notes if n.get("kind") == "intent"] == ["one"]


def test_a_step_error_is_a_step_error(monkeypatch, sandbox_config):
    monkeypatch.setenv(ENV_FLAG, "1")
    box = SubprocessSandbox(sandbox_config)
    code = "def main(x):\n    raise KeyError(x)\n"
    result = box.run(SandboxRequest(tenant="acme", code=code, input="k"))
    assert result.status == Status.ERROR
    assert result.error["type"] == "KeyError"
    ok = box.run(SandboxRequest(tenant="acme", code="def main(x):\n    return x\n", input=[1]))
    assert ok.ok and ok.result == [1]
