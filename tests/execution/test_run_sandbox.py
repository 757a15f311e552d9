"""What the engine asks of the sandbox: whose step it is, and in which mode."""

import pytest

from execution import engine
from execution.sandbox import SandboxResult, Status
from execution.sandbox.warm_pool import JailKey
from tests.factories import make_tenant, upload

CODE = """
def run(event, step):
    return step.do("one", lambda: 1)
"""


class Recorder:
    """A sandbox that records what it was asked and in which mode."""

    def __init__(self):
        self.asked: list[tuple[str, object]] = []

    def get_sandbox(self, mode):
        return _Box(self, mode)


class _Box:
    def __init__(self, recorder, mode):
        self.recorder, self.mode = recorder, mode

    def run(self, request, *, keep=False):
        self.recorder.asked.append((self.mode, request))
        return SandboxResult(Status.OK, None, None, "", "", False, False, 0.0, 0.0, None)


@pytest.fixture
def recorder(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(engine, "get_sandbox", recorder.get_sandbox)
    return recorder


def activation_of(tenant) -> engine.Activation:
    version = upload(tenant, "wf", CODE).version
    return engine.Activation(
        instance_pk=1,
        instance_key="i-1",
        tenant_id=tenant.pk,
        token="t",
        generation=1,
        tenant_slug=tenant.slug,
        code=version.code,
        code_sha256=version.sha256,
        input={"history": []},
        quota=tenant.quota,
        pending=None,
    )


def jail_key(request) -> JailKey:
    return JailKey(request.tenant, request.code_sha256, request.limits)


def test_a_tenant_that_takes_a_renamed_tenants_slug_never_shares_its_warm_jails(db, recorder):
    first = make_tenant("acme", "alice")
    earlier = activation_of(first)
    first.slug = "acme-old"
    first.save()
    newcomer = make_tenant("acme", "bob")  # the same slug, the same code
    engine.run_sandbox(earlier)
    engine.run_sandbox(activation_of(newcomer))
    engine.run_sandbox(activation_of(first))  # the renamed tenant, after the rename
    (_, before), (_, other), (_, after) = recorder.asked
    assert before.code_sha256 == other.code_sha256
    assert jail_key(before) != jail_key(other)
    assert jail_key(before) == jail_key(after)  # a rename keeps a tenant's own jails
    assert (before.tenant, other.tenant) == (str(first.pk), str(newcomer.pk))


def test_the_bench_sandbox_mode_comes_from_settings_read_once(db, recorder, settings, monkeypatch):
    acme = make_tenant("acme", "alice", sandbox_mode="warm")
    monkeypatch.setenv("STEPWELL_BENCH_SANDBOX_MODE", "fresh")  # too late: not read again
    engine.run_sandbox(activation_of(acme))
    settings.STEPWELL_BENCH_SANDBOX_MODE = "fresh"
    engine.run_sandbox(activation_of(acme))
    assert [mode for mode, _ in recorder.asked] == ["warm", "fresh"]
