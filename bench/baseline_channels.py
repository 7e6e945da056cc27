"""Baseline (a): the Channels tutorial's chat consumer, unchanged in spirit.

One `group_send` per message, `json.dumps` once per recipient, an
AsyncWebsocketConsumer per socket, no authorization beyond the scope. Served
with the project's settings (same channel layer) as
`daphne bench.baseline_channels:application`, on `/ws/baseline/<room>/`.

The ticker workload's baseline is on `/ws/baseline-ticker/`: the same frames as
`/ws/live/` (`subscribe` → one `subscribed` per topic, then `update`), one
Channels group per topic (`group_add` per topic per socket), and a publish is one
`group_send` to the topic's group (`bench.ticker_publish channels`).

The reconnect workload's baseline needs users: `/ws/baseline-auth/<room>/` is the chat consumer
for logged-in users only (the session cookie, through `AuthMiddlewareStack`; anyone else is
refused at the handshake, HTTP 403), and `/ws/baseline-inbox/` the same consumer on a group of the
user's own, as a tutorial-style notifications socket would be.
"""

import json
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import re_path  # noqa: E402

from bench.ticker_client import ticker_group  # noqa: E402


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code):
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    async def receive(self, text_data):
        message = json.loads(text_data)["message"]
        await self.channel_layer.group_send(
            self.room_group_name, {"type": "chat.message", "message": message}
        )

    async def chat_message(self, event):
        await self.send(text_data=json.dumps({"message": event["message"]}))


class AuthChatConsumer(ChatConsumer):
    async def connect(self):
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close()  # before accept: the handshake is refused
            return
        kwargs = self.scope["url_route"]["kwargs"]
        self.room_group_name = f"chat_{kwargs['room_name']}" if "room_name" in kwargs else f"user_{user.pk}"
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()


class TickerConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.topics = []
        await self.accept()

    async def disconnect(self, close_code):
        for topic in self.topics:
            await self.channel_layer.group_discard(ticker_group(topic), self.channel_name)

    async def receive(self, text_data):
        frame = json.loads(text_data)
        if frame.get("type") != "subscribe":
            return
        for topic in frame["topics"]:
            await self.channel_layer.group_add(ticker_group(topic), self.channel_name)
            self.topics.append(topic)
            await self.send(
                text_data=json.dumps({"type": "subscribed", "topic": topic, "seq": None, "data": None})
            )

    async def ticker_value(self, event):
        frame = {"type": "update", "topic": event["topic"], "seq": event["seq"], "data": event["data"]}
        await self.send(text_data=json.dumps(frame))


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter(
                    [
                        re_path(r"^ws/baseline/(?P<room_name>\w+)/$", ChatConsumer.as_asgi()),
                        re_path(r"^ws/baseline-ticker/$", TickerConsumer.as_asgi()),
                        re_path(r"^ws/baseline-auth/(?P<room_name>[\w-]+)/$", AuthChatConsumer.as_asgi()),
                        re_path(r"^ws/baseline-inbox/$", AuthChatConsumer.as_asgi()),
                    ]
                )
            )
        ),
    }
)
