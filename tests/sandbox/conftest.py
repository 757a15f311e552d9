import os
import shutil
import tempfile
from pathlib import Path

import pytest

from execution.sandbox import (
    FreshSandbox,
    Limits,
    SandboxConfig,
    SandboxRequest,
    WarmSandbox,
    network,
)
from execution.sandbox.limits import MiB

SLOTS = 16  # warm jails hold a slot for as long as they live
# A uid range of this session's own, so concurrent test runs never see each other's jails;
# STEPWELL_TEST_UID_BASE pins it (sessions that share a machine are given ranges): these
# tests' uids from there, test_warm_host_checks.py's from 5000 above.
PINNED_UID_BASE = os.environ.get("STEPWELL_TEST_UID_BASE")
UID_BASE = int(PINNED_UID_BASE or 200000 + (os.getpid() % 10000) * SLOTS)

# Small limits keep the hostile suite quick.
SMALL = Limits(
    memory_bytes=64 * MiB,
    cpu_seconds=5,
    wall_seconds=5,
    pids=32,
    output_bytes=256 * 1024,
    result_bytes=256 * 1024,
    tmp_bytes=4 * MiB,
    open_files=64,
)


def workflow_input(history=()) -> dict:
    """The host's input to one workflow activation, with small limits."""
    return {
        "instance_id": "i-1",
        "payload": {},
        "timestamp": "2026-01-01T00:00:00+00:00",
        "now": "2026-01-01T00:00:00+00:00",
        "history": list(history),
        "limits": {"result_bytes": 65536, "log_bytes": 65536, "step_timeout_seconds": 5.0},
    }


@pytest.fixture(scope="session")
def sandbox_config():
    # pytest's tmp_path sits under a 0700 dir the sandbox uids cannot traverse.
    state = Path(tempfile.mkdtemp(prefix="stepwell-sandbox-test-"))
    state.chmod(0o755)
    yield SandboxConfig(uid_base=UID_BASE, slots=SLOTS, state_dir=state)
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox(sandbox_config):
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root to create cgroups and namespaces")
    box = FreshSandbox(sandbox_config)
    box.prepare()
    yield box
    uids = range(sandbox_config.uid_base, sandbox_config.uid_base + sandbox_config.slots)
    network.remove(uids)  # the slots' network namespaces, made by network-on steps


@pytest.fixture(scope="session")
def warm_sandbox(sandbox, sandbox_config):
    box = WarmSandbox(sandbox_config, jails_per_worker=4, idle_seconds=300, fresh=sandbox)
    yield box
    box.close()


@pytest.fixture
def sandbox_mode(request):
    """ "fresh" or "warm", optionally with "+network": see pytest_generate_tests."""
    return request.param


def pytest_generate_tests(metafunc):
    """Every test that runs steps runs them in each of its module's SANDBOX_MODES: both
    modes, unless the module asks for more."""
    if "sandbox_mode" in metafunc.fixturenames:
        modes = getattr(metafunc.module, "SANDBOX_MODES", ("fresh", "warm"))
        metafunc.parametrize("sandbox_mode", modes, indirect=True)


@pytest.fixture
def run(request, sandbox_mode):
    """run(code, input=None, tenant="acme", **limit_overrides) -> SandboxResult.

    sandbox_mode is "fresh" or "warm", optionally with "+network" (a module's SANDBOX_MODES
    may add those); run.mode is the bare mode and run.network says which.
    """
    mode, _, network = sandbox_mode.partition("+")
    box = request.getfixturevalue("warm_sandbox" if mode == "warm" else "sandbox")
    defaults = {**SMALL.to_json(), "network": bool(network)}

    def run(code, input=None, tenant="acme", mode="call", **overrides):
        limits = Limits(**{**defaults, **overrides})
        return box.run(
            SandboxRequest(tenant=tenant, code=code, input=input, limits=limits, mode=mode)
        )

    run.mode = mode
    run.network = bool(network)
    return run


@pytest.fixture
def sandbox_pids(request, sandbox_config):
    """sandbox_pids() -> host pids running as any sandbox slot's uid, but live zygotes."""
    warm = request.getfixturevalue("warm_sandbox")
    return lambda: sorted(set(_sandbox_pids(sandbox_config)) - warm.zygote_pids())


def _sandbox_pids(config: SandboxConfig) -> list[int]:
    uids = range(config.uid_base, config.uid_base + config.slots)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) in uids:
                found.append(int(entry.name))
    return found
