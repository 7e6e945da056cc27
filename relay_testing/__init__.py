"""Relay's test kit: pytest fixtures for testing a project's own code that uses this service.

Load it from the project's root `conftest.py` with `pytest_plugins = ["relay_testing"]`. It gives:

- `relay_socket`: `await relay_socket(path, user)` opens a socket on any endpoint through the real
  ASGI application (`settings.ASGI_APPLICATION`, channels' WebsocketCommunicator), logged in as
  `user`, with its `welcome` frame already read; closed at teardown;
- `relay_pushes`: records what `notify()`, `post_message()` and every other write pushes after
  commit, as (group, event) at the channel layer's door, without a server;
- `relay_server`: a worker (`python -m realtime.serve`) on a free loopback port, sharing the test's
  database and channel layer, with its `url` and `ws_url(path)`.

Each fixture requests pytest-django's `transactional_db`, whatever the test's `django_db` mark says.
A push is sent when the writing transaction commits, which a test wrapped in one never does; and a
socket's handlers reach the database from threads of their own, which on SQLite wait on the test's
open transaction until "database is locked".
"""

from __future__ import annotations

from relay_testing.fixtures import (
    Push,
    Pushes,
    RelayServer,
    RelaySocket,
    relay_pushes,
    relay_server,
    relay_socket,
)

__all__ = [
    "Push",
    "Pushes",
    "RelayServer",
    "RelaySocket",
    "relay_pushes",
    "relay_server",
    "relay_socket",
]
