"""Progress events go out in batches, and only to groups somebody has joined."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from execution.publisher import BATCH_EVENTS, Audience, gather


def test_queued_events_are_gathered_per_group_in_order_and_in_bounded_batches():
    events = [{"seq": n} for n in range(BATCH_EVENTS + 2)]
    batches = gather([(["instance.1", "tenant.1"], events[:2]), (["instance.1"], events[2:])])
    instance = [batch for group, batch in batches if group == "instance.1"]
    assert [len(batch) for batch in instance] == [BATCH_EVENTS, 2]
    assert [e["seq"] for batch in instance for e in batch] == list(range(BATCH_EVENTS + 2))
    assert [batch for group, batch in batches if group == "tenant.1"] == [events[:2]]


def test_only_groups_with_members_are_sent_to():
    layer = get_channel_layer()
    audience = Audience(layer)  # its client belongs to the loop it was first used in

    async def ask() -> tuple[list[str], list[str]]:
        await layer.group_add("instance.990001", "specific.test!one")
        try:
            while_joined = await audience.joined(["instance.990001", "tenant.990001"])
        finally:
            await layer.group_discard("instance.990001", "specific.test!one")
        return while_joined, await audience.joined(["instance.990001"])

    assert async_to_sync(ask)() == (["instance.990001"], [])
