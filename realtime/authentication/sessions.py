"""Who a handshake's session cookie belongs to, read for many handshakes at once.

`session_users(keys)` answers what Django's `auth.get_user` answers for each
session key (the backend, an active user, the session hash against the
password, secret-key fallbacks), with one query for all the sessions and one
per authentication backend for all their users, instead of two per socket.
`session_user(key)` is Django's own path for one key; the tests hold the two
to the same answers. A handshake only reads the session (`HandshakeSession`).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable
from importlib import import_module
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.contrib import auth
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.db import connections, router
from django.utils import timezone
from django.utils.crypto import constant_time_compare

User = AbstractBaseUser | AnonymousUser


class HandshakeSession(dict):
    """A session's data as `auth.get_user` reads it during a socket handshake: nothing is written.

    `get_user` changes the session in two cases. A session whose password
    hash verifies only under a key of SECRET_KEY_FALLBACKS (the secret key
    was rotated) gets a new session key (`cycle_key`), and one that no longer
    verifies is flushed. Over HTTP, Django's SessionMiddleware then sends the
    new cookie. A handshake cannot: daphne sends no headers with the 101, and
    a socket is no place to log anyone in or out. Rotating the key here
    deleted the session the browser still held, logging the user out on
    every tab. So the handshake only reads; the next page load rotates the
    key and sets the new cookie, as Django does on any request.
    """

    def cycle_key(self) -> None:
        pass

    def flush(self) -> None:
        self.clear()


def _store_class() -> type:
    return import_module(settings.SESSION_ENGINE).SessionStore


def session_user(session_key: str) -> User:
    """The user whose session `session_key` is, or AnonymousUser: Django's `auth.get_user`, one key."""
    store = _store_class()(session_key)
    return auth.get_user(SimpleNamespace(session=HandshakeSession(store.items())))


def session_users(session_keys: list[str]) -> list[User | Exception]:
    """`session_user` of each key, in order, read together (what a backend raised for a key, in its place)."""
    sessions = _session_data(session_keys)
    users = _users(sessions.values())
    answers: list[User | Exception] = []
    given: set[int] = set()
    for key in session_keys:
        user = _verified(sessions.get(key, {}), users)
        # Each socket gets a user object of its own, as it did when each read its own.
        answers.append(copy.copy(user) if id(user) in given else user)
        given.add(id(user))
    return answers


def _session_data(session_keys: list[str]) -> dict[str, dict[str, Any]]:
    """Each live session's decoded data by key; a key without a live session is left out."""
    store_class = _store_class()
    if store_class is not DatabaseSessionStore:
        # Other engines (cache, cached_db, files, signed cookies): each key as the engine reads it.
        return {key: data for key in set(session_keys) if (data := dict(store_class(key).items()))}
    store = store_class()
    wanted = sorted(set(session_keys))
    # Hand-written: the queryset's IN lookup cost more CPU to build than the query to run.
    db = connections[router.db_for_read(store.model)]
    now = db.ops.adapt_datetimefield_value(timezone.now())
    with db.cursor() as cursor:
        cursor.execute(_sessions_sql(db, store.model, len(wanted)), [*wanted, now])
        rows = cursor.fetchall()
    return {key: store.decode(data) for key, data in rows}


def _sessions_sql(db, model, count: int) -> str:
    """Live sessions among `count` keys (Django's own `_get_session_from_db` condition)."""
    table = db.ops.quote_name(model._meta.db_table)
    keys = ", ".join(["%s"] * count)
    # The table name comes from the model, never from input; values are parameters.
    return f"SELECT session_key, session_data FROM {table} WHERE session_key IN ({keys}) AND expire_date > %s"  # noqa: S608


def _user_key(session: dict[str, Any]) -> tuple[str, Any] | None:
    """(backend path, user id) as `auth.get_user` reads them, or None when it would find no user."""
    try:
        user_id = auth.get_user_model()._meta.pk.to_python(session[auth.SESSION_KEY])
        backend_path = session[auth.BACKEND_SESSION_KEY]
    except KeyError:
        return None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    return backend_path, user_id


def _users(sessions: Iterable[dict[str, Any]]) -> dict[tuple[str, Any], Any]:
    """Each (backend path, user id) the sessions name, mapped to what the backend's `get_user` returns."""
    wanted: dict[str, set[Any]] = defaultdict(set)
    for session in sessions:
        if (found := _user_key(session)) is not None:
            wanted[found[0]].add(found[1])
    users: dict[tuple[str, Any], Any] = {}
    for path, ids in wanted.items():
        backend = auth.load_backend(path)
        if type(backend).get_user is ModelBackend.get_user:
            # ModelBackend.get_user for many ids at once: the same manager, the same check.
            model = auth.get_user_model()
            found = model._default_manager.in_bulk(ids)
            for user_id in ids:
                user = found.get(user_id)
                allowed = user is not None and backend.user_can_authenticate(user)
                users[path, user_id] = user if allowed else None
        else:
            for user_id in ids:
                try:
                    users[path, user_id] = backend.get_user(user_id)
                except Exception as exc:
                    # That session's handshake fails, as with Django's get_user; not its whole batch.
                    users[path, user_id] = exc
    return users


def _verified(session: dict[str, Any], users: dict[tuple[str, Any], Any]) -> User | Exception:
    """The session's user if its hash verifies (as `auth.get_user` checks it), else AnonymousUser."""
    found = _user_key(session)
    user = users.get(found) if found is not None else None
    if isinstance(user, Exception):
        return user  # raised to this session's handshake alone (realtime.batching)
    if user is None or not hasattr(user, "get_session_auth_hash"):
        return user or AnonymousUser()
    session_hash = session.get(auth.HASH_SESSION_KEY)
    if not session_hash:
        return AnonymousUser()
    if constant_time_compare(session_hash, user.get_session_auth_hash()):
        return user
    # A hash made under a secret key that has since been rotated: still valid (see HandshakeSession).
    if any(constant_time_compare(session_hash, old) for old in user.get_session_auth_fallback_hash()):
        return user
    return AnonymousUser()
