"""Every Redis connection the service opens is built here, from the settings.

Where Redis is: one server (`REDIS_URL`) or a master found through Sentinel
(`REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`, `REDIS_SENTINEL_DB`,
`REDIS_PASSWORD`), with the same timeouts (`REDIS_SOCKET_TIMEOUT`,
`REDIS_CONNECT_TIMEOUT`) and the same retry for every user of it:

- the channel layer (`layer_host`: the host dict channels_redis 4.3.0 turns
  into its pools; made while the settings load, so it reads them from the
  settings module itself), and through it the hub, pushes and `/readyz`;
- chat presence (`async_client` per event loop, `sync_client` for HTTP views);
- the chat rate limiter (`async_client`, handed to throttled-py through its
  `CONNECTION_FACTORY_CLASS` option: chat.ratelimit.RedisConnections).

**The retry.** redis-py 8.1 skips its check for a connection the server closed
when maintenance notifications are "auto" (its default), so after a Redis
restart (or a failover) the first command on each pooled connection failed
with "Connection closed by server", and a push sent that way was lost. Every
connection here retries a command once, on a new connection, after a
`ConnectionError` (redis-py's `Retry`; the failed connection is dropped
before the retry). Never after a timeout: with Redis frozen each caller would
wait twice `REDIS_SOCKET_TIMEOUT`. A retried command may have run once
already if the connection died after Redis ran it; for a push that is a
duplicate, which sockets drop by id. No health check (`health_check_interval`)
on top: it would add a PING before commands on idle connections and find
nothing the retry does not.

**The namespace.** Redis pub/sub ignores database numbers, so two deployments
sharing a Redis server would hear each other's channels. `REDIS_NAMESPACE`
goes into every name this deployment uses in Redis: the channel layer's prefix
(so every channel and group), presence keys and rate-limit keys. By default it
is a hash of the database's identity (engine, host, port, name) and the Redis
database number, so deployments differ without anyone choosing a prefix, and
the workers of one deployment agree because they share those settings. Workers
that reach one database under different addresses set it explicitly to one
value. Servers log it once at start-up (`log_start_up`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

import redis
import redis.asyncio as aioredis
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry
from redis.sentinel import Sentinel

from realtime.operations.logs import log_event

logger = logging.getLogger("realtime.redis")

# Letters, digits, "-" and "_": valid in channel names, keys and log lines.
_NAMESPACE = re.compile(r"[A-Za-z0-9_-]{1,40}")
_HASH_LENGTH = 12


def _conf(conf: Any) -> Any:
    if conf is not None:
        return conf
    from django.conf import settings

    return settings


def configured(conf: Any = None) -> bool:
    """True when the settings name a Redis (a URL or sentinels)."""
    conf = _conf(conf)
    return bool(conf.REDIS_URL or conf.REDIS_SENTINELS)


def _sentinels(conf: Any) -> list[tuple[str, int]]:
    hosts = []
    for address in conf.REDIS_SENTINELS:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ImproperlyConfigured("REDIS_SENTINELS must be host:port[,host:port...]")
        hosts.append((host, int(port)))
    return hosts


def _timeouts(conf: Any) -> dict[str, float]:
    return {
        "socket_timeout": conf.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": conf.REDIS_CONNECT_TIMEOUT,
    }


def _options(conf: Any, *, asyncio: bool) -> dict[str, Any]:
    """Keyword arguments for every connection: timeouts and one retry on a new connection."""
    retry_class = AsyncRetry if asyncio else Retry
    return {**_timeouts(conf), "retry": retry_class(NoBackoff(), 1, supported_errors=(RedisConnectionError,))}


def _master(conf: Any) -> dict[str, Any]:
    """How to reach the master through Sentinel: its db and password (the sentinels are asked without one)."""
    master: dict[str, Any] = {"db": conf.REDIS_SENTINEL_DB}
    if conf.REDIS_PASSWORD:
        master["password"] = conf.REDIS_PASSWORD
    return master


def layer_host(conf: Any = None) -> dict[str, Any]:
    """The channel layer's entry in `hosts`: channels_redis passes its keys to the pool it builds.

    With `address`, `ConnectionPool.from_url(address, **rest)`; with
    `master_name`, a `SentinelConnectionPool` over `Sentinel(sentinels,
    sentinel_kwargs=...)`, the rest going to each master connection
    (channels_redis.utils.create_pool, 4.3.0).
    """
    conf = _conf(conf)
    # redis-py's default 5 s read timeout equals the core layer's 5 s blocking
    # pop, so idle sockets' receives failed at random; its default pool of 100
    # connections raises instead of waiting when many handshakes arrive at once.
    options = {**_options(conf, asyncio=True), "max_connections": conf.REDIS_MAX_CONNECTIONS}
    if conf.REDIS_SENTINELS:
        return {
            "master_name": conf.REDIS_SENTINEL_MASTER,
            "sentinels": _sentinels(conf),
            "sentinel_kwargs": _timeouts(conf),
            **_master(conf),
            **options,
        }
    return {"address": conf.REDIS_URL, **options}


class _BlockingSentinelConnectionPool(AsyncSentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The master through Sentinel, and callers wait for a free connection past `max_connections`.

    Both are redis-py classes that call `super().__init__`; this composes them.
    """


def async_client(*, max_connections: int | None = None, wait_seconds: float | None = None) -> aioredis.Redis:
    """A redis.asyncio client, for the running event loop only (its connections belong to it).

    `wait_seconds`: past `max_connections`, wait this long for a free
    connection instead of failing at once.
    """
    conf = _conf(None)
    options = _options(conf, asyncio=True)
    options["max_connections"] = max_connections or conf.REDIS_MAX_CONNECTIONS
    if wait_seconds is not None:
        options["timeout"] = wait_seconds
    if conf.REDIS_SENTINELS:
        sentinel = AsyncSentinel(_sentinels(conf), sentinel_kwargs=_timeouts(conf))
        pool_class = AsyncSentinelConnectionPool if wait_seconds is None else _BlockingSentinelConnectionPool
        pool = pool_class(conf.REDIS_SENTINEL_MASTER, sentinel, **_master(conf), **options)
    else:
        pool_class = aioredis.ConnectionPool if wait_seconds is None else aioredis.BlockingConnectionPool
        pool = pool_class.from_url(conf.REDIS_URL, **options)
    return aioredis.Redis(connection_pool=pool)


def sync_client() -> redis.Redis:
    """A blocking client (thread-safe: its pool hands each thread its own connection)."""
    conf = _conf(None)
    options = _options(conf, asyncio=False)
    if conf.REDIS_SENTINELS:
        sentinel = Sentinel(_sentinels(conf), sentinel_kwargs=_timeouts(conf))
        return sentinel.master_for(conf.REDIS_SENTINEL_MASTER, **_master(conf), **options)
    return redis.Redis.from_url(conf.REDIS_URL, **options)


# --- the deployment's namespace ------------------------------------------------------------
def redis_db(conf: Any = None) -> int:
    """The Redis database number in use (part of the default namespace)."""
    conf = _conf(conf)
    if conf.REDIS_SENTINELS:
        return int(conf.REDIS_SENTINEL_DB)
    if conf.REDIS_URL:
        return int(parse_url(conf.REDIS_URL).get("db") or 0)
    return 0


def database_identity(database: dict[str, Any]) -> str:
    """Engine, host, port and name of a DATABASES entry: what the default namespace is made of."""
    engine = database["ENGINE"].rsplit(".", 1)[-1]
    host = str(database.get("HOST") or "").lower()
    return f"{engine}://{host}:{database.get('PORT') or ''}/{database['NAME']}"


def derive_namespace(database: dict[str, Any], db: int) -> str:
    """The default namespace: a short hash of the database's identity and the Redis db number."""
    identity = f"{database_identity(database)}|redis-db={db}"
    return hashlib.sha256(identity.encode()).hexdigest()[:_HASH_LENGTH]


def namespace_for(override: str, *, database: dict[str, Any], conf: Any) -> str:
    """`REDIS_NAMESPACE` when set (checked), else the derived one."""
    if not override:
        return derive_namespace(database, redis_db(conf))
    if not _NAMESPACE.fullmatch(override):
        raise ImproperlyConfigured("REDIS_NAMESPACE must be 1-40 letters, digits, '-' or '_'")
    return override


def layer_prefix(base: str, namespace: str) -> str:
    """The channel layer's prefix: every channel and group name starts with it."""
    return f"{base}.{namespace}."


def namespaced(prefix: str) -> str:
    """A key prefix (presence, rate limits) inside this deployment's namespace."""
    from django.conf import settings

    return f"{prefix}:{settings.REDIS_NAMESPACE}"


def log_start_up() -> None:
    """One line per server process: operators compare it across the workers of a deployment."""
    from django.conf import settings

    if not configured():
        return
    derived = derive_namespace(settings.DATABASES["default"], redis_db())
    log_event(
        logger,
        "redis_namespace",
        namespace=settings.REDIS_NAMESPACE,
        source="derived" if settings.REDIS_NAMESPACE == derived else "REDIS_NAMESPACE",
        database=database_identity(settings.DATABASES["default"]),
        redis="sentinel" if settings.REDIS_SENTINELS else "url",
        redis_db=redis_db(),
        channel_prefix=layer_prefix(settings.CHANNEL_LAYER_PREFIX, settings.REDIS_NAMESPACE),
    )
