"""`python -m bench.soak --sockets N --minutes M`: the soak of issue 7 (`make soak SOAK_ARGS=...`).

Not part of CI. It starts two workers with the production launcher
(`python -m realtime.serve`, as docker-compose runs them) on free loopback
ports, sharing the Redis of REDIS_URL (a random CHANNEL_LAYER_PREFIX, and
presence and rate-limit key prefixes under it) and the PostgreSQL database of
DATABASE_URL (defaults as for `make bench`: database `bench`, created when
missing, and Redis db 5). Then:

- N/2 bench users, each with two sockets, as a browser on a room page has:
  one in a chat room (`soak-00`.. `--rooms`, members spread evenly over the
  rooms) and one on its inbox. A user's chat socket is on worker (i mod 2),
  its inbox socket on worker (i div 2 mod 2): every room has members on both
  workers, and half of the users have their two sockets on different workers.
  The load-generator processes (`bench/soak_client.py`) behave like the
  browser client (resume, ping, backoff, outbox).
- For M minutes: members post in their rooms (`--chat-rate` per room per
  second, each post preceded by `typing`), the `notify()` driver sends to one
  random user at `--notify-rate` per second and to `--group-size` users every
  `--group-every` seconds, and `--churn` % of the sockets per minute drop
  (half with a close frame, half without: a closed tab, a lost network) and
  come back 0.2-3 s later, on either worker, with `resume`.
- Every `--sample-every` seconds: each worker's RSS, open file descriptors,
  threads, CPU and open sockets (its /metrics), the Redis keys under the run's
  prefixes and the pub/sub channels, Redis used_memory (server-wide), the
  database's connections, the clients' state and the delivery latency.
- At the end the load stops, every client comes back and empties its outbox,
  and every client's ids (all its connections) are compared with the
  database: gaps, duplicates within a connection, ids that are not in the
  database, and posts stored against posts acknowledged. Then the sockets
  close and one more sample shows what the workers keep afterwards.

It prints a table, saves bench/results/soak.json and rewrites the generated
part of docs/reliability.md ("Soak"), unless --no-save. `--docs` only
rewrites the docs from the saved json. Exit status 1 when the check fails.
The run's steps are bench/soak_steps.py, its sampling bench/soak_sampler.py and its
output bench/soak_report.py.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import sys
import time
import traceback
import uuid
from typing import Any

from bench.client_procs import Clients
from bench.common import (
    RECORDED_ENV,
    RESULTS,
    Stack,
    bench_env,
    raise_nofile,
    run_django,
    versions,
)
from bench.soak_report import DOC, summarize, summary_lines, write_docs
from bench.soak_sampler import Sampler, settle_after_close, worker_log_summary
from bench.soak_steps import SoakRun, check_ids, connect_all, deliveries, passed, quiesce, run_load
from bench.targets import chunks, drop_prefix, headers_for
from realtime.launcher import Worker

RESULT = RESULTS / "soak.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--sockets", type=int, default=2000, help="sockets in all (two per user); default 2000")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the load; default 10")
    p.add_argument("--rooms", type=int, default=20, help="chat rooms; default 20")
    p.add_argument("--chat-rate", type=float, default=0.5, help="posts per second per room; default 0.5")
    p.add_argument(
        "--notify-rate", type=float, default=5.0, help="notify() to one user per second; default 5"
    )
    p.add_argument("--group-every", type=float, default=30.0, help="seconds between group notifications")
    p.add_argument("--group-size", type=int, default=100, help="users per group notification; default 100")
    p.add_argument("--churn", type=float, default=3.0, help="%% of sockets dropped per minute; default 3")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples; default 10")
    p.add_argument("--client-processes", type=int, default=2, help="load-generator processes; default 2")
    p.add_argument("--connect-concurrency", type=int, default=25, help="handshakes in flight per process")
    p.add_argument("--no-save", action="store_true", help="print only: no json, no docs")
    p.add_argument("--docs", action="store_true", help="only rewrite docs/reliability.md from soak.json")
    args = p.parse_args(argv)
    if not args.docs:
        if args.sockets < 4 or args.minutes <= 0:
            p.error("--sockets must be at least 4 and --minutes positive")
        if args.sockets // 2 < args.rooms:
            p.error("need at least one user per room: --sockets >= 2 * --rooms")
    return args


# --- the plan --------------------------------------------------------------------------------
def plan(prep: dict, rooms: list[str], servers: list[Worker], users: int) -> list[dict[str, Any]]:
    """Two agents per user: a chat socket in its room and an inbox socket (see the module doc)."""
    agents = []
    for i in range(users):
        pair = i // 2
        chat_worker, inbox_worker = i % 2, pair % 2
        headers = headers_for(prep, servers[chat_worker].port, [i])[0]
        room = rooms[pair % len(rooms)]
        agents.append(
            {
                "key": f"chat:{room}:{i}",
                "kind": "chat",
                "scope": room,
                "urls": [f"ws://127.0.0.1:{s.port}/ws/chat/{room}/" for s in servers],
                "worker": chat_worker,
                "headers": headers,
            }
        )
        agents.append(
            {
                "key": f"inbox:{i}",
                "kind": "notif",
                "scope": prep["user_ids"][i],
                "urls": [f"ws://127.0.0.1:{s.port}/ws/notifications/" for s in servers],
                "worker": inbox_worker,
                "headers": headers,
            }
        )
    return agents


# --- the run ---------------------------------------------------------------------------------
def key_prefixes(tag: str) -> dict[str, str]:
    layer = f"soak-{tag}"  # under it, so that one SCAN (and drop_prefix) finds them all
    return {"layer": layer, "presence": f"{layer}-presence", "rate": f"{layer}-rate"}


def soak_env(tag: str) -> dict[str, str]:
    prefixes = key_prefixes(tag)
    return bench_env(
        CHANNEL_LAYER_PREFIX=prefixes["layer"],
        PRESENCE_KEY_PREFIX=prefixes["presence"],
        CHAT_RATE_KEY_PREFIX=prefixes["rate"],
        # The production rate limit: a realistic chat load stays far under it.
        CHAT_RATE_PER_SECOND="10",
        CHAT_RATE_BURST="20",
    )


def run(args: argparse.Namespace, tag: str) -> dict[str, Any]:
    users = args.sockets // 2
    prefixes = key_prefixes(tag)
    env = soak_env(tag)
    seconds = args.minutes * 60
    print(f"== soak {tag}: {users * 2} sockets ({users} users), {args.minutes:g} min", flush=True)
    prep = run_django(["prepare", str(users)], env=env)
    if not prep["chat"]:
        raise RuntimeError("the chat endpoint is not in config.routing")
    floor = run_django(["rooms", str(args.rooms)], env=env)
    rooms = floor["rooms"]
    figures: dict[str, Any] = {"run": tag, "prefixes": prefixes}
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(drop_prefix, prefixes["layer"])  # last: after the workers stop
        stack = cleanup.enter_context(Stack())
        servers = [stack.serve(env=env), stack.serve(env=env)]
        Worker.wait_all_ready(servers, 60, path="/readyz")  # database and channel layer answer
        figures["commands"] = [s.command() for s in servers]
        sampler = Sampler(servers, prefixes, env)
        sampler.take("idle", None)

        agents = plan(prep, rooms, servers, users)
        n_procs = max(1, min(args.client_processes, len(agents)))
        clients = cleanup.enter_context(Clients(n_procs, factory="bench.soak_client:SoakClient"))
        parts = chunks(agents, n_procs)
        steps = SoakRun(args, tag, env, users, seconds, rooms, servers, agents, parts, clients)
        figures["connect"] = connect_all(clients, parts, tag, args)
        sampler.take("connected", clients)
        figures["driver"] = run_load(steps, cleanup, stack, sampler)
        figures["quiesce"] = quiesce(steps)
        figures["check"] = check = check_ids(steps, prep, floor)
        sampler.take("settled", clients)

        # Close every socket; what the workers hold afterwards is what they would leak.
        clients.stop()
        figures["close_settle_s"] = round(settle_after_close(servers, sampler), 1)
        sampler.take("closed", None)
        figures["worker_logs"] = [worker_log_summary(s) for s in servers]
    # The workers have stopped (SIGTERM, drained) and the run's keys are deleted.

    figures["deliveries"] = deliveries(sampler, seconds)
    figures["summary"] = summarize(sampler.samples, len(servers))
    figures["samples"] = sampler.samples
    figures["passed"] = passed(check)
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.docs:
        write_docs(json.loads(RESULT.read_text()))
        print(f"wrote the soak section of {DOC}")
        return 0
    nofile = raise_nofile()
    # Each socket is a descriptor in a worker and in a load generator, plus slack.
    if nofile < args.sockets + 1024:
        print(f"open-file limit {nofile} is too low for {args.sockets} sockets", file=sys.stderr)
        return 2
    # A SIGTERM becomes KeyboardInterrupt, so every `with` stops what it started.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return soak(args, nofile, argv if argv is not None else sys.argv[1:])
    finally:
        signal.signal(signal.SIGTERM, previous)


def soak(args: argparse.Namespace, nofile: int, argv: list[str]) -> int:
    tag = uuid.uuid4().hex[:8]
    env = soak_env(tag)
    started = time.monotonic()
    config = {k: v for k, v in vars(args).items() if k not in ("no_save", "docs")}
    config["users"] = args.sockets // 2
    config["sockets"] = config["users"] * 2
    doc: dict[str, Any] = {
        "workload": "soak",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}",
        "nofile": nofile,
        "versions": versions(),
        "env": {k: env.get(k, "") for k in RECORDED_ENV},
        "invocation": "python -m bench.soak " + " ".join(argv),
        "config": config,
    }
    try:
        doc["figures"] = run(args, tag)
        status = 0 if doc["figures"]["passed"] else 1
    except KeyboardInterrupt:
        print("interrupted; workers and clients stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        traceback.print_exc()
        doc["figures"] = {"error": f"{type(exc).__name__}: {exc}"}
        status = 1
    doc["elapsed_s"] = round(time.monotonic() - started, 1)
    print("\n".join(summary_lines(doc)))
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps(doc, indent=1) + "\n")
        write_docs(doc)
        print(f"wrote {RESULT} and the soak section of {DOC}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
