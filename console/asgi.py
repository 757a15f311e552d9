"""The ASGI application: HTTP on Django's handler in a thread pool, WebSockets on Channels.

Served by uvicorn (the Procfile's `web`). See console/http.py for why HTTP does not go
through Django's ASGIHandler.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
django.setup(set_prefix=False)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from console.http import ThreadedHTTP  # noqa: E402
from console.origins import BrowserOriginValidator  # noqa: E402
from console.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": ThreadedHTTP(),
        "websocket": BrowserOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)
