from channels.auth import AuthMiddlewareStack
from django.urls import path

from execution.consumers import InstanceConsumer, TenantConsumer

websocket_urlpatterns = [
    path("ws/instances/<str:key>/", AuthMiddlewareStack(InstanceConsumer.as_asgi())),
    path("ws/tenant/", AuthMiddlewareStack(TenantConsumer.as_asgi())),
]
