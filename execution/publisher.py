"""Sends progress events to live clients from sync code, without waiting for Redis.

Each process keeps one background thread with its own event loop. channels-redis
keeps its connections per event loop, so one long-lived loop reuses them instead
of connecting afresh for every event (what `async_to_sync` per event amounts to),
and a queue drained by one task keeps the events in the order they were recorded.
Delivery is best effort: the stored ProgressEvent is the record, and clients that
missed an event catch up with `?after=N`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 2.0


class BackgroundPublisher:
    def __init__(self, layer):
        self.layer = layer
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="progress-publisher", daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.queue = asyncio.Queue()
        self.loop.call_soon(self.ready.set)
        self.loop.run_until_complete(self._drain())

    async def _drain(self) -> None:
        while True:
            groups, payload = await self.queue.get()
            try:
                for group in groups:
                    await asyncio.wait_for(
                        self.layer.group_send(group, payload), SEND_TIMEOUT_SECONDS
                    )
            except Exception:
                log.warning("could not publish a progress event", exc_info=True)

    def send(self, groups: list[str], payload: dict) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (groups, payload))


_publisher: BackgroundPublisher | None = None
_publisher_pid: int | None = None
_lock = threading.Lock()


def publish(groups: list[str], payload: dict) -> None:
    """Send `payload` to each group; never raises, never blocks on Redis."""
    global _publisher, _publisher_pid
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        if type(layer).__module__.startswith("channels_redis"):
            with _lock:
                # A forked worker process must not use its parent's thread and loop.
                if _publisher is None or _publisher_pid != os.getpid():
                    _publisher, _publisher_pid = BackgroundPublisher(layer), os.getpid()
            _publisher.send(groups, payload)
            return

        async def send_all() -> None:
            for group in groups:
                await layer.group_send(group, payload)

        async_to_sync(send_all)()
    except Exception:
        log.warning("could not publish a progress event", exc_info=True)
