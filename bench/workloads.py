"""The bench's workloads: which there are and which module runs each (WORKLOADS), how large
(SIZES, each overridable as BENCH_<NAME>), and which of a workload's targets run.

Each workload returns a dict of figures (no printing)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from bench.common import run_django

SIZES = {
    # name: (full, quick)
    "fanout_sockets": (1000, 20),
    "fanout_messages": (100, 5),
    "push_users": (1000, 20),
    "push_rate": (200, 20),
    "push_seconds": (20, 1),
    "broadcast_users": (5000, 20),
    "idle_sockets": (10000, 50),
    "workers_sizes": ((100, 1000), (10, 20)),
    "workers_messages": (20, 5),
    # joins (bench/joins.py): room sizes, joins per second over both workers, the
    # poster's messages per second during the storm, and its messages after the joins.
    "joins_sizes": ((500, 1000, 2000, 5000), (12,)),
    "joins_rate": (100, 100),
    "joins_post_rate": (10, 10),
    "joins_after_posts": (20, 5),
    # ticker (bench/ticker.py): subscribers, topics, topics each follows, values published per
    # second over all topics and for how long; subscribers that stop reading, for how long
    # (from a third of the way in); load-generator processes.
    "ticker_subscribers": (1000, 20),
    "ticker_topics": (500, 20),
    "ticker_follow": (50, 5),
    "ticker_rate": (1000, 100),
    "ticker_seconds": (30, 2),
    "ticker_slow": (10, 2),
    "ticker_pause": (10, 1),
    "ticker_clients": (2, 1),
    # reconnect (bench/reconnect.py): sockets (one user each, half per worker), chat rooms they
    # spread over, each storm's deadline, the publisher's notifications and chat posts per second
    # during a storm, load-generator processes; the hub's heartbeat, its timeout and the drain's
    # grace (the production defaults at full size, shorter for the smoke run).
    "reconnect_users": (10000, 8),
    "reconnect_rooms": (10, 1),
    "reconnect_deadline_s": (120, 30),
    "reconnect_note_rate": (20, 20),
    "reconnect_chat_rate": (2, 5),
    "reconnect_clients": (2, 1),
    "reconnect_heartbeat_ms": (5000, 500),
    "reconnect_heartbeat_timeout_ms": (10000, 2000),
    "reconnect_drain_grace_ms": (2000, 200),
}


class Skip(Exception):
    """A target that cannot run (e.g. config.routing has no chat endpoint)."""


def size(name: str, quick: bool):
    full, small = SIZES[name]
    # While working on one workload, e.g. BENCH_IDLE_SOCKETS=2000 or BENCH_JOINS_SIZES=200,500.
    override = os.environ.get(f"BENCH_{name.upper()}")
    if override and isinstance(full, int):
        return int(override)
    if override and isinstance(full, tuple):
        return tuple(int(x) for x in override.split(","))
    return small if quick else full


def only_targets(variable: str) -> list[str]:
    """The targets named in an environment variable (comma-separated), or [] for all."""
    return [n for n in os.environ.get(variable, "").split(",") if n]


def each_target(names: list[str], variable: str, run: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """`run(name)` for each target (those named in `variable`, if set): its result, or why it has none."""
    only = only_targets(variable)
    results: dict[str, Any] = {}
    for name in (n for n in names if not only or n in only):
        try:
            results[name] = run(name)
        except Skip as exc:
            results[name] = {"skipped": str(exc)}
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return results


WORKLOADS = {
    # name: (module:function that runs it, the size that says how many users it needs)
    "fanout": ("bench.fanout:fanout", "fanout_sockets"),
    "push": ("bench.notifications:push", "push_users"),
    "broadcast": ("bench.notifications:broadcast", "broadcast_users"),
    "idle": ("bench.notifications:idle", "idle_sockets"),
    "workers": ("bench.workers:workers", "workers_sizes"),
    "joins": ("bench.joins:joins", "joins_sizes"),
    "ticker": ("bench.ticker:ticker", "ticker_subscribers"),
    "reconnect": ("bench.reconnect:reconnect", "reconnect_users"),
}


def users_needed(name: str, quick: bool) -> int:
    value = size(WORKLOADS[name][1], quick)
    return max(value) if isinstance(value, tuple) else value


def run(name: str, quick: bool) -> dict[str, Any]:
    """Prepare exactly the users this workload needs, then run it."""
    prep = run_django(["prepare", str(users_needed(name, quick))])
    # Imported here: each workload's module imports this one (SIZES, size, each_target).
    module, func = WORKLOADS[name][0].split(":")
    return getattr(importlib.import_module(module), func)(prep, quick)
