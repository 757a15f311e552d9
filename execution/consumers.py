"""Live progress over WebSockets (API.md, "WebSocket").

Each consumer authenticates in `connect` (a Bearer token, or the console session),
joins a Channels group, sends a snapshot, and forwards what the engine publishes.
"""

from __future__ import annotations

import contextlib
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db import connection, transaction

from execution.models import Instance, ProgressEvent
from execution.progress import event_message, instance_group, tenant_group
from execution.schemas import InstanceOut, InstanceSummaryOut, instance_out, instance_summary
from tenants.memberships import find_membership
from tenants.models import Tenant
from tenants.tokens import authenticate_token

UNAUTHENTICATED = 4401
NOT_FOUND = 4404
SNAPSHOT_INSTANCES = 50


def bearer_token(scope) -> str | None:
    """The connection's Bearer token, or None. A connection with one is authenticated by
    it alone and never by the cookie, which is why console.origins may skip the Origin
    check for exactly these connections and no others."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            kind, _, token = value.decode("latin1").partition(" ")
            return token.strip() if kind.lower() == "bearer" else None
    return None


def query(scope) -> dict[str, str]:
    params = parse_qs(scope.get("query_string", b"").decode("latin1"))
    return {k: v[-1] for k, v in params.items()}


def tenant_for_scope(scope) -> Tenant | int:
    """The tenant a connection speaks for (its Bearer token's, else its session user's),
    or the close code: 4401 for nobody, 4404 for a user outside the tenant asked for."""
    raw = bearer_token(scope)
    if raw is not None:
        token = authenticate_token(raw)
        return token.tenant if token else UNAUTHENTICATED
    user = scope.get("user")
    if user is None or not user.is_authenticated:
        return UNAUTHENTICATED
    membership = find_membership(user, query(scope).get("tenant"), scope.get("session"))
    return membership.tenant if membership else NOT_FOUND


def instance_pk(tenant: Tenant, key: str) -> int | None:
    return Instance.objects.for_tenant(tenant).filter(key=key).values_list("pk", flat=True).first()


@contextlib.contextmanager
def one_snapshot():
    """A transaction whose reads all see the database at one moment, so that a snapshot's
    seq is exactly the last event it includes. PostgreSQL's default (read committed)
    would let a step recorded between two reads into the snapshot with an older seq,
    and `?after=<seq>` would then replay it; SQLite's transactions are serial anyway."""
    outermost = not connection.in_atomic_block  # (a test's transaction has begun already)
    with transaction.atomic():
        if connection.vendor == "postgresql" and outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def instance_snapshot(pk: int, after: int | None) -> tuple[dict, list[dict]]:
    """The instance's snapshot, and the stored events after `after` when asked for."""
    with one_snapshot():
        instance = Instance.objects.select_related("workflow", "version", "parent").get(pk=pk)
        data = InstanceOut.model_validate(instance_out(instance)).model_dump(mode="json")
        replay = []
        if after is not None:
            events = ProgressEvent.objects.filter(
                instance=instance, seq__gt=after, seq__lte=instance.last_seq
            ).order_by("seq")
            replay = [event_message(e, instance.key) for e in events]
    return {"type": "snapshot", "seq": instance.last_seq, "instance": data}, replay


def tenant_snapshot(tenant: Tenant) -> dict:
    """Recent instances, each with its own `seq` (events are numbered per instance)."""
    recent = Instance.objects.for_tenant(tenant).select_related("workflow", "version")
    return {
        "type": "snapshot",
        "instances": [
            {
                **InstanceSummaryOut.model_validate(instance_summary(i)).model_dump(mode="json"),
                "seq": i.last_seq,
            }
            for i in recent[:SNAPSHOT_INSTANCES]
        ],
    }


class ProgressConsumer(AsyncJsonWebsocketConsumer):
    groups_joined: tuple[str, ...] = ()

    async def refuse(self, code: int) -> None:
        # Accept first so that browsers and programs see the code, not a bare 403.
        await self.accept()
        await self.close(code=code)

    async def join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = (*self.groups_joined, group)

    async def disconnect(self, code):
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        """The stream is one way; whatever a client sends is ignored."""

    async def progress_event(self, message):
        await self.forward(message["event"])

    async def progress_batch(self, message):
        for event in message["events"]:
            await self.forward(event)

    async def forward(self, event: dict) -> None:
        await self.send_json(event)


class InstanceConsumer(ProgressConsumer):
    """`/ws/instances/{id}/`: a snapshot, then every event of one instance in seq order."""

    last_seq = 0

    async def connect(self):
        tenant = await database_sync_to_async(tenant_for_scope)(self.scope)
        if not isinstance(tenant, Tenant):
            return await self.refuse(tenant)
        after = query(self.scope).get("after", "")
        after = int(after) if after.isdigit() else None
        key = self.scope["url_route"]["kwargs"]["key"]
        pk = await database_sync_to_async(instance_pk)(tenant, key)
        if pk is None:
            return await self.refuse(NOT_FOUND)
        # Join before reading what is stored, so nothing published in between is missed.
        # Group messages are dispatched only after connect returns, and the seq check
        # in forward drops those already covered by the snapshot and replay.
        await self.join(instance_group(pk))
        snapshot, replay = await database_sync_to_async(instance_snapshot)(pk, after)
        await self.accept()
        await self.send_json(snapshot)
        for event in replay:
            await self.send_json(event)
        self.last_seq = max([snapshot["seq"], *(e["seq"] for e in replay)])

    async def forward(self, event: dict) -> None:
        if event["seq"] <= self.last_seq:
            return
        self.last_seq = event["seq"]
        await self.send_json(event)


class TenantConsumer(ProgressConsumer):
    """`/ws/tenant/`: recent instances, then every event of every instance of the tenant."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Each snapshotted instance's seq: what the snapshot already shows is not sent.
        self.seen: dict[str, int] = {}

    async def connect(self):
        tenant = await database_sync_to_async(tenant_for_scope)(self.scope)
        if not isinstance(tenant, Tenant):
            return await self.refuse(tenant)
        await self.join(tenant_group(tenant.pk))
        snapshot = await database_sync_to_async(tenant_snapshot)(tenant)
        self.seen = {i["id"]: i["seq"] for i in snapshot["instances"]}
        await self.accept()
        await self.send_json(snapshot)

    async def forward(self, event: dict) -> None:
        if event["seq"] <= self.seen.get(event["instance"], 0):
            return
        await self.send_json(event)
