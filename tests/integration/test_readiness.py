"""/readyz of a real web process, with the stack's real clock: ready, then Redis killed."""

import json
import urllib.error
import urllib.request

import pytest

from tests.integration.stack import wait_until

pytestmark = pytest.mark.integration


def readyz(web) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{web.url}/readyz", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_the_web_is_ready_with_the_stacks_clock_and_not_once_redis_is_gone(stack):
    web = stack.start_web()
    try:
        assert wait_until(
            lambda: readyz(web) == (200, {"database": "ok", "redis": "ok", "clock": "ok"}),
            30,
            what="the clock's first sweep to show",
        )
        stack.redis.process.kill()
        stack.redis.process.proc.wait(5)
        status, body = readyz(web)
        assert status == 503 and body["redis"].startswith("failed: "), body
        assert body["database"] == "ok"
    finally:
        web.stop()
