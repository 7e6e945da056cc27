from django.urls import path

from chat.consumers import ChatConsumer
from notifications.consumers import NotificationConsumer

websocket_urlpatterns = [
    path("ws/notifications/", NotificationConsumer.as_asgi()),
    # Any text (even with slashes) reaches the consumer, which answers 4404
    # for one that names no room instead of failing the route.
    path("ws/chat/<path:slug>/", ChatConsumer.as_asgi()),
]
