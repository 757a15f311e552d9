from execution.step_limits import STEP_TIMEOUT_MARGIN_SECONDS, limits_for


def test_the_quota_becomes_sandbox_limits(acme):
    quota = acme.quota
    quota.step_memory_mb = 128
    quota.step_timeout_seconds = 10
    limits = limits_for(quota)
    assert limits.memory_bytes == 128 * 2**20
    assert limits.wall_seconds == 10 + STEP_TIMEOUT_MARGIN_SECONDS
    assert limits.network is False
    assert limits_for(quota, timeout_seconds=60).wall_seconds == 10 + STEP_TIMEOUT_MARGIN_SECONDS
