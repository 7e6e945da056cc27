"""The fan-out run that does not wait for quiet (the `fanout` workload's *-overlap targets): the
poster's burst goes out once half the room is in, the rest still joining; no settle and no heal.
Its members are bench/joins_client.py's, and its checks and figures are the `joins` workload's."""

from __future__ import annotations

from array import array
from typing import Any

from bench.client import now_ns
from bench.common import proc_cpu_seconds
from bench.joins import DRAIN_S, FACTORY, STALL_S, key_env
from bench.joins_checks import room_ids
from bench.joins_figures import all_delivered, poster_figures
from bench.stats import spread_ms
from bench.targets import (
    CHANNELS_APP,
    FANOUT_CONNECT_CONCURRENCY,
    SERVICE_APP,
    headers_for,
    one_service,
    profiled,
)
from bench.workloads import Skip, size
from realtime.launcher import Worker

OVERLAP_TARGETS = {
    # name: (server, app, path, client mode)
    "service-daphne-overlap": ("daphne", SERVICE_APP, "/ws/chat/lobby/", "chat"),
    "service-uvicorn-overlap": ("uvicorn", SERVICE_APP, "/ws/chat/lobby/", "chat"),
    "channels-daphne-overlap": ("daphne", CHANNELS_APP, "/ws/baseline/lobby/", "tutorial"),
    "channels-uvicorn-overlap": ("uvicorn", CHANNELS_APP, "/ws/baseline/lobby/", "tutorial"),
}


def _overlap_check(
    mode: str, prep: dict, server: Worker, poster: dict[str, Any], posted: dict[str, Any]
) -> dict[str, Any]:
    """What the members' deliveries are checked against: the room's stored ids (chat), else the sends."""
    if mode == "chat":
        cookie = f"{prep['cookie_name']}={prep['cookies'][0]}"
        check = {"ids": room_ids(server.port, "lobby", cookie, poster["last_id"] or 0)}
    else:
        check = {"sends": posted["sends"]}
    check.update({"timeout": 300, "stall": STALL_S})
    return check


# What the overlap's figures take as they are from the client's verify answer, in this order.
OVERLAP_COUNTS = (
    *("expected", "received", "lost", "duplicates", "unexpected", "out_of_order", "dropped"),
    *("short_members", "early", "timed_out", "stalled", "samples", "frames", "bytes"),
)


def overlap_target(name: str, prep: dict, quick: bool) -> dict[str, Any]:
    """The fan-out, but the poster's burst goes out once half the room is in, the rest still joining.

    No settle and no heal: what a member loses while the room fills is lost.
    """
    server_kind, app, path, mode = OVERLAP_TARGETS[name]
    if mode == "chat" and not prep["chat"]:
        raise Skip("chat endpoint /ws/chat/<slug>/ is not in config.routing")
    n = size("fanout_sockets", quick)
    m = size("fanout_messages", quick)
    with one_service(server_kind, app, factory=FACTORY, make_env=key_env) as run:
        server, clients, tag = run.server, run.clients, run.tag
        url = f"ws://127.0.0.1:{server.port}{path}"
        proc = clients.procs[0]
        proc.call("begin", {"mode": mode, "tag": tag, "nbits": n})
        poster = proc.call(
            "poster", {"index": 0, "url": url, "headers": headers_for(prep, server.port, [0])[0]}
        )
        joins = [[k, k + 1, url, h] for k, h in enumerate(headers_for(prep, server.port, range(1, n)))]
        after = (n - 1) // 2
        cpu0 = proc_cpu_seconds(server.pid)
        with profiled(server, name):
            storm = proc.call(
                "storm",
                {
                    "joins": joins,
                    "t0": now_ns(),
                    "rate": None,
                    "concurrency": FANOUT_CONNECT_CONCURRENCY,
                    "timeout": 60.0,
                    "post": {"count": m, "after": after},
                },
                timeout=400,
            )
            posted = proc.call("stop_posting")
            echoes = proc.call("echoes", {"timeout": DRAIN_S, "stall": STALL_S}, timeout=DRAIN_S + 60)
            check = _overlap_check(mode, prep, server, poster, posted)
            res = proc.call("verify", check, timeout=420)
        cpu1 = proc_cpu_seconds(server.pid)
        sends = array("q")
        sends.frombytes(posted["sends"])
        welcomes = array("q")
        welcomes.frombytes(storm["welcomes"])
    span = (res["last_message_ns"] - posted["t_first_send"]) / 1e9
    lat = spread_ms([res.pop("lat")])
    out = {
        "server": server_kind,
        "command": server.command(),
        "sockets": n,
        "messages": m,
        "posts": posted["sent"],
        **poster_figures(posted, echoes, check.get("ids")),
        "joined": storm["joined"] + 1,
        "join_errors": storm["errors"],
        # Sockets whose welcome came after the first post: they joined while it fanned out.
        "joined_while_posting": sum(1 for t in welcomes if t > posted["t_first_send"]),
        "seconds": round(span, 4),
        "deliveries_per_s": round(res["received"] / span, 1) if span > 0 else 0.0,
        "latency_p50_ms": lat["p50_ms"],
        "latency_p99_ms": lat["p99_ms"],
        "latency_max_ms": lat["max_ms"],
        "server_cpu_s": round(cpu1 - cpu0, 3),
        **{k: res[k] for k in OVERLAP_COUNTS},
        "client_cpu_s": [res["client_cpu_s"]],
    }
    out["all_delivered"] = all_delivered(res, posted["sent"] == m, out)
    if not out["all_delivered"]:
        out["server_log_tail"] = run.log
    return out
