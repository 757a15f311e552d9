"""The Redis broker transport: kombu's, with one redis client per channel for commands.

kombu's Redis channel builds a new redis-py client for every command it sends outside
its event loop (Channel.conn_or_acquire), each publish included, and a client's
construction (its table of response callbacks) and first command cost about 120 µs of a
publish's 500 (bench/README.md, "Issue 18, session 7: the dispatch path"). A redis-py
client holds no connection of its own: it borrows one from the pool for each command,
and is safe to share between threads. So one client per channel and pool sends the same
commands, through the same pool, with the same errors when Redis is away.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kombu.transport import redis


class Channel(redis.Channel):
    _commands_client = None

    @contextmanager
    def conn_or_acquire(self, client=None) -> Iterator:
        if client:
            yield client
            return
        shared = self._commands_client
        # A channel whose pools were dropped (kombu's _disconnect_pools) makes a new one.
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._commands_client = self._create_client()
        yield shared


class Transport(redis.Transport):
    Channel = Channel
