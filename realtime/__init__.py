"""The real-time runtime shared by the notifications, chat and live apps.

Here: the wire protocol (`protocol`), the base consumer every socket endpoint
derives from (`consumers`), how group events reach it (`delivery`), ordered
streams with resume and gap fill (`streams`, `replay`), the socket handlers'
database lanes (`db`), Redis connections (`redis_client`), JSON API helpers
(`http`, `admin_filters`), worker processes (`launcher`) and the `serve`
entry point. Each other concern has a package of its own: `fanout` (events to
sockets), `adapter` (server internals), `authentication` (an app: tokens, API
keys, handshake checks) and `operations` (health, metrics, logs). See
docs/architecture.md, "Where things live".
"""
