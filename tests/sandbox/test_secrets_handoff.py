"""How secrets reach a jail (SANDBOX.md, API.md Secrets): in a fresh jail's job; in warm
mode to the step's forked child alone, never into the zygote, whose heap outlives the
step; never into the code cache."""

import re
import uuid
from pathlib import Path

import pytest

from execution.sandbox import Limits, SandboxRequest, Status, WarmSandbox
from execution.sandbox.warm_jail import WarmJail
from tests.sandbox.conftest import SMALL, workflow_input

pytestmark = pytest.mark.sandbox

# Known to the zygote (the module's source, imported there), to prove the scan finds text.
CODE = """
IN_THE_MODULE = "zygote-knows-this-{tag}"

def run(event, step):
    return [event.secrets["API_KEY"], IN_THE_MODULE]
"""


@pytest.fixture
def warm(sandbox, sandbox_config):
    box = WarmSandbox(sandbox_config, jails_per_worker=2, idle_seconds=300, fresh=sandbox)
    yield box
    box.close()


def request(code: str, secrets: dict) -> SandboxRequest:
    return SandboxRequest(
        tenant="secrets-test",
        code=code,
        input=workflow_input(),
        limits=Limits(**SMALL.to_json()),
        mode="workflow",
        secrets=secrets,
    )


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether any readable mapping of the process holds `needle` (read as root)."""
    found = False
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r") or "[vvar]" in line or "[vsyscall]" in line:
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                found = found or needle in mem.read(end - start)
            except OSError:
                continue
    return found


def files_holding(top: Path, needle: bytes) -> list[Path]:
    return [
        path
        for path in top.rglob("*")
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes()
    ]


def test_a_fresh_jail_reads_the_secrets_from_its_job(sandbox, sandbox_config):
    value = f"fresh-{uuid.uuid4().hex}"
    result = sandbox.run(request(CODE.format(tag="f"), {"API_KEY": value}))
    assert result.status == Status.OK, result.error
    assert result.result["output"][0] == value
    assert files_holding(sandbox_config.state_dir, value.encode()) == []


def test_a_warm_step_gets_its_secrets_but_the_zygote_never_holds_them(
    warm, sandbox_config, monkeypatch
):
    tag = uuid.uuid4().hex
    value = f"warm-{uuid.uuid4().hex}"
    code = CODE.format(tag=tag)
    jobs = []  # what the zygote reads: the job, sent over its control channel
    activate = WarmJail.activate

    def spy(self, job_bytes, *args, **kwargs):
        jobs.append(job_bytes)
        return activate(self, job_bytes, *args, **kwargs)

    monkeypatch.setattr(WarmJail, "activate", spy)
    for _ in range(2):  # the second step runs in the same zygote
        result = warm.run(request(code, {"API_KEY": value}))
        assert result.status == Status.OK, result.error
        assert result.result["output"] == [value, f"zygote-knows-this-{tag}"]
    assert len(jobs) == 2
    assert all(value.encode() not in job for job in jobs)
    (zygote,) = warm.zygote_pids()
    assert memory_holds(zygote, f"zygote-knows-this-{tag}".encode())  # the scan sees text
    assert not memory_holds(zygote, value.encode())
    assert files_holding(sandbox_config.state_dir, value.encode()) == []


def test_a_missing_secret_in_a_jail_is_a_key_error_naming_it(sandbox):
    code = 'def run(event, step):\n    return event.secrets["NOT_SET"]\n'
    result = sandbox.run(request(code, {"API_KEY": "something-else"}))
    assert result.result["kind"] == "error"
    assert result.result["error"]["type"] == "KeyError"
    assert re.search(r"NOT_SET", result.result["error"]["message"])
