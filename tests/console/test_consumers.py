"""The WebSocket contract of API.md, through channels' WebsocketCommunicator."""

import json
import threading

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.db import connection, transaction

from console.asgi import application as full_application
from console.origins import BrowserOriginValidator
from console.routing import websocket_urlpatterns
from execution.models import Step
from execution.progress import record_event, step_summary
from execution.workflows import start_instance
from tests.console.conftest import ORDER_FLOW, client_for
from tests.factories import make_token, upload

application = URLRouter(websocket_urlpatterns)
TIMEOUT = 5


def session_headers(username: str) -> list[tuple[bytes, bytes]]:
    cookie = client_for(username).cookies["sessionid"].value
    return [(b"cookie", f"sessionid={cookie}".encode())]


def token_headers(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


def start(tenant):
    workflow = upload(tenant, "orders", ORDER_FLOW).workflow
    instance, _ = start_instance(workflow, payload={"items": [2, 3]})
    return instance


def step_started(instance, index: int, name: str) -> None:
    with transaction.atomic():
        step = Step.objects.create(
            instance=instance, index=index, name=name, kind="do", status="running", attempts=1
        )
        record_event(instance, "step.started", step=step_summary(step))


async def connect(path: str, headers, app=application) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(app, path, headers=headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return communicator


async def close_code(path: str, headers) -> int:
    communicator = await connect(path, headers)
    message = await communicator.receive_output(TIMEOUT)
    assert message["type"] == "websocket.close", message
    await communicator.wait()
    return message["code"]


async def refused(path: str, headers) -> bool:
    """Whether the deployed Origin check turns the connection away before any consumer."""
    communicator = WebsocketCommunicator(BrowserOriginValidator(application), path, headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    return not connected


@pytest.fixture
def instance(transactional_db, acme):
    return start(acme)


def test_a_session_user_gets_a_snapshot_then_every_change(instance):
    headers = session_headers("alice")

    async def scenario():
        ws = await connect(f"/ws/instances/{instance.key}/", headers)
        snapshot = await ws.receive_json_from(TIMEOUT)
        assert snapshot["type"] == "snapshot"
        assert snapshot["seq"] == 1
        assert snapshot["instance"]["id"] == instance.key
        assert snapshot["instance"]["status"] == "queued"
        await database_sync_to_async(step_started)(instance, 0, "price")
        event = await ws.receive_json_from(TIMEOUT)
        await ws.disconnect()
        return event

    event = async_to_sync(scenario)()
    assert event["seq"] == 2
    assert event["type"] == "step.started"
    assert event["instance"] == instance.key
    assert event["step"] == {
        "index": 0,
        "name": "price",
        "kind": "do",
        "status": "running",
        "attempts": 1,
    }
    assert json.loads(json.dumps(event)) == event


def test_a_bearer_token_connects_without_a_session(instance, acme):
    headers = token_headers(make_token(acme))

    async def scenario():
        ws = await connect(f"/ws/instances/{instance.key}/", headers)
        snapshot = await ws.receive_json_from(TIMEOUT)
        await ws.disconnect()
        return snapshot

    assert async_to_sync(scenario)()["instance"]["workflow"] == "orders"


def test_after_n_replays_what_was_missed_before_going_live(instance):
    for index, name in enumerate(["price", "ship", "bill"]):
        step_started(instance, index, name)
    headers = session_headers("alice")

    async def scenario():
        ws = await connect(f"/ws/instances/{instance.key}/?after=2", headers)
        received = [await ws.receive_json_from(TIMEOUT) for _ in range(3)]
        await database_sync_to_async(step_started)(instance, 3, "notify")
        received.append(await ws.receive_json_from(TIMEOUT))
        assert await ws.receive_nothing(0.3)
        await ws.disconnect()
        return received

    snapshot, *events = async_to_sync(scenario)()
    assert snapshot["seq"] == 4
    assert [e["seq"] for e in events] == [3, 4, 5]
    assert [e["step"]["name"] for e in events] == ["ship", "bill", "notify"]


def test_an_event_already_in_the_snapshot_is_not_sent_again(instance):
    headers = session_headers("alice")

    async def scenario():
        ws = await connect(f"/ws/instances/{instance.key}/", headers)
        await ws.receive_json_from(TIMEOUT)
        # A message published while the snapshot was read arrives after it: seq 1 again.
        from channels.layers import get_channel_layer

        from execution.progress import instance_group

        stale = {"seq": 1, "type": "instance.status", "instance": instance.key, "status": "x"}
        await get_channel_layer().group_send(
            instance_group(instance.pk), {"type": "progress.event", "event": stale}
        )
        nothing = await ws.receive_nothing(0.5)
        await ws.disconnect()
        return nothing

    assert async_to_sync(scenario)()


def test_bob_gets_4404_for_acmes_instance(instance, globex):
    path = f"/ws/instances/{instance.key}/"
    by_session = session_headers("bob")
    by_token = token_headers(make_token(globex))
    assert async_to_sync(close_code)(path, by_session) == 4404
    assert async_to_sync(close_code)(path, by_token) == 4404


def test_an_unknown_instance_is_4404(instance):
    headers = session_headers("alice")
    assert async_to_sync(close_code)("/ws/instances/nope/", headers) == 4404


def test_nobody_and_a_bad_token_get_4401(instance):
    path = f"/ws/instances/{instance.key}/"
    assert async_to_sync(close_code)(path, []) == 4401
    assert async_to_sync(close_code)(path, token_headers("sw_not-a-token")) == 4401
    assert async_to_sync(close_code)("/ws/tenant/", []) == 4401


def test_the_tenant_stream_lists_recent_instances_then_forwards_their_events(instance):
    headers = session_headers("alice")

    async def scenario():
        ws = await connect("/ws/tenant/", headers)
        snapshot = await ws.receive_json_from(TIMEOUT)
        await database_sync_to_async(step_started)(instance, 0, "price")
        event = await ws.receive_json_from(TIMEOUT)
        await ws.disconnect()
        return snapshot, event

    snapshot, event = async_to_sync(scenario)()
    assert snapshot["type"] == "snapshot"
    assert [i["id"] for i in snapshot["instances"]] == [instance.key]
    assert (event["type"], event["instance"]) == ("step.started", instance.key)


def test_bobs_tenant_stream_shows_nothing_of_acme(instance, globex):
    headers = token_headers(make_token(globex))

    async def scenario():
        ws = await connect("/ws/tenant/", headers)
        snapshot = await ws.receive_json_from(TIMEOUT)
        await database_sync_to_async(step_started)(instance, 0, "price")
        nothing = await ws.receive_nothing(0.5)
        await ws.disconnect()
        return snapshot, nothing

    snapshot, nothing = async_to_sync(scenario)()
    assert snapshot["instances"] == []
    assert nothing


def test_a_member_of_two_tenants_chooses_one_with_the_tenant_query(instance, globex):
    from django.contrib.auth import get_user_model

    from tenants.models import Membership

    alice = get_user_model().objects.get(username="alice")
    Membership.objects.create(tenant=globex, user=alice)
    headers = session_headers("alice")

    async def snapshot_of(path):
        ws = await connect(path, headers)
        snapshot = await ws.receive_json_from(TIMEOUT)
        await ws.disconnect()
        return snapshot

    assert len(async_to_sync(snapshot_of)("/ws/tenant/?tenant=acme")["instances"]) == 1
    assert async_to_sync(snapshot_of)("/ws/tenant/?tenant=globex")["instances"] == []
    path = f"/ws/instances/{instance.key}/?tenant=globex"
    assert async_to_sync(close_code)(path, headers) == 4404


def test_the_deployed_application_accepts_a_same_origin_browser(instance):
    headers = [*session_headers("alice"), (b"origin", b"http://127.0.0.1:8000")]

    async def scenario():
        ws = await connect(f"/ws/instances/{instance.key}/", headers, full_application)
        snapshot = await ws.receive_json_from(TIMEOUT)
        await ws.disconnect()
        return snapshot

    assert async_to_sync(scenario)()["type"] == "snapshot"


def test_a_program_with_a_token_needs_no_origin_but_a_cookie_does(instance, acme):
    app = BrowserOriginValidator(application)
    path = f"/ws/instances/{instance.key}/"

    async def snapshot_type(headers):
        ws = await connect(path, headers, app)
        message = await ws.receive_json_from(TIMEOUT)
        await ws.disconnect()
        return message["type"]

    assert async_to_sync(snapshot_type)(token_headers(make_token(acme))) == "snapshot"
    assert async_to_sync(refused)(path, session_headers("alice"))
    evil = [*session_headers("alice"), (b"origin", b"https://evil.example")]
    assert async_to_sync(refused)(path, evil)


@pytest.mark.parametrize("value", [b"Basic YWxpY2U6eA==", b"Token abc", b"sw_bare", b""])
def test_an_authorization_header_that_is_not_a_bearer_token_still_needs_an_origin(instance, value):
    path = f"/ws/instances/{instance.key}/"
    cookie = [*session_headers("alice"), (b"authorization", value)]
    assert async_to_sync(refused)(path, cookie)
    assert async_to_sync(refused)(path, [*cookie, (b"origin", b"https://evil.example")])


def test_the_snapshot_seq_is_the_last_event_it_includes(instance, monkeypatch):
    """A step recorded while the snapshot is read is in neither the snapshot nor its seq,
    so `?after=<seq>` sends it exactly once."""
    from execution import consumers

    real_instance_out = consumers.instance_out

    def instance_out_with_a_step_recorded_meanwhile(row):
        # Another connection commits a step and its event between the snapshot's reads.
        worker = threading.Thread(target=step_recorded_elsewhere, args=(instance,))
        worker.start()
        worker.join()
        return real_instance_out(row)

    monkeypatch.setattr(consumers, "instance_out", instance_out_with_a_step_recorded_meanwhile)
    snapshot, _ = consumers.instance_snapshot(instance.pk, None)
    monkeypatch.setattr(consumers, "instance_out", real_instance_out)
    assert (snapshot["seq"], snapshot["instance"]["steps"]) == (1, [])
    _, replay = consumers.instance_snapshot(instance.pk, snapshot["seq"])
    assert [(e["seq"], e["type"]) for e in replay] == [(2, "step.started")]


def step_recorded_elsewhere(instance) -> None:
    try:
        step_started(instance, 0, "price")
    finally:
        connection.close()


def test_the_tenant_snapshot_gives_each_instance_its_seq_and_sends_nothing_twice(instance):
    step_started(instance, 0, "price")
    headers = session_headers("alice")

    async def scenario():
        ws = await connect("/ws/tenant/", headers)
        snapshot = await ws.receive_json_from(TIMEOUT)
        from channels.layers import get_channel_layer

        from execution.progress import tenant_group

        stale = {"seq": 2, "type": "step.started", "instance": instance.key, "step": {}}
        await get_channel_layer().group_send(
            tenant_group(instance.tenant_id), {"type": "progress.event", "event": stale}
        )
        nothing = await ws.receive_nothing(0.5)
        await database_sync_to_async(step_started)(instance, 1, "ship")
        event = await ws.receive_json_from(TIMEOUT)
        await ws.disconnect()
        return snapshot, nothing, event

    snapshot, nothing, event = async_to_sync(scenario)()
    assert [(i["id"], i["seq"]) for i in snapshot["instances"]] == [(instance.key, 2)]
    assert nothing
    assert (event["seq"], event["step"]["name"]) == (3, "ship")
