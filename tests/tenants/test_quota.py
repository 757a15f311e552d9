from tenants.models import STEP_TIMEOUT_MARGIN_SECONDS


def test_the_quota_becomes_sandbox_limits(acme):
    quota = acme.quota
    quota.step_memory_mb = 128
    quota.step_timeout_seconds = 10
    limits = quota.sandbox_limits()
    assert limits.memory_bytes == 128 * 2**20
    assert limits.wall_seconds == 10 + STEP_TIMEOUT_MARGIN_SECONDS
    assert limits.network is False
    assert quota.sandbox_limits(timeout_seconds=60).wall_seconds == 10 + STEP_TIMEOUT_MARGIN_SECONDS
