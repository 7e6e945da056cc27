"""ASGI entry point: `config.asgi:application`, for daphne, uvicorn and runserver."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Set Django up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from config.routing import websocket_urlpatterns  # noqa: E402
from realtime import adapter, redis_client  # noqa: E402
from realtime.authentication.middleware import socket_stack  # noqa: E402

# Once per server process: the workers of one deployment must show the same namespace.
redis_client.log_start_up()
# Under daphne (its CLI, runserver, realtime.serve): every close code reaches
# the client, SIGTERM drains, request headers have a deadline and the access
# log masks credentials. Under uvicorn: the request-header deadline.
adapter.install()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": socket_stack(URLRouter(websocket_urlpatterns)),
    }
)
