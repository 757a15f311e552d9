"""No stored row, log line or Redis message holds a secret's value (issue 14, point 4).

Real Celery workers, real nsjail (fresh for acme, warm for globex), real PostgreSQL and
the stack's own Redis, watched with MONITOR from before the first start to the end. A
workflow prints, returns, raises with, names a step after, and sends as a child's
payload its secret; afterwards every table's rows, every process's log and everything
Redis was sent are searched for the value, and `[secret:API_KEY]` is found instead.
"""

import base64
import binascii
import re
import socket
import threading
import uuid

import pytest
import redis
from asgiref.sync import async_to_sync
from channels_redis.core import RedisChannelLayer
from django.db import connection

from execution import workflows
from execution.progress import tenant_group
from tenants.secrets import set_secret
from tests.factories import set_quota, upload
from tests.integration.test_durability import finished

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MARKER = "[secret:API_KEY]"

LEAKY = """
import sys
import time
from stepwell import StepError

def fail(key):
    raise ValueError("the service refused " + key)

def use(key):
    time.sleep(0.2)  # long enough to be shown running, from the jail's progress note
    print("calling with", key)
    print("stderr too:", key, file=sys.stderr)
    return {"echo": key, key: [key]}

def run(event, step):
    key = event.secrets["API_KEY"]
    print("outside any step:", key)
    got = step.do("use " + key, lambda: use(key))
    try:
        step.do("fail", lambda: fail(key), retries={"limit": 0})
    except StepError:
        pass
    child = step.start_workflow("child", "leaf", {"token": key})
    return {"replayed": got, "key": key, "child": step.wait_for_workflow("wait", child)}
"""

LEAF = """
def run(event, step):
    return step.do("echo", lambda: event.payload)
"""


class RedisMonitor:
    """Everything any client sends the Redis at `port`, from now until stop()."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.data = bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            self.data += chunk

    def stop(self) -> bytes:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)
        self.sock.close()
        return bytes(self.data)


def with_decoded_bodies(traffic: bytes) -> bytes:
    """The traffic, and every base64 run in it decoded (Celery's message bodies)."""
    decoded = []
    for run in re.findall(rb"[A-Za-z0-9+/]{16,}={0,2}", traffic):
        try:
            decoded.append(base64.b64decode(run + b"=" * (-len(run) % 4)))
        except (binascii.Error, ValueError):
            continue
    return traffic + b"\n".join(decoded)


def every_row_as_text() -> str:
    with connection.cursor() as cursor:
        texts = []
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT t::text FROM {connection.ops.quote_name(table)} t")
            texts += [row[0] for row in cursor.fetchall()]
    return "\n".join(texts)


def redis_values(url: str) -> bytes:
    """Whatever the keys left in Redis hold, read by type."""
    client = redis.Redis.from_url(url)
    held = []
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"string":
            held.append(client.get(key) or b"")
        elif kind == b"list":
            held += client.lrange(key, 0, -1)
        elif kind == b"hash":
            held += [k + b"=" + v for k, v in client.hgetall(key).items()]
        elif kind in (b"set", b"zset"):
            held += list(client.zrange(key, 0, -1) if kind == b"zset" else client.smembers(key))
        held.append(key)
    return b"\n".join(held)


def listen_to(stack, *tenants) -> None:
    """A member in each tenant's progress group, so the workers publish to Redis (they
    skip groups no one is in) and the step names travel through it."""
    layer = RedisChannelLayer(hosts=[stack.redis.url], prefix="stepwell")
    for tenant in tenants:
        async_to_sync(layer.group_add)(tenant_group(tenant.pk), "specific.watcher!test")


def test_no_stored_row_log_line_or_redis_message_holds_a_secret(stack, acme, globex):
    values = {acme: f"acme-{uuid.uuid4().hex}", globex: f"globex-{uuid.uuid4().hex}"}
    set_quota(acme, sandbox_mode="fresh")
    set_quota(globex, sandbox_mode="warm")
    listen_to(stack, acme, globex)
    monitor = RedisMonitor(stack.redis.port)
    instances = {}
    for tenant, value in values.items():
        set_secret(tenant, "API_KEY", value)
        upload(tenant, "leaf", LEAF)
        workflow = upload(tenant, "leaky", LEAKY).workflow
        instances[tenant] = workflows.start_instance(workflow, payload={})[0]
    for instance in instances.values():
        finished(instance, timeout=90, stack=stack)
    traffic = monitor.stop()

    for instance in instances.values():
        assert instance.status == "complete", (instance.error, stack.logs())
        assert instance.output == {
            "replayed": {"echo": MARKER, MARKER: [MARKER]},
            "key": MARKER,
            "child": {"token": MARKER},
        }
        use, fail = instance.steps.order_by("index")[:2]
        assert use.name == f"use {MARKER}"
        assert f"calling with {MARKER}" in use.logs
        assert fail.error["message"] == f"the service refused {MARKER}"
        assert MARKER in fail.error["traceback"]

    rows = every_row_as_text()
    logs = "\n".join(process.log() for process in stack.processes())
    redis_seen = with_decoded_bodies(traffic) + redis_values(stack.redis.url)
    assert b"stepwell" in traffic  # the monitor saw the broker's traffic
    assert MARKER in rows
    assert MARKER.encode() in redis_seen  # the progress events went through Redis
    for value in values.values():
        assert value not in rows
        assert value not in logs
        assert value.encode() not in redis_seen
