"""The channel layer is chosen by environment variables: backend, one Redis or Sentinel."""

from __future__ import annotations

import json
import subprocess
import sys

from django.conf import settings

SHOW = (
    "import json, django; django.setup(); from django.conf import settings; "
    "print(json.dumps(settings.CHANNEL_LAYERS['default'], default=list))"
)


def layer_for(**env: str) -> dict:
    base = {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_SECRET_KEY": "x",
        "PATH": "/usr/bin:/bin",
        "PYTHON_DOTENV_DISABLED": "1",  # never a developer's .env
    }
    out = subprocess.run(
        [sys.executable, "-c", SHOW], env=base | env, cwd=settings.BASE_DIR, capture_output=True, check=True
    )
    return json.loads(out.stdout)


def test_backend_is_selectable_and_defaults_to_pubsub():
    # channels_redis's pub/sub layer with our fixes (realtime/redis_layer.py).
    assert (
        layer_for(REDIS_URL="redis://h:6379/2")["BACKEND"] == "realtime.redis_layer.RelayPubSubChannelLayer"
    )
    core = layer_for(REDIS_URL="redis://h:6379/2", CHANNEL_LAYER_BACKEND="core")
    assert core["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    (host,) = core["CONFIG"]["hosts"]
    assert host["address"] == "redis://h:6379/2"
    # Above the core layer's 5 s blocking pop, so idle receives never time out.
    assert host["socket_timeout"] > 5
    assert layer_for()["BACKEND"] == "channels.layers.InMemoryChannelLayer"


def test_sentinels_become_channels_redis_sentinel_hosts():
    """REDIS_SENTINELS gives channels_redis the dict it turns into a SentinelConnectionPool."""
    layer = layer_for(
        REDIS_SENTINELS="s1:26379, s2:26380",
        REDIS_SENTINEL_MASTER="relay",
        REDIS_SENTINEL_DB="3",
        REDIS_PASSWORD="pw",
    )
    (host,) = layer["CONFIG"]["hosts"]
    assert host == {
        "master_name": "relay",
        "sentinels": [["s1", 26379], ["s2", 26380]],
        "db": 3,
        "password": "pw",
        "socket_timeout": 15.0,
        "socket_connect_timeout": 5.0,
        "max_connections": 2000,
    }

    from channels_redis.utils import create_pool
    from redis.asyncio.sentinel import SentinelConnectionPool

    pool = create_pool({**host, "sentinels": [tuple(s) for s in host["sentinels"]]})
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "relay"
