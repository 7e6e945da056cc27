"""The channel layer is chosen by environment variables: backend, one Redis or Sentinel, the namespace."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.conf import settings

SHOW = (
    "import json, django; django.setup(); from django.conf import settings; "
    "print(json.dumps({'layer': settings.CHANNEL_LAYERS['default'], 'namespace': settings.REDIS_NAMESPACE,"
    " 'presence': settings.PRESENCE_BACKEND}, default=lambda o: type(o).__name__))"
)


def settings_for(**env: str) -> dict:
    base = {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_SECRET_KEY": "x",
        "PATH": "/usr/bin:/bin",
        "PYTHON_DOTENV_DISABLED": "1",  # never a developer's .env
    }
    out = subprocess.run(
        [sys.executable, "-c", SHOW], env=base | env, cwd=settings.BASE_DIR, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def layer_for(**env: str) -> dict:
    return settings_for(**env)["layer"]


def test_backend_is_selectable_and_defaults_to_pubsub():
    # channels_redis's pub/sub layer with our fixes (realtime/fanout/layer.py).
    assert (
        layer_for(REDIS_URL="redis://h:6379/2")["BACKEND"] == "realtime.fanout.layer.RelayPubSubChannelLayer"
    )
    core = layer_for(REDIS_URL="redis://h:6379/2", CHANNEL_LAYER_BACKEND="core")
    assert core["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    (host,) = core["CONFIG"]["hosts"]
    assert host["address"] == "redis://h:6379/2"
    # Above the core layer's 5 s blocking pop, so idle receives never time out.
    assert host["socket_timeout"] > 5
    # A command on a connection Redis closed is tried once more (realtime/redis_client.py).
    assert host["retry"] == "Retry"
    assert layer_for()["BACKEND"] == "channels.layers.InMemoryChannelLayer"


def test_sentinels_become_channels_redis_sentinel_hosts():
    """REDIS_SENTINELS gives channels_redis the dict it turns into a SentinelConnectionPool."""
    shown = settings_for(
        REDIS_SENTINELS="s1:26379, s2:26380",
        REDIS_SENTINEL_MASTER="relay",
        REDIS_SENTINEL_DB="3",
        REDIS_PASSWORD="pw",
    )
    (host,) = shown["layer"]["CONFIG"]["hosts"]
    assert host == {
        "master_name": "relay",
        "sentinels": [["s1", 26379], ["s2", 26380]],
        "sentinel_kwargs": {"socket_timeout": 15.0, "socket_connect_timeout": 5.0},
        "db": 3,
        "password": "pw",
        "socket_timeout": 15.0,
        "socket_connect_timeout": 5.0,
        "retry": "Retry",
        "max_connections": 2000,
    }
    # Presence and the rate limiter use Redis through Sentinel too, not a store per process.
    assert shown["presence"] == "chat.presence.RedisPresence"

    from channels_redis.utils import create_pool
    from redis.asyncio.sentinel import SentinelConnectionPool

    from realtime.redis_client import layer_host

    conf = settings_stub(REDIS_SENTINELS=["s1:26379"], REDIS_SENTINEL_MASTER="relay")
    pool = create_pool(layer_host(conf))
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "relay"


def settings_stub(**values):
    from types import SimpleNamespace

    defaults = {
        "REDIS_URL": "",
        "REDIS_SENTINELS": [],
        "REDIS_SENTINEL_MASTER": "mymaster",
        "REDIS_SENTINEL_DB": 0,
        "REDIS_PASSWORD": "",
        "REDIS_SOCKET_TIMEOUT": 15.0,
        "REDIS_CONNECT_TIMEOUT": 5.0,
        "REDIS_MAX_CONNECTIONS": 2000,
    }
    return SimpleNamespace(**(defaults | values))


def namespace(database_url: str, **conf) -> str:
    import dj_database_url

    from realtime.redis_client import namespace_for

    return namespace_for(
        conf.pop("override", ""), database=dj_database_url.parse(database_url), conf=settings_stub(**conf)
    )


def test_the_namespace_differs_by_database_and_redis_db_and_not_by_credentials():
    """Two deployments (other database, other Redis db) get other namespaces without anyone choosing one."""
    one = namespace("postgres://u:secret@db:5432/one", REDIS_URL="redis://r:6379/0")
    assert namespace("postgres://v:other@db:5432/one", REDIS_URL="redis://:pw@r:6379/0") == one
    assert namespace("postgres://u:secret@db:5432/one", REDIS_SENTINELS=["s:26379"]) == one  # Sentinel db 0
    others = {
        namespace("postgres://u:secret@db:5432/two", REDIS_URL="redis://r:6379/0"),
        namespace("postgres://u:secret@db2:5432/one", REDIS_URL="redis://r:6379/0"),
        namespace("postgres://u:secret@db:5433/one", REDIS_URL="redis://r:6379/0"),
        namespace("postgres://u:secret@db:5432/one", REDIS_URL="redis://r:6379/1"),
        namespace("postgres://u:secret@db:5432/one", REDIS_URL="redis://r:6379?db=2"),
        namespace("sqlite:////srv/relay/db.sqlite3", REDIS_URL="redis://r:6379/0"),
    }
    assert len(others) == 6 and one not in others


def test_redis_namespace_overrides_the_derived_one_and_is_checked():
    """REDIS_NAMESPACE, for workers that reach one database under different addresses."""
    from django.core.exceptions import ImproperlyConfigured

    assert namespace("postgres://db/one", REDIS_URL="redis://r/0", override="shop-eu_1") == "shop-eu_1"
    for bad in ("has space", "a:b", "a.b", "x" * 41):
        with pytest.raises(ImproperlyConfigured, match="REDIS_NAMESPACE must be"):
            namespace("postgres://db/one", REDIS_URL="redis://r/0", override=bad)


def test_the_settings_put_the_namespace_into_every_channel_name():
    """The layer's prefix (every channel and group) carries the namespace; REDIS_NAMESPACE replaces it."""
    env = {"DATABASE_URL": "postgres://u@db:5432/one", "REDIS_URL": "redis://r:6379/3"}
    derived = settings_for(**env)
    assert derived["namespace"] == namespace(env["DATABASE_URL"], REDIS_URL=env["REDIS_URL"])
    assert derived["layer"]["CONFIG"]["prefix"] == f"asgi.{derived['namespace']}."
    chosen = settings_for(**env, REDIS_NAMESPACE="shop-eu", CHANNEL_LAYER_PREFIX="relay")
    assert (chosen["namespace"], chosen["layer"]["CONFIG"]["prefix"]) == ("shop-eu", "relay.shop-eu.")


@pytest.mark.parametrize("address", ["s1", "s1:port", ":26379"])
def test_a_malformed_sentinel_address_is_a_configuration_error(address):
    """REDIS_SENTINELS entries are host:port; anything else names the variable."""
    from django.core.exceptions import ImproperlyConfigured

    from realtime.redis_client import layer_host

    with pytest.raises(ImproperlyConfigured, match="REDIS_SENTINELS must be host:port"):
        layer_host(settings_stub(REDIS_SENTINELS=[address]))
