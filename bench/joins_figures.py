"""A `joins` pass's figures from what its steps answered (`Seen`): joins, frames and bytes by
kind, the workers' CPU, delivery latency and faults; and the poster's own figures, which the
fan-out run without quiet (bench/fanout_overlap.py) reports too."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

from bench.stats import spread_ms


def poster_figures(posted: dict[str, Any], echoes: dict[str, Any], ids: list[int] | None) -> dict[str, Any]:
    """How the poster's own posts fared: stored, and how fast the server took them.

    A post the server never stored reaches nobody, which no member's check can see:
    it is counted here (the service: ids in the history; the baseline stores nothing).
    The poster gets each post back once it is stored and published; if the server takes
    posts slower than they are sent, the lag grows from the first post to the last.
    """
    at, lag = array("q"), array("q")
    at.frombytes(echoes["echo_ns"])
    lag.frombytes(echoes["echo_lat"])
    span = (at[-1] - posted["t_first_send"]) / 1e9 if at else 0.0
    return {
        "echoed": echoes["echoed"],
        "posts_not_stored": posted["sent"] - len(ids) if ids is not None else 0,
        "posts_taken_per_s": round(len(at) / span, 1) if span > 0 else None,
        "first_post_echo_ms": round(lag[0] / 1e6, 1) if lag else None,
        "last_post_echo_ms": round(lag[-1] / 1e6, 1) if lag else None,
    }


def _sum_kinds(answers: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in answers:
        for kind, v in a[key].items():
            out[kind] = out.get(kind, 0) + v
    return out


@dataclass
class Seen:
    """What one storm's steps answered, for `pass_figures`."""

    storm: list[dict[str, Any]]
    posted: dict[str, Any]
    quiet: list[dict[str, Any]] | None
    echoes: dict[str, Any]
    check: dict[str, Any]
    verify: list[dict[str, Any]]
    online: dict[str, Any] | None
    left: int | None
    cpu0: float
    cpu_joined: float
    cpu_end: float


def all_delivered(res: dict[str, Any], sent: bool, out: dict[str, Any]) -> bool:
    """The posts were sent (`sent`) and stored, and every member got each once and nothing else."""
    return (
        res["lost"] == 0
        and res["duplicates"] == 0
        and res["unexpected"] == 0
        and res["received"] == res["expected"]
        and sent
        and not out["posts_not_stored"]
    )


def pass_figures(
    seen: Seen, n: int, label: str, posting: bool, rate: float, post_rate: float
) -> dict[str, Any]:
    """One pass's figures (`label`, in a room of `n`) from what its steps answered."""
    storm, posted, echoes, check, verify = seen.storm, seen.posted, seen.echoes, seen.check, seen.verify
    quiet, online, left = seen.quiet, seen.online, seen.left
    cpu0, cpu_joined, cpu_end = seen.cpu0, seen.cpu_joined, seen.cpu_end
    joins = n - 1
    joined = sum(s["joined"] for s in storm)
    errors: dict[str, int] = {}
    for s in storm:
        for k, v in s["errors"].items():
            errors[k] = errors.get(k, 0) + v
    t_start = min(s["t_start"] for s in storm)
    t_last = max(s["t_last_welcome"] for s in storm)
    frames = _sum_kinds(verify, "frames")
    size = _sum_kinds(verify, "bytes")
    # Members told of each join: the poster and every earlier joiner.
    member_joins = joins * (joins + 1) // 2
    totals = {
        k: sum(v[k] for v in verify)
        for k in ("expected", "received", "lost", "duplicates", "unexpected", "out_of_order", "dropped")
    }
    out: dict[str, Any] = {
        "members": n,
        "pass": label,
        "joins": joins,
        "joined": joined,
        "join_errors": errors,
        "joins_not_attempted": sum(s["not_attempted"] for s in storm),
        "join_rate_set": rate,
        "join_rate_achieved": round(joins / ((t_last - t_start) / 1e9), 1) if t_last > t_start else None,
        "join_lag": spread_ms([s["lags"] for s in storm]),
        "handshake": spread_ms([s["handshakes"] for s in storm]),
        "storm_s": round((t_last - t_start) / 1e9, 2),
        "post_rate": post_rate if posting else None,
        "posts": posted["sent"],
        **poster_figures(posted, echoes, check.get("ids")),
        "frames": frames,
        "bytes": size,
        "join_bytes": size["welcome"] + size["presence"],
        "member_joins": member_joins,
        "presence_frames_per_join_per_member": round(frames["presence"] / member_joins, 4)
        if member_joins
        else None,
        "presence_bytes_per_join_per_member": round(size["presence"] / member_joins, 2)
        if member_joins
        else None,
        "join_bytes_per_join": round((size["welcome"] + size["presence"]) / joins, 1) if joins else None,
        "worker_cpu_s": round(cpu_end - cpu0, 3),
        "worker_cpu_joining_s": round(cpu_joined - cpu0, 3),
        # The joins pass: the window ends at quiet, before its few posts.
        "cpu_per_join_ms": round(((cpu_end if posting else cpu_joined) - cpu0) / joins * 1000, 3)
        if joins
        else None,
        "latency": spread_ms([v["lat"] for v in verify]),
        **totals,
        "short_members": sum(v["short_members"] for v in verify),
        "early": sum(v["early"] for v in verify),
        # Deliveries of posts stored after the history was read (the server fell behind).
        "late": sum(v["late"] for v in verify),
        "timed_out": any(v["timed_out"] for v in verify),
        "stalled": any(v["stalled"] for v in verify),
        "samples": [s for v in verify for s in v["samples"]][:5],
        "client_cpu_s": [v["client_cpu_s"] for v in verify],
    }
    out["all_delivered"] = all_delivered(totals, posted["sent"] > 0, out)
    if quiet is not None:
        last_presence = max(v["last_presence_ns"] for v in verify)
        out["quiet_s"] = round((last_presence - t_last) / 1e9, 3) if last_presence else None
        out["foreign_names"] = sum(v["foreign_names"] for v in verify)
    if online is not None:
        out["online"] = online
        out["online_after_close"] = left
    return out
