"""The real-time runtime shared by the notifications and chat apps.

Here: the wire protocol (`protocol`), the base consumer every socket endpoint
derives from (`consumers`), the socket handlers' database lanes (`db`), Redis
connections (`redis_client`), JSON API helpers (`http`) and the `serve`
launcher. Each other concern has a package of its own: `fanout` (events to
sockets), `adapter` (server internals), `authentication` (an app: tokens, API
keys, handshake checks) and `operations` (health, metrics, logs). See
docs/architecture.md, "Where things live".
"""
