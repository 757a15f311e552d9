"""Which WebSocket connections must come from one of our own pages.

A browser sends the session cookie with every WebSocket it opens, from any site, so a
connection that relies on the cookie must carry an Origin of ours. A program sends an
`Authorization: Bearer` header instead, which a browser's WebSocket API cannot set and
no other site can borrow; such a connection is authenticated by the token alone (the
consumer then ignores any cookie) and needs no Origin at all. Any other `Authorization`
header (Basic, a bare value) leaves the consumer on the cookie, so it gets the check too:
both sides ask `bearer_token` the same question.
"""

from __future__ import annotations

from channels.security.websocket import AllowedHostsOriginValidator

from execution.consumers import bearer_token


class BrowserOriginValidator:
    def __init__(self, application):
        self.application = application
        self.checked = AllowedHostsOriginValidator(application)

    async def __call__(self, scope, receive, send):
        if bearer_token(scope) is not None:
            return await self.application(scope, receive, send)
        return await self.checked(scope, receive, send)
