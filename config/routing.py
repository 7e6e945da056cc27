from django.urls import path, re_path

from chat.consumers import ChatConsumer
from live.consumers import LiveConsumer
from notifications.consumers import NotificationConsumer
from realtime.authentication.middleware import refuse_unknown_path

websocket_urlpatterns = [
    path("ws/notifications/", NotificationConsumer.as_asgi()),
    # Any text (even with slashes) reaches the consumer, which answers 4404
    # for one that names no room instead of failing the route.
    path("ws/chat/<path:slug>/", ChatConsumer.as_asgi()),
    # Live topics; the one endpoint that serves anonymous sockets (public topics only).
    path("ws/live/", LiveConsumer.as_asgi()),
    # Last: any other path is refused at the handshake (403), not a 500 with a traceback.
    re_path(r"", refuse_unknown_path),
]
