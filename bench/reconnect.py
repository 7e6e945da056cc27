"""The reconnect workload: every socket drops at once, and how fast (and how completely) clients come back.

Per target and storm, two daphne workers on a private redis-server of their own (never the shared
one), and N sockets of N distinct users, half on each worker: half of them on `/ws/notifications/` and
half in chat rooms, half authenticated by session cookie (with an allowed `Origin`) and half by a
bearer token (plain Channels has no tokens: all cookies there). The load generators
(bench/reconnect_client.py) reconnect as static/js/realtime.js does and resume. Two storms, each
on a stack and sockets of its own (one that has not settled by its deadline leaves nothing behind
for the other), each bounded by a deadline:

1. **Redis restart**: the private Redis is stopped (the fault), kept down until every socket has
   dropped (the hub's heartbeat closes them 1011) or for the heartbeat interval plus 1 s, then
   started again. The storm is over once every client is back and nothing has changed for the
   heartbeat interval plus its timeout: a worker whose live feed is still broken has closed its
   sockets again by then.
2. **Drain**: the first worker gets SIGTERM; its sockets get 1012 after `DRAIN_GRACE_SECONDS`, and
   their clients land on the second worker (the next URL of their list, as behind a load balancer).

While each storm lasts (from a second before its fault), a publisher (`bench.django_side publish`)
sends notifications to the inbox users and system messages to the rooms at steady rates; after it
stops, every client's ids are compared with the database (lost, duplicated within a connection,
delivered late through `resume`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import select
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.client import now_ns
from bench.client_procs import Clients
from bench.common import Stack, bench_env, finish_django, proc_cpu_seconds, run_django, start_django
from bench.reconnect_report import summarize
from bench.soak_steps import merge_check
from bench.targets import CHANNELS_APP, SERVICE_APP, chunks, headers_for
from bench.workloads import each_target, size
from realtime.launcher import Worker

TARGETS = {
    # name: (app, plain Channels)
    "service-daphne": (SERVICE_APP, False),
    "channels-daphne": (CHANNELS_APP, True),
}
PUBLISH_LEAD_S = 1.0  # the publisher runs this long before the fault too
POLL_S = 0.1  # how often the parent asks the load generators how far they are


@dataclasses.dataclass
class Run:
    """What the steps of one target share."""

    name: str
    baseline: bool
    env: dict[str, str]
    stack: Stack
    redis: Worker
    workers: list[Worker]
    clients: Clients
    parts: list[list[dict[str, Any]]]
    publish: dict[str, Any]  # the publisher's spec, without its deadline
    deadline_s: float
    heartbeat_s: float
    heartbeat_timeout_s: float


def plan(prep: dict, tokens: list[str], rooms: list[str], ports: list[int], baseline: bool) -> list[dict]:
    """One agent per user: worker i mod 2, inbox or room by i div 2, cookie or token by i div 4."""
    agents = []
    for i, token in enumerate(tokens):
        worker, chat, by_token = i % 2, (i // 2) % 2 == 1, (i // 4) % 2 == 1 and not baseline
        room = rooms[(i // 4) % len(rooms)]
        if baseline:
            path = f"/ws/baseline-auth/{room}/" if chat else "/ws/baseline-inbox/"
        else:
            path = f"/ws/chat/{room}/" if chat else "/ws/notifications/"
        headers = (
            [("Authorization", f"Bearer {token}")] if by_token else headers_for(prep, ports[worker], [i])[0]
        )
        agents.append(
            {
                "key": f"{'chat' if chat else 'inbox'}:{i}",
                "kind": "tutorial" if baseline else ("chat" if chat else "notif"),
                "scope": room if chat else prep["user_ids"][i],
                "urls": [f"ws://127.0.0.1:{port}{path}" for port in ports],
                "worker": worker,
                "headers": headers,
            }
        )
    return agents


def _connect(run: Run, tag: str) -> dict[str, Any]:
    """Every agent's first socket, at most 25 handshakes in flight per process; all must connect."""
    starts = run.clients.all(
        "start",
        [
            {
                "run": tag,
                "agents": part,
                "index_base": sum(len(p) for p in run.parts[:k]),
                "concurrency": 25,
                "timeout": 30.0,
                "connect_limit": 600.0,
                "seed": k,
            }
            for k, part in enumerate(run.parts)
        ],
        timeout=700,
    )
    connected = sum(s["connected"] for s in starts)
    agents = sum(s["agents"] for s in starts)
    errors = {k: v for s in starts for k, v in s["errors"].items()}
    if connected < agents:
        raise RuntimeError(f"only {connected}/{agents} sockets connected: {errors}")
    return {"sockets": agents, "seconds": round(max(s["seconds"] for s in starts), 2), "errors": errors}


def _progress(run: Run) -> dict[str, int]:
    answers = run.clients.all("progress", [None] * len(run.parts))
    return {k: sum(a[k] for a in answers) for k in answers[0]}


def _all_back(p: dict[str, int]) -> bool:
    """Everyone live and every agent that lost its socket back."""
    return p["live"] == p["agents"] and p["back"] == p["dropped"]


@dataclasses.dataclass
class Watch:
    """What the parent saw of a storm: the load generators' progress and the workers' CPU seconds since
    the mark, as of the last change of progress (when the storm's last client came back)."""

    progress: dict[str, int]
    changed_ns: int
    cpu: list[float]


def _watch(run: Run, until, deadline_ns: int, since_ns: int) -> Watch:
    """Poll the load generators until `until(watch)` or the deadline (a drained worker's CPU: its last
    reading before it exited)."""
    cpu0 = [proc_cpu_seconds(s.pid) for s in run.workers]
    cpu = [0.0] * len(run.workers)
    watch = Watch({}, since_ns, list(cpu))
    while True:
        p = _progress(run)
        for k, server in enumerate(run.workers):
            with contextlib.suppress(OSError, AssertionError):
                cpu[k] = proc_cpu_seconds(server.pid) - cpu0[k]
        if p != watch.progress:
            watch = Watch(p, now_ns(), list(cpu))
        if until(watch) or now_ns() > deadline_ns:
            return watch
        time.sleep(POLL_S)  # polling other processes' state, bounded by the deadline


def _until_ready(proc, seconds: float) -> None:
    """Wait (bounded) for the `ready` line of a publisher: it is publishing from then on."""
    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    line = proc.stdout.readline() if ready else ""
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"the publisher did not start: {line!r} (exit status {proc.poll()})")


@contextlib.contextmanager
def publishing(run: Run, into: dict[str, Any]) -> Iterator[None]:
    """The publisher, from before a fault until the storm is over (the service only), stopped before
    the database is read; its figures are put in `into` at the end."""
    if run.baseline:
        yield
        return
    spec = {**run.publish, "seconds": run.deadline_s + 60}  # SIGTERM ends it before
    log = (run.stack.logdir / "publisher.log").open("a")
    publisher = start_django(["publish", json.dumps(spec)], env=run.env, stderr=log)
    log.close()  # the child has its own copy
    try:
        _until_ready(publisher, 60)
        time.sleep(PUBLISH_LEAD_S)  # notifications before the fault too
        yield
    finally:
        publisher.send_signal(signal.SIGTERM)
    into["publisher"] = finish_django(publisher, ["publish"], timeout=60)


def _storm(run: Run, fault, drop_workers: list[int]) -> dict[str, Any]:
    """Mark, `fault()` (it returns its own figures and how to tell the storm is over), watch, report."""
    published: dict[str, Any] = {}
    with publishing(run, published):
        mark = now_ns()
        spec = {"mark_ns": mark, "workers": len(run.workers), "drop_workers": drop_workers}
        run.clients.all("storm", [spec] * len(run.parts))
        deadline = mark + int(run.deadline_s * 1e9)
        figures, until = fault(mark, deadline)
        watch = _watch(run, until, deadline, mark)
    window = (watch.changed_ns - mark) / 1e9
    reports = run.clients.all("report", [None] * len(run.parts))
    out = {**figures, **summarize(reports, figures.get("restarted_s"))}
    out["deadline_hit"] = not until(watch)
    out["worker_cpu_s"] = [round(c, 2) for c in watch.cpu]
    out["worker_cpu_share"] = [round(c / window, 3) if window > 0 else None for c in watch.cpu]
    out["window_s"] = round(window, 2)
    return out | published


def redis_storm(run: Run) -> dict[str, Any]:
    """Stop the private Redis until every socket dropped (bounded), start it; over once every client
    is back and nothing has changed for a heartbeat interval and its timeout (a hub whose feed is
    still broken would close its sockets again by then)."""

    def fault(mark: int, deadline: int):
        run.redis.stop()
        down_until = now_ns() + int((run.heartbeat_s + 1.0) * 1e9)
        _watch(
            run,
            lambda x: x.progress["must_drop_dropped"] == x.progress["must_drop"],
            min(down_until, deadline),
            mark,
        )
        run.redis.start(30)
        up = now_ns()
        stable = int((run.heartbeat_s + run.heartbeat_timeout_s) * 1e9)

        def until(watch: Watch) -> bool:
            return _all_back(watch.progress) and now_ns() - max(watch.changed_ns, up) >= stable

        return {
            "fault": "redis restart",
            "redis_down_s": round((up - mark) / 1e9, 2),
            "restarted_s": (up - mark) / 1e9,
        }, until

    return _storm(run, fault, [0, 1])


def drain_storm(run: Run) -> dict[str, Any]:
    """SIGTERM to the first worker; over once its clients are all back (on the other)."""

    def fault(mark: int, deadline: int):
        run.workers[0].signal(signal.SIGTERM)

        def until(watch: Watch) -> bool:
            p = watch.progress
            return _all_back(p) and p["must_drop_dropped"] == p["must_drop"]

        return {"fault": "drain (SIGTERM) of worker 1"}, until

    return _storm(run, fault, [0])


def _check(run: Run, prep: dict[str, Any], floor: dict[str, Any], users: int) -> dict[str, Any]:
    """Every client's ids against the database (as the soak does): nothing lost, nothing twice."""
    spec = {
        "rooms": run.publish["rooms"],
        "users": prep["user_ids"][:users],
        "floor_message": floor["floor_message"],
        "floor_notification": floor["floor_notification"],
        "client_id_prefix": "-",  # the agents post nothing
    }
    db = run_django(["ids", json.dumps(spec)], env=run.env)
    expect = {"messages": db["messages"], "notifications": db["notifications"], "limit": 30.0}
    check = merge_check(run.clients.all("converge", [expect] * len(run.parts), timeout=120))
    keep = ("expected", "received", "duplicates", "redelivered", "phantoms", "not_live_at_end", "converge_s")
    # Lost: missing from a client that is back (it resumed); a client not back yet has not asked.
    out = {k: check[k] for k in keep} | {"lost": check["gaps_of_live"]}
    return out | {"missing_not_back": check["gaps"] - check["gaps_of_live"]}


def target_env(redis: Worker, quick: bool) -> dict[str, str]:
    return bench_env(
        REDIS_URL=f"redis://127.0.0.1:{redis.port}/0",
        CHANNEL_LAYER_PREFIX=f"bench-{uuid.uuid4().hex[:8]}",
        HUB_HEARTBEAT_SECONDS=str(size("reconnect_heartbeat_ms", quick) / 1000),
        HUB_HEARTBEAT_TIMEOUT_SECONDS=str(size("reconnect_heartbeat_timeout_ms", quick) / 1000),
        DRAIN_GRACE_SECONDS=str(size("reconnect_drain_grace_ms", quick) / 1000),
        JWT_LIFETIME_SECONDS="3600",
    )


@contextlib.contextmanager
def fresh_run(name: str, setup: dict[str, Any], quick: bool) -> Iterator[Run]:
    """What a storm starts from: a private Redis, two workers on it, every agent's socket open."""
    app, baseline = TARGETS[name]
    with contextlib.ExitStack() as cleanup:
        stack = cleanup.enter_context(Stack())
        redis = stack.redis()
        env = target_env(redis, quick)
        with ThreadPoolExecutor(2) as pool:  # started together: each takes seconds to import Django
            workers = list(pool.map(lambda _: stack.daphne(app, env), range(2)))
        agents = plan(
            setup["prep"], setup["tokens"], setup["floor"]["rooms"], [s.port for s in workers], baseline
        )
        n_procs = max(1, min(size("reconnect_clients", quick), len(agents)))
        clients = cleanup.enter_context(Clients(n_procs, factory="bench.reconnect_client:ReconnectClient"))
        publish = {
            "run": name,
            "users": [a["scope"] for a in agents if a["kind"] == "notif"],
            "rooms": setup["floor"]["rooms"],
            "note_rate": size("reconnect_note_rate", quick),
            "chat_rate": size("reconnect_chat_rate", quick),
        }
        yield Run(
            name,
            baseline,
            env,
            stack,
            redis,
            workers,
            clients,
            chunks(agents, n_procs),
            publish,
            size("reconnect_deadline_s", quick),
            size("reconnect_heartbeat_ms", quick) / 1000,
            size("reconnect_heartbeat_timeout_ms", quick) / 1000,
        )


def reconnect_target(name: str, setup: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Each storm on a stack of its own: one that has not settled by its deadline leaves nothing behind."""
    out: dict[str, Any] = {}
    for key, storm in (("redis", redis_storm), ("drain", drain_storm)):
        with fresh_run(name, setup, quick) as run:
            connect = _connect(run, uuid.uuid4().hex[:8])
            out[key] = {"connect": connect, **storm(run)}
            if not run.baseline:
                out[key]["check"] = _check(run, setup["prep"], setup["floor"], len(setup["tokens"]))
            out["command"] = " + ".join(s.command() for s in run.workers)
            keys = ("HUB_HEARTBEAT_SECONDS", "HUB_HEARTBEAT_TIMEOUT_SECONDS", "DRAIN_GRACE_SECONDS")
            out["settings"] = {k: run.env[k] for k in keys}
    return out


def reconnect(prep: dict, quick: bool) -> dict[str, Any]:
    users = size("reconnect_users", quick)
    env = bench_env(JWT_LIFETIME_SECONDS="3600")
    setup = {
        "prep": prep,
        "tokens": run_django(["tokens", str(users)], env=env)["tokens"],
        "floor": run_django(["rooms", str(size("reconnect_rooms", quick)), "reconnect"], env=env),
    }
    targets = each_target(
        list(TARGETS), "BENCH_RECONNECT_TARGETS", lambda n: reconnect_target(n, setup, quick)
    )
    return {"targets": targets, "sockets": users}
