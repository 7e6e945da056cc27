"""Django settings, read from the environment (see README, "Configuration")."""

from __future__ import annotations

import hashlib
import hmac
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.csp import content_security_policy
from config.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
    is_placeholder_secret,
    load_env_file,
)
from config.logging_config import logging_config
from realtime import redis_client

BASE_DIR = Path(__file__).resolve().parent.parent

# The development `.env` (`make run` writes it), for every command; variables
# set in the environment win. See config/env.py.
load_env_file(BASE_DIR)

DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is required when DJANGO_DEBUG is false "
            "(`make run` writes a development .env with DJANGO_DEBUG=true and a key)."
        )
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"  # noqa: S105
elif not DEBUG and is_placeholder_secret(SECRET_KEY):
    # The value itself is never printed: it may be a real key after all.
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is still a placeholder (such as .env.example's "
        '"change-me-..."): sessions and tokens signed with it can be forged. Set it to a '
        'long random value, e.g. python -c "import secrets; print(secrets.token_urlsafe(50))".'
    )

# Rotation: the previous keys, newest first. Sessions, signed data, API-key
# hashes and (with the default JWT_SIGNING_KEY) access tokens made under them
# still verify; Django re-signs a session under SECRET_KEY on its next request.
SECRET_KEY_FALLBACKS = env_list("DJANGO_SECRET_KEY_FALLBACKS", [])

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1"])

# Origins a cookie-authenticated browser socket may come from. A bare host
# (the default, one per allowed host) matches it on http and https, any port;
# "scheme://host[:port]" matches exactly. See docs/protocol.md.
WS_ALLOWED_ORIGINS = env_list("WS_ALLOWED_ORIGINS", ALLOWED_HOSTS)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "csp",
    "realtime",
    "realtime.authentication",
    "notifications",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
]

ROOT_URLCONF = "config.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "notifications.context_processors.unread_count",
            ],
            # Every page names its stylesheet and scripts with {% static %}.
            "builtins": ["django.templatetags.static"],
        },
    },
]


# --- Content-Security-Policy (django-csp; config/csp.py) ---------------------------
CONTENT_SECURITY_POLICY = content_security_policy(allowed_hosts=ALLOWED_HOSTS)

WSGI_APPLICATION = None
ASGI_APPLICATION = "config.asgi.application"

# --- Database -----------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not shared-cache memory: socket tests reach the database from
    # several threads at once.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / ".test.sqlite3")}
    DATABASES["default"]["OPTIONS"] = {"timeout": 20}
else:
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int(
        "DATABASE_CONNECT_TIMEOUT", 5, minimum=1
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and the channel layer --------------------------------------------------
# REDIS_URL (one Redis) or REDIS_SENTINELS (Redis with Sentinel, for high
# availability) turns on the Redis layer that carries group messages between
# worker processes and machines, and shares presence and rate limits between
# them. realtime/redis_client.py builds every Redis connection from these.
# See README, "Production".
REDIS_URL = env_str("REDIS_URL")
REDIS_SENTINELS = env_list("REDIS_SENTINELS", [])
REDIS_SENTINEL_MASTER = env_str("REDIS_SENTINEL_MASTER", "mymaster")
REDIS_SENTINEL_DB = env_int("REDIS_SENTINEL_DB", 0)
REDIS_PASSWORD = env_str("REDIS_PASSWORD")  # the master's, with Sentinel
# The read timeout must exceed the core layer's 5 s blocking pop.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 15.0, minimum=6.0)
REDIS_CONNECT_TIMEOUT = env_float("REDIS_CONNECT_TIMEOUT", 5.0, minimum=0.1)
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 2000, minimum=10)
# Part of every name this deployment uses in Redis (channels, groups, presence
# and rate-limit keys): by default a hash of the database and the Redis db
# number, so deployments sharing a Redis server never hear each other.
# The settings so far are this module: the factory reads the REDIS_* names from it.
_here = sys.modules[__name__]
REDIS_NAMESPACE = redis_client.namespace_for(
    env_str("REDIS_NAMESPACE"), database=DATABASES["default"], conf=_here
)

# "pubsub" (RedisPubSubChannelLayer, the default) or "core" (RedisChannelLayer,
# sorted sets with capacity and expiry). Pub/sub measured 4-15x faster
# (deploy/layer_compare.py, README "Production"); neither guarantees delivery,
# and the protocol does not need it: sockets fill gaps from the database.
# Pub/sub is channels_redis's class with fixes of ours (realtime/fanout/layer.py:
# a publish to a frozen Redis no longer stalls every handshake on the worker).
CHANNEL_LAYER_BACKEND = env_str("CHANNEL_LAYER_BACKEND", "pubsub").lower()
_LAYER_CLASSES = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "realtime.fanout.layer.RelayPubSubChannelLayer",
}
if CHANNEL_LAYER_BACKEND not in _LAYER_CLASSES:
    raise ImproperlyConfigured(f"CHANNEL_LAYER_BACKEND must be one of {sorted(_LAYER_CLASSES)}")
CHANNEL_LAYER_PREFIX = env_str("CHANNEL_LAYER_PREFIX", "asgi")

if redis_client.configured(_here):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": _LAYER_CLASSES[CHANNEL_LAYER_BACKEND],
            "CONFIG": {
                "hosts": [redis_client.layer_host(_here)],
                "prefix": redis_client.layer_prefix(CHANNEL_LAYER_PREFIX, REDIS_NAMESPACE),
                # Read by the core layer only; the pub/sub layer has no queues.
                "capacity": env_int("CHANNEL_LAYER_CAPACITY", 1000, minimum=1),
                "expiry": env_int("CHANNEL_LAYER_EXPIRY", 60, minimum=1),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Auth and sessions ----------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The login throttle first: while it is on for a username or an address, no
# password is checked (realtime/authentication/login_throttle.py).
AUTHENTICATION_BACKENDS = [
    "realtime.authentication.login_throttle.ThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/notifications/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# --- Tokens (see realtime/authentication/tokens.py and docs/protocol.md, "Authentication") -------
JWT_LIFETIME_SECONDS = env_int("JWT_LIFETIME_SECONDS", 900, minimum=1)
JWT_ISSUER = env_str("JWT_ISSUER", "relay")
JWT_AUDIENCE = env_str("JWT_AUDIENCE", "relay")


def _jwt_key(secret: str) -> str:
    return hmac.new(secret.encode(), b"relay.jwt-signing-key", hashlib.sha256).hexdigest()


# Its own key, so tokens can be rotated without touching sessions; by default
# derived from SECRET_KEY (never SECRET_KEY itself, which also signs cookies).
JWT_SIGNING_KEY = env_str("JWT_SIGNING_KEY") or _jwt_key(SECRET_KEY)
if len(JWT_SIGNING_KEY.encode()) < 32:
    # RFC 7518 3.2: an HS256 key must have at least 256 bits.
    raise ImproperlyConfigured("JWT_SIGNING_KEY must be at least 32 bytes long")
# Keys whose tokens still verify: derived from SECRET_KEY_FALLBACKS, so rotating
# DJANGO_SECRET_KEY does not cut off scripts mid-token. A JWT_SIGNING_KEY set by
# hand has none: changing it revokes every token, as documented.
JWT_FALLBACK_KEYS = [] if env_str("JWT_SIGNING_KEY") else [_jwt_key(key) for key in SECRET_KEY_FALLBACKS]

# --- Real-time limits (every number the sockets rely on) --------------------------
WS_MAX_FRAME_BYTES = env_int("WS_MAX_FRAME_BYTES", 65536, minimum=64)
# Outgoing bytes a client may leave unread before the worker cuts it off
# (realtime.adapter.wire for pushed events under daphne and uvicorn; realtime.serve for
# every frame); it resumes when it reconnects.
WS_MAX_BUFFER_BYTES = env_int("WS_MAX_BUFFER_BYTES", 4 * 1024 * 1024, minimum=1024)
WS_AUTH_TIMEOUT_SECONDS = env_float("WS_AUTH_TIMEOUT_SECONDS", 5.0, minimum=0.01)
# A connection must have sent a whole request line and headers this long after
# it opened (or after its previous response): a client trickling a handshake a
# byte at a time, or saying nothing, is closed (realtime.adapter, under daphne
# and uvicorn alike; the servers' own idle timeouts restart on every byte).
HTTP_HEADER_TIMEOUT_SECONDS = env_float("HTTP_HEADER_TIMEOUT_SECONDS", 10.0, minimum=0.1)
# The listen queue of the port under daphne, realtime.serve and runserver (realtime.adapter;
# Twisted's own is 50); uvicorn's is its --backlog. The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = env_int("LISTEN_BACKLOG", 4096, minimum=1)
WS_MAX_IDS_PER_FRAME = env_int("WS_MAX_IDS_PER_FRAME", 1000, minimum=1)
# A socket's error frames are logged one line per interval plus a count (realtime.operations.observe.error),
# so a client sending bad frames cannot flood the log; 0 logs every one.
WS_ERROR_LOG_INTERVAL_SECONDS = env_float("WS_ERROR_LOG_INTERVAL_SECONDS", 10.0, minimum=0.0)
NOTIFICATIONS_REPLAY_LIMIT = env_int("NOTIFICATIONS_REPLAY_LIMIT", 100, minimum=1)
API_PAGE_MAX = env_int("API_PAGE_MAX", 100, minimum=1)
API_PAGE_DEFAULT = env_int("API_PAGE_DEFAULT", 20, minimum=1)
CHAT_RATE_PER_SECOND = env_float("CHAT_RATE_PER_SECOND", 10.0, minimum=0.001)
CHAT_RATE_BURST = env_int("CHAT_RATE_BURST", 20, minimum=1)
CHAT_MAX_BODY = env_int("CHAT_MAX_BODY", 4000, minimum=1)
CHAT_HISTORY = env_int("CHAT_HISTORY", 50, minimum=0)
# How often a worker re-adds its channel-layer group memberships (they expire,
# and a restarted Redis forgets them).
HUB_REFRESH_SECONDS = env_float("HUB_REFRESH_SECONDS", 60.0, minimum=0.05)
# A worker pings itself through the channel layer this often while it has
# sockets; no echo within the timeout closes its sockets (1011) so clients resume.
HUB_HEARTBEAT_SECONDS = env_float("HUB_HEARTBEAT_SECONDS", 5.0, minimum=0.05)
HUB_HEARTBEAT_TIMEOUT_SECONDS = env_float("HUB_HEARTBEAT_TIMEOUT_SECONDS", 10.0, minimum=0.05)
CHAT_REPLAY_LIMIT = env_int("CHAT_REPLAY_LIMIT", 100, minimum=1)
# This many `rate_limited` answers within the window close the socket with 4429.
CHAT_ABUSE_LIMIT = env_int("CHAT_ABUSE_LIMIT", 20, minimum=1)
CHAT_ABUSE_WINDOW_SECONDS = env_float("CHAT_ABUSE_WINDOW_SECONDS", 10.0, minimum=0.001)
# Extra `typing` frames from one socket within this interval are dropped.
CHAT_TYPING_INTERVAL_SECONDS = env_float("CHAT_TYPING_INTERVAL_SECONDS", 1.0, minimum=0.0)
CHAT_RATE_KEY_PREFIX = env_str("CHAT_RATE_KEY_PREFIX", "chat-rate")

# A user's sockets on every endpoint and worker together (contract v2); further
# ones are closed with 4429 `too_many_sockets` (realtime/authentication/socket_cap.py). Each
# socket's slot is an entry in Redis that its worker refreshes every heartbeat
# and that expires after the TTL, so a killed worker's slots come back.
WS_MAX_SOCKETS_PER_USER = env_int("WS_MAX_SOCKETS_PER_USER", 50, minimum=1)
WS_SOCKETS_TTL_SECONDS = env_float("WS_SOCKETS_TTL_SECONDS", 60.0, minimum=0.01)
WS_SOCKETS_HEARTBEAT_SECONDS = env_float("WS_SOCKETS_HEARTBEAT_SECONDS", 15.0, minimum=0.01)
if WS_SOCKETS_TTL_SECONDS < 2 * WS_SOCKETS_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured("WS_SOCKETS_TTL_SECONDS must be at least twice WS_SOCKETS_HEARTBEAT_SECONDS")
WS_SOCKETS_KEY_PREFIX = env_str("WS_SOCKETS_KEY_PREFIX", "sockets")

# --- Load shedding (realtime/handshake_queue.py) ------------------------------------------
# While this many socket handshakes are in progress on a worker, it refuses a new
# one at once, before any credential lookup: HTTP 503 with Retry-After (close 1013
# where the server cannot answer a handshake with a status). 0: never refuse.
WS_HANDSHAKE_QUEUE_LIMIT = env_int("WS_HANDSHAKE_QUEUE_LIMIT", 1000, minimum=0)
# The refusal's Retry-After (whole seconds, as HTTP has it); clients add their jittered backoff.
WS_HANDSHAKE_RETRY_AFTER_SECONDS = env_int("WS_HANDSHAKE_RETRY_AFTER_SECONDS", 1, minimum=0)

# --- Login throttle (contract v2; realtime/authentication/login_throttle.py) ----------------------
# This many failed logins within the window, for one username or from one client
# address, refuse further attempts with 429 until the oldest of them leaves the window.
LOGIN_FAILURES_MAX = env_int("LOGIN_FAILURES_MAX", 10, minimum=1)
LOGIN_FAILURES_WINDOW_SECONDS = env_int("LOGIN_FAILURES_WINDOW_SECONDS", 300, minimum=1)
LOGIN_THROTTLE_KEY_PREFIX = env_str("LOGIN_THROTTLE_KEY_PREFIX", "login-failures")
# Proxies (addresses or networks, e.g. 10.0.0.5,172.30.0.0/24) whose
# X-Forwarded-For names the client; from anyone else the header is ignored.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", [])

# Threads per lane for socket handlers' database work (realtime/db.py): one lane
# for handshakes, one for the frames of open sockets; each thread holds a connection.
DB_SOCKET_THREADS = env_int("DB_SOCKET_THREADS", 2, minimum=1)

# --- Presence (see chat/presence/) ----------------------------------------------------
PRESENCE_BACKEND = env_str(
    "PRESENCE_BACKEND",
    "chat.presence.RedisPresence" if redis_client.configured(_here) else "chat.presence.MemoryPresence",
)
PRESENCE_KEY_PREFIX = env_str("PRESENCE_KEY_PREFIX", "presence")
PRESENCE_TTL_SECONDS = env_float("PRESENCE_TTL_SECONDS", 60.0, minimum=0.01)
PRESENCE_HEARTBEAT_SECONDS = env_float("PRESENCE_HEARTBEAT_SECONDS", 15.0, minimum=0.01)
# A worker's entries live TTL - HEARTBEAT after each refresh and are swept within
# one more heartbeat, so a dead worker's users leave within the TTL; that needs
# at least two heartbeats inside it.
if PRESENCE_TTL_SECONDS < 2 * PRESENCE_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured("PRESENCE_TTL_SECONDS must be at least twice PRESENCE_HEARTBEAT_SECONDS")
# At most one presence frame per room per socket in this interval (contract v2).
PRESENCE_FLUSH_MS = env_int("PRESENCE_FLUSH_MS", 500, minimum=1)
# Names in the chat welcome and in one presence frame; more changes send only the count.
PRESENCE_LIST_MAX = env_int("PRESENCE_LIST_MAX", 100, minimum=1)

# --- Live topics (see live/ and docs/protocol.md, "/ws/live/") ---------------------------
INSTALLED_APPS += ["live"]  # here, with the rest of the live settings
LIVE_KEY_PREFIX = env_str("LIVE_KEY_PREFIX", "live")
LIVE_MAX_TOPICS = env_int("LIVE_MAX_TOPICS", 200, minimum=1)  # per socket (contract v2)
# The largest value any topic may accept (a declaration's max_bytes is checked against it).
LIVE_MAX_VALUE_BYTES = env_int("LIVE_MAX_VALUE_BYTES", 256 * 1024, minimum=64)
# A socket whose connection holds more unsent bytes than this gets only the newest
# value of each topic, when it has read enough (conflation); it is never cut off
# (a value is written only where it fits under WS_MAX_BUFFER_BYTES: live/outbox.py).
LIVE_BUFFER_BYTES = env_int("LIVE_BUFFER_BYTES", 128 * 1024, minimum=1024)
LIVE_FLUSH_POLL_MS = env_int("LIVE_FLUSH_POLL_MS", 20, minimum=1)  # how often a backed-up socket is looked at
LIVE_ANONYMOUS_SOCKETS_PER_ADDRESS = env_int("LIVE_ANONYMOUS_SOCKETS_PER_ADDRESS", 20, minimum=1)
LIVE_SUBSCRIBE_RATE_PER_SECOND = env_float("LIVE_SUBSCRIBE_RATE_PER_SECOND", 5.0, minimum=0.001)
LIVE_SUBSCRIBE_BURST = env_int("LIVE_SUBSCRIBE_BURST", 20, minimum=1)  # subscribe/unsubscribe frames
LIVE_RULES_CACHE_SECONDS = env_float("LIVE_RULES_CACHE_SECONDS", 2.0, minimum=0.0)
LIVE_REDIS_CONNECTIONS = env_int("LIVE_REDIS_CONNECTIONS", 32, minimum=1)  # per worker

# --- Internationalisation, static files -----------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve static files straight from the app and project folders, without
# `collectstatic` (the default in debug; the browser tests turn it on too).
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", DEBUG)

# --- Logging: one line per event, never a secret (see realtime.operations.logs) -----------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
# "plain" (key=value lines for people) or "json" (one object per line for a
# log pipeline); both carry the same fields.
LOG_FORMAT = env_str("LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json")
LOGGING = logging_config(level=LOG_LEVEL, formatter=LOG_FORMAT)

# --- Metrics (realtime/operations/metrics.py) ----------------------------------------------------
# Set: GET /metrics needs `Authorization: Bearer <METRICS_TOKEN>` (what Prometheus
# sends with `authorization: {credentials: ...}`). Unset: loopback only, and a
# request carrying a forwarded-address header never counts as loopback.
METRICS_TOKEN = env_str("METRICS_TOKEN")

# --- Graceful drain on SIGTERM (realtime/serve.py) ----------------------------------
# Sockets stay open this long after SIGTERM (in-flight work finishes, the proxy
# notices the closed port), then get 1012 and reconnect to another worker.
DRAIN_GRACE_SECONDS = env_float("DRAIN_GRACE_SECONDS", 2.0)
# How long to wait for the clients to answer the close before exiting anyway.
DRAIN_CLOSE_TIMEOUT_SECONDS = env_float("DRAIN_CLOSE_TIMEOUT_SECONDS", 5.0, minimum=0.1)
CSRF_FAILURE_VIEW = "realtime.http.csrf_failure"
