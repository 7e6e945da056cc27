"""Who may hold a socket or call the API: an app that owns API keys.

Access tokens (`tokens`), API keys (`apikeys`, the `ApiKey` model), the
handshake checks (`middleware`), the token endpoint (`api`), the login
throttle, the per-user socket cap, and closing a user's sockets on logout or
deactivation (`receivers`, `services`).
"""
