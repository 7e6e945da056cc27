"""The Django side of the suite, run as `python -m bench.django_side CMD ...` in its own process.

prepare N          create the database if needed, migrate, make bench users
                   bench-00000..N-1 active (every other user inactive), give each a
                   fresh session, make sure the chat room `lobby` exists when the
                   chat app is there; print JSON {cookies, chat, ...}
push RUN RATE SECS USERS [GROUP_EVERY GROUP_SIZE]
                   notify() one random bench user at a time at RATE per second; with
                   GROUP_EVERY > 0, also one notify() to GROUP_SIZE random bench users
                   every GROUP_EVERY seconds (a group announcement)
broadcast RUN      one notify(everyone=True), timing call, commit and return
rooms K [PREFIX]   make the public chat rooms PREFIX-00..K-1 (soak-00..) exist; print their
                   slugs and the highest message and notification ids so far (the floor)
tokens N           an access token (JWT, as POST /api/token/ gives) for each of bench-00000..N-1
publish JSON       print "ready", then until SIGTERM (or JSON's `seconds`): notify() one of
                   JSON's `users` (pks) at `note_rate` per second and post_message() a system
                   message to one of its `rooms` at `chat_rate` per second (the reconnect
                   workload's storms)
room SLUG...       make these public chat rooms exist (the joins workload: one per storm)
ids JSON           the message ids per room and notification ids per recipient above
                   the floor given in JSON {rooms, users, floor_message,
                   floor_notification, client_id_prefix}, and the posts stored under
                   client_id_prefix: what the soak's clients must have received

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
    from django.contrib.auth import get_user_model, load_backend
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
    # The backend a login stores: the first that can load a user, as Django's
    # test client picks it (the login throttle, first, cannot).
    backend = next(
        path for path in settings.AUTHENTICATION_BACKENDS if hasattr(load_backend(path), "get_user")
    )
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


def push(
    run: str, rate: float, seconds: float, n_users: int, group_every: float = 0, group_size: int = 0
) -> dict:
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
    # Every `group_ticks`-th send is followed by one to a random group of users.
    group_ticks = max(1, round(group_every * rate)) if group_every > 0 and group_size > 0 else 0
    group_sends = 0
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
        if group_ticks and i % group_ticks == group_ticks - 1:
            picked = rng.sample(range(len(users)), min(group_size, len(users)))
            t = time.monotonic_ns()
            notify(users=[users[j] for j in picked], title="bench group", data={"run": run, "t": t})
            group_sends += 1
            for j in picked:
                counts[j] += 1
    elapsed = (time.monotonic_ns() - start) / 1e9
    lags.sort()
    call_ns.sort()
    return {
        "sent": total,
        "group_sends": group_sends,
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


def rooms(k: int, prefix: str = "soak") -> dict:
    setup_django()
    from chat.models import Message, Room
    from chat.services import create_room
    from notifications.models import Notification

    slugs = [f"{prefix}-{i:02d}" for i in range(k)]
    existing = set(Room.objects.filter(slug__in=slugs).values_list("slug", flat=True))
    for slug in slugs:
        if slug not in existing:
            create_room(slug=slug, title=f"{prefix.title()} {slug[len(prefix) + 1 :]}")
    last_message = Message.objects.order_by("-id").values_list("id", flat=True).first()
    last_notification = Notification.objects.order_by("-id").values_list("id", flat=True).first()
    return {"rooms": slugs, "floor_message": last_message or 0, "floor_notification": last_notification or 0}


def room(slugs: list[str]) -> dict:
    setup_django()
    from chat.models import Room
    from chat.services import create_room

    existing = set(Room.objects.filter(slug__in=slugs).values_list("slug", flat=True))
    for slug in slugs:
        if slug not in existing:
            create_room(slug=slug, title=slug)
    return {"rooms": slugs}


def tokens(n: int) -> dict:
    setup_django()
    from django.contrib.auth import get_user_model

    from realtime.authentication.tokens import issue_token

    names = [f"{BENCH_PREFIX}{i:05d}" for i in range(n)]
    users = {u.username: u for u in get_user_model().objects.filter(username__in=names)}
    return {"tokens": [issue_token(user=users[name]).access for name in names]}


def publish(spec: dict) -> dict:
    """Notifications and chat posts at steady rates until SIGTERM; what failed is counted, not fatal
    (Redis is down for part of a storm: a row is stored even when its push is not)."""
    import signal

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    setup_django()
    from django.contrib.auth import get_user_model

    from chat.models import Room
    from chat.services import post_message
    from notifications.services import notify

    users = list(get_user_model().objects.filter(pk__in=spec["users"]))
    rooms = list(Room.objects.filter(slug__in=spec["rooms"]))
    print("ready", flush=True)  # the parent starts its clock now
    rng = random.Random(16)
    rates = [(r, kind) for r, kind in ((spec["note_rate"], "note"), (spec["chat_rate"], "chat")) if r > 0]
    due = {kind: 0 for _, kind in rates}
    sent = {"note": 0, "chat": 0}
    failed: dict[str, int] = {}
    start = time.monotonic()
    while not stop and time.monotonic() - start < spec["seconds"]:
        now = time.monotonic() - start
        for rate, kind in rates:
            if due[kind] / rate > now:
                continue
            due[kind] += 1
            try:
                if kind == "note" and users:
                    notify(users=rng.choice(users), title="reconnect", data={"run": spec["run"]})
                elif kind == "chat" and rooms:
                    post_message(room=rng.choice(rooms), author=None, body=f"reconnect:{spec['run']}")
                sent[kind] += 1
            except Exception as exc:  # counted: the database decides what clients must have
                key = f"{kind}: {type(exc).__name__}"
                failed[key] = failed.get(key, 0) + 1
        next_due = min(due[kind] / rate for rate, kind in rates) if rates else now + 0.1
        time.sleep(max(0.0, min(0.1, next_due - (time.monotonic() - start))))
    elapsed = time.monotonic() - start
    return {"notifications": sent["note"], "chat_posts": sent["chat"], "failed": failed, "seconds": elapsed}


def ids(spec: dict) -> dict:
    setup_django()
    from chat.models import Message
    from notifications.models import Notification

    messages: dict[str, list[int]] = {slug: [] for slug in spec["rooms"]}
    rows = Message.objects.filter(room__slug__in=spec["rooms"], id__gt=spec["floor_message"])
    for slug, pk in rows.filter(deleted_at__isnull=True).values_list("room__slug", "id").order_by("id"):
        messages[slug].append(pk)
    notes: dict[str, list[int]] = {str(pk): [] for pk in spec["users"]}
    rows = Notification.objects.filter(recipient_id__in=spec["users"], id__gt=spec["floor_notification"])
    for recipient, pk in rows.values_list("recipient_id", "id").order_by("id"):
        notes[str(recipient)].append(pk)
    posts = Message.objects.filter(
        room__slug__in=spec["rooms"], client_id__startswith=spec["client_id_prefix"]
    ).count()
    return {"messages": messages, "notifications": notes, "posts_stored": posts}


def main(argv: list[str]) -> int:
    cmd, *args = argv
    if cmd == "prepare":
        out = prepare(int(args[0]))
    elif cmd == "push":
        group = (float(args[4]), int(args[5])) if len(args) > 4 else (0, 0)
        out = push(args[0], float(args[1]), float(args[2]), int(args[3]), *group)
    elif cmd == "broadcast":
        out = broadcast(args[0])
    elif cmd == "rooms":
        out = rooms(int(args[0]), *args[1:])
    elif cmd == "tokens":
        out = tokens(int(args[0]))
    elif cmd == "publish":
        out = publish(json.loads(args[0]))
    elif cmd == "room":
        out = room(args)
    elif cmd == "ids":
        out = ids(json.loads(args[0]))
    elif cmd == "chat":
        setup_django()
        out = {"chat": chat_route_present()}
    else:
        raise SystemExit(f"unknown command {cmd}")
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
