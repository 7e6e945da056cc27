"""The Django side of the suite, run as `python -m bench.django_side CMD ...` in its own process.

prepare N          create the database if needed, migrate, make bench users
                   bench-00000..N-1 active (every other user inactive), give each a
                   fresh session, make sure the chat room `lobby` exists when the
                   chat app is there; print JSON {cookies, chat, ...}
push RUN RATE SECS USERS   notify() one random bench user at a time at RATE per second
broadcast RUN      one notify(everyone=True), timing call, commit and return

Each prints one JSON object on its last line. Times are time.monotonic_ns(),
which is CLOCK_MONOTONIC: the same clock in every process on the machine.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

BENCH_PREFIX = "bench-"


def ensure_database() -> None:
    import dj_database_url
    import psycopg

    url = os.environ["DATABASE_URL"]
    cfg = dj_database_url.parse(url)
    if not cfg["ENGINE"].endswith("postgresql"):
        return
    conn = psycopg.connect(
        host=cfg["HOST"] or "127.0.0.1",
        port=cfg["PORT"] or 5432,
        user=cfg["USER"] or "postgres",
        password=cfg["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    with conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [cfg["NAME"]]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{cfg["NAME"]}"')


def setup_django() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()


def chat_route_present() -> bool:
    from config.routing import websocket_urlpatterns

    return any("chat" in str(p.pattern) for p in websocket_urlpatterns)


def ensure_lobby() -> str:
    """Make the public room `lobby` exist; returns how."""
    try:
        from chat.models import Room  # the chat app is merged later

        Room.objects.get_or_create(slug="lobby", defaults={"title": "Lobby"})
        return "chat.models.Room"
    except Exception:
        from django.core.management import call_command

        call_command("seed_demo", verbosity=0)
        return "seed_demo"


def prepare(n: int) -> dict:
    ensure_database()
    setup_django()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.core.management import call_command
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    call_command("migrate", "--noinput", verbosity=0)
    User = get_user_model()
    names = [f"{BENCH_PREFIX}{i:05d}" for i in range(n)]
    existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    password = make_password("bench-password-not-secret")
    User.objects.bulk_create(
        [User(username=name, password=password) for name in names if name not in existing],
        batch_size=2000,
    )
    # Exactly the N bench users are active: notify(everyone=True) reaches them and nobody else.
    User.objects.exclude(username__in=names).filter(is_active=True).update(is_active=False)
    User.objects.filter(username__in=names, is_active=False).update(is_active=True)
    users = {u.username: u for u in User.objects.filter(username__in=names)}

    Session.objects.all().delete()
    expire = timezone.now() + timezone.timedelta(days=1)
    store = SessionStore()
    backend = settings.AUTHENTICATION_BACKENDS[0]
    sessions, cookies = [], []
    for name in names:
        user = users[name]
        key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
        data = {
            "_auth_user_id": str(user.pk),
            "_auth_user_backend": backend,
            "_auth_user_hash": user.get_session_auth_hash(),
        }
        sessions.append(Session(session_key=key, session_data=store.encode(data), expire_date=expire))
        cookies.append(key)
    Session.objects.bulk_create(sessions, batch_size=2000)
    chat = chat_route_present()
    lobby = ensure_lobby() if chat else None
    return {
        "cookies": cookies,
        "user_ids": [users[name].pk for name in names],
        "cookie_name": settings.SESSION_COOKIE_NAME,
        "chat": chat,
        "lobby": lobby,
    }


def push(run: str, rate: float, seconds: float, n_users: int) -> dict:
    setup_django()
    from django.contrib.auth import get_user_model

    from notifications.services import notify

    users = list(get_user_model().objects.filter(username__startswith=BENCH_PREFIX, is_active=True))
    users.sort(key=lambda u: u.username)
    users = users[:n_users]
    rng = random.Random(6)
    total = int(rate * seconds)
    counts = [0] * len(users)
    lags, call_ns = [], []
    notify(users=users[0], title="warm-up", data={"run": "warmup"})  # connections, imports
    start = time.monotonic_ns()
    for i in range(total):
        due = start + int(i * 1e9 / rate)
        now = time.monotonic_ns()
        if now < due:
            time.sleep((due - now) / 1e9)
        index = rng.randrange(len(users))
        t = time.monotonic_ns()
        lags.append(max(0, t - due))
        notify(users=users[index], title="bench", body="", data={"run": run, "t": t})
        call_ns.append(time.monotonic_ns() - t)
        counts[index] += 1
    elapsed = (time.monotonic_ns() - start) / 1e9
    lags.sort()
    call_ns.sort()
    return {
        "sent": total,
        "counts": counts,
        "elapsed_s": elapsed,
        "achieved_rate": total / elapsed if elapsed else 0.0,
        "schedule_lag_p99_ms": lags[int(0.99 * (len(lags) - 1))] / 1e6 if lags else 0.0,
        "notify_call_p50_ms": call_ns[len(call_ns) // 2] / 1e6 if call_ns else 0.0,
        "notify_call_p99_ms": call_ns[int(0.99 * (len(call_ns) - 1))] / 1e6 if call_ns else 0.0,
    }


def broadcast(run: str) -> dict:
    setup_django()
    from django.db import transaction

    from notifications.services import notify

    marks: dict[str, int] = {}
    t_call = time.monotonic_ns()
    with transaction.atomic():
        # Registered before notify's own push, so it runs first, right after COMMIT.
        transaction.on_commit(lambda: marks.setdefault("commit", time.monotonic_ns()))
        created = notify(everyone=True, title="broadcast", data={"run": run, "t": t_call})
    t_return = time.monotonic_ns()
    return {"recipients": len(created), "t_call": t_call, "t_commit": marks["commit"], "t_return": t_return}


def main(argv: list[str]) -> int:
    cmd, *args = argv
    if cmd == "prepare":
        out = prepare(int(args[0]))
    elif cmd == "push":
        out = push(args[0], float(args[1]), float(args[2]), int(args[3]))
    elif cmd == "broadcast":
        out = broadcast(args[0])
    elif cmd == "chat":
        setup_django()
        out = {"chat": chat_route_present()}
    else:
        raise SystemExit(f"unknown command {cmd}")
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
