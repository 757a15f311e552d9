"""Sends progress events to live clients from sync code, without waiting for Redis.

Each process keeps one background thread with its own event loop. channels-redis
keeps its connections per event loop, so one long-lived loop reuses them instead
of connecting afresh for every event (what `async_to_sync` per event amounts to),
and a queue drained by one task keeps the events in the order they were recorded.

Events go out in batches, one group message per group for all the events queued
meanwhile: a group send costs Redis round trips whatever it carries, and a busy
worker records several events per step. Groups nobody has joined are skipped after
one round trip, made by the publisher's thread, not the caller's, that asks Redis
which exist. That is safe because a consumer joins its group before it reads the
stored events: if the group did not exist when the publisher asked (after the
events' commit), the consumer's read comes later and sees them.
Delivery is best effort: the stored ProgressEvent is the record, and clients that
missed an event catch up with `?after=N`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading

import redis.asyncio
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 2.0
# How long the publisher lets events gather before it sends: a busy worker records a
# step every few milliseconds, and live clients do not see 10 ms.
LINGER_SECONDS = 0.01
# Events per group message; channels-redis refuses very large messages.
BATCH_EVENTS = 100


def batch_message(events: list[dict]) -> dict:
    """The group message of ProgressConsumer.progress_batch."""
    return {"type": "progress.batch", "events": events}


def gather(items: list[tuple[list[str], list[dict]]]) -> list[tuple[str, list[dict]]]:
    """(group, events) to send for queued (groups, events) items, each group's in order."""
    by_group: dict[str, list[dict]] = {}
    for groups, events in items:
        for group in groups:
            by_group.setdefault(group, []).extend(events)
    return [
        (group, events[i : i + BATCH_EVENTS])
        for group, events in by_group.items()
        for i in range(0, len(events), BATCH_EVENTS)
    ]


class BackgroundPublisher:
    def __init__(self, layer, audience: Audience | None = None):
        self.layer = layer
        self.audience = audience
        self.loop = asyncio.new_event_loop()
        # Sends go to a deque, and only the first since the last batch wakes the loop's
        # thread: a wake per send (a pipe write, then the thread taking the GIL from the
        # engine's) cost a busy worker more than the sends themselves.
        self.pending: collections.deque = collections.deque()
        self.woken = False
        self.woken_lock = threading.Lock()
        self.wake: asyncio.Event | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="progress-publisher", daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.wake = asyncio.Event()
        self.loop.call_soon(self.ready.set)
        self.loop.run_until_complete(self._drain())

    async def _drain(self) -> None:
        while True:
            await self.wake.wait()
            await asyncio.sleep(LINGER_SECONDS)
            with self.woken_lock:
                # Before the deque is emptied: a send after this line wakes the loop again.
                self.woken = False
                self.wake.clear()
            items = []
            while self.pending:
                items.append(self.pending.popleft())
            batches = gather(items)
            if self.audience is not None:
                batches = await self._joined(batches)
            for group, events in batches:
                try:
                    await asyncio.wait_for(
                        self.layer.group_send(group, batch_message(events)), SEND_TIMEOUT_SECONDS
                    )
                except Exception:
                    log.warning("could not publish progress events", exc_info=True)

    async def _joined(self, batches: list[tuple[str, list[dict]]]) -> list[tuple[str, list[dict]]]:
        groups = list(dict.fromkeys(group for group, _ in batches))
        try:
            joined = set(await asyncio.wait_for(self.audience.joined(groups), SEND_TIMEOUT_SECONDS))
        except Exception:
            log.warning("could not ask which progress groups have members", exc_info=True)
            return batches
        return [(group, events) for group, events in batches if group in joined]

    def send(self, groups: list[str], events: list[dict]) -> None:
        self.pending.append((groups, events))
        with self.woken_lock:
            if self.woken:
                return
            self.woken = True
        self.loop.call_soon_threadsafe(self.wake.set)


class Audience:
    """Which channels-redis groups have members, asked of Redis from the publisher's loop."""

    def __init__(self, layer):
        self.layer = layer
        self.client = None  # made in the loop that uses it: asyncio clients belong to one

    @classmethod
    def usable(cls, layer) -> bool:
        # Sharded or unusual set-ups: ask nothing, send to all.
        return len(layer.hosts) == 1 and "address" in layer.hosts[0]

    async def joined(self, groups: list[str]) -> list[str]:
        if self.client is None:
            self.client = redis.asyncio.Redis.from_url(self.layer.hosts[0]["address"])
        pipe = self.client.pipeline(transaction=False)
        for group in groups:
            # channels-redis 4 keeps a group's members in a sorted set under this key.
            pipe.exists(self.layer._group_key(group))
        found = await pipe.execute()
        return [group for group, exists in zip(groups, found, strict=True) if exists]


_publisher: BackgroundPublisher | None = None
_publisher_pid: int | None = None
_lock = threading.Lock()


def publish(groups: list[str], events: list[dict]) -> None:
    """Send the events to each group; never raises, never blocks on Redis."""
    global _publisher, _publisher_pid
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        if type(layer).__module__.startswith("channels_redis"):
            with _lock:
                # A forked worker process must not use its parent's thread, loop and sockets.
                if _publisher is None or _publisher_pid != os.getpid():
                    audience = Audience(layer) if Audience.usable(layer) else None
                    _publisher = BackgroundPublisher(layer, audience)
                    _publisher_pid = os.getpid()
            _publisher.send(groups, events)
            return

        async def send_all() -> None:
            for group, batch in gather([(groups, events)]):
                await layer.group_send(group, batch_message(batch))

        async_to_sync(send_all)()
    except Exception:
        log.warning("could not publish progress events", exc_info=True)
