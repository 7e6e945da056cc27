"""The reconnect workload's figures, from its load generators' reports, and its rows in the bench
tables (bench/report.py draws them)."""

from __future__ import annotations

import math
from array import array
from typing import Any

from bench.report import Row, _fmt, _verdict
from bench.stats import percentile

STORMS = (("redis", "Redis restart"), ("drain", "drain of one worker"))
BACK_GOAL_S = 10.0  # every client back within 10 s of a Redis restart


def _cut(values: array, q: float) -> float | None:
    """The time by which a share `q` of the dropped agents were back (None: not reached)."""
    n = len(values)
    back = sorted(v for v in values if v >= 0)
    need = max(1, math.ceil(q * n))
    return round(back[need - 1] / 1e9, 3) if n and len(back) >= need else None


def _rates(blobs: list[bytes]) -> dict[str, Any]:
    """One worker's welcomes during the storm: how many, per second over their span, and the peak
    over any whole second."""
    times = array("q")
    for blob in blobs:
        times.frombytes(blob)
    if not times:
        return {"handshakes": 0, "per_s": None, "peak_per_s": None}
    ordered = sorted(times)
    span = (ordered[-1] - ordered[0]) / 1e9
    buckets: dict[int, int] = {}
    for t in ordered:
        buckets[(t - ordered[0]) // 10**9] = buckets.get((t - ordered[0]) // 10**9, 0) + 1
    per_s = round(len(ordered) / span, 1) if span > 0 else None
    return {"handshakes": len(ordered), "per_s": per_s, "peak_per_s": max(buckets.values())}


def summarize(reports: list[dict[str, Any]], restarted_s: float | None) -> dict[str, Any]:
    """The load generators' reports as the workload's figures (times in seconds from the fault)."""
    dropped, back, lat = array("q"), array("q"), array("q")
    for r in reports:
        dropped.frombytes(r["dropped"])
        back.frombytes(r["back"])
        lat.frombytes(r["handshake_ns"])
    lat_sorted = sorted(lat)
    failed: dict[str, int] = {}
    closes: dict[str, int] = {}
    for r in reports:
        for k, v in r["failed"].items():
            failed[k] = failed.get(k, 0) + v
        for k, v in r["closes"].items():
            closes[k] = closes.get(k, 0) + v
    out: dict[str, Any] = {
        "sockets": sum(r["agents"] for r in reports),
        "must_drop": sum(r["must_drop"] for r in reports),
        "dropped": len(dropped),
        "not_dropped": sum(r["not_dropped"] for r in reports),
        "back": sum(1 for b in back if b >= 0),
        "live_at_end": sum(r["live"] for r in reports),
        "first_close_s": round(min(dropped) / 1e9, 3) if dropped else None,
        "back_99_s": _cut(back, 0.99),
        "back_100_s": _cut(back, 1.0),
        "handshake_p50_ms": round(percentile(lat_sorted, 0.5) / 1e6, 1),
        "handshake_p99_ms": round(percentile(lat_sorted, 0.99) / 1e6, 1),
        "workers": [_rates([r["welcomes"][k] for r in reports]) for k in range(len(reports[0]["welcomes"]))],
        "failed": dict(sorted(failed.items(), key=lambda kv: -kv[1])),
        "closes": closes,
    }
    for key in ("late", "duplicates", "redelivered", "resumes"):
        out[key] = sum(r[key] for r in reports)
    out["client_cpu_s"] = [round(r["client_cpu_s"], 2) for r in reports]
    if restarted_s is not None:
        for key in ("back_99_s", "back_100_s"):
            value = out[key]
            out[f"{key[:-2]}_after_restart_s"] = round(value - restarted_s, 3) if value is not None else None
    return out


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:,.2f} s"


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items()) if counts else "none"


def _back_row(target: str, label: str, s: dict[str, Any], service: bool) -> Row:
    value = f"{_seconds(s['back_99_s'])} / {_seconds(s['back_100_s'])} after the fault"
    goal, ok = "", None
    if "back_99_after_restart_s" in s:
        value += (
            f"; {_seconds(s['back_99_after_restart_s'])} / {_seconds(s['back_100_after_restart_s'])}"
            f" after Redis was up ({_fmt(s['redis_down_s'])} s down)"
        )
        if service:
            after = s["back_100_after_restart_s"]
            goal, ok = (
                f"100 % ≤ {BACK_GOAL_S:g} s after Redis is up",
                after is not None and after <= BACK_GOAL_S,
            )
    return (
        target,
        f"{label}: clients back (welcome, resume done), 99 % / 100 %",
        value,
        goal,
        _verdict(ok) if goal else "",
    )


def _worker_rate(k: int, x: dict[str, Any]) -> str:
    if not x["handshakes"]:
        return f"worker {k + 1}: none"
    return (
        f"worker {k + 1}: {x['handshakes']:,} at {_fmt(x['per_s'])}/s (peak {_fmt(x['peak_per_s'])} in 1 s)"
    )


def _storm_rows(target: str, label: str, s: dict[str, Any], service: bool) -> list[Row]:
    c = s["connect"]
    opened = (
        target,
        f"{label}: sockets opened before it",
        f"{c['sockets']:,} in {_fmt(c['seconds'])} s",
        "",
        "",
    )
    if not s["dropped"]:
        text = f"no socket closed of {s['sockets']:,} ({_fmt(s.get('redis_down_s'))} s down)"
        return [opened, (target, f"{label}: sockets", text, "", "")]
    dropped = f"{s['dropped']:,} of {s['sockets']:,} sockets closed"
    if s["first_close_s"] is not None:
        dropped += f" (first {_fmt(s['first_close_s'])} s after the fault; {_kinds(s['closes'])})"
    dropped += f"; {s['back']:,} back, {s['live_at_end']:,} live at the end"
    if s.get("deadline_hit"):
        dropped += f"; the deadline passed (last change {_fmt(s['window_s'])} s after the fault)"
    rates = "; ".join(_worker_rate(k, x) for k, x in enumerate(s["workers"]))
    cpu = " / ".join(
        f"{_fmt(c)} s ({share * 100:.0f} %)"
        for c, share in zip(s["worker_cpu_s"], s["worker_cpu_share"], strict=True)
    )
    rows: list[Row] = [
        opened,
        _back_row(target, label, s, service),
        (target, f"{label}: sockets", dropped, "", ""),
        (target, f"{label}: handshakes per worker", rates, "", ""),
        (
            target,
            f"{label}: handshake p50 / p99",
            f"{_fmt(s['handshake_p50_ms'])} / {_fmt(s['handshake_p99_ms'])} ms",
            "",
            "",
        ),
        (target, f"{label}: refused or failed openings", _kinds(s["failed"]), "", ""),
        (target, f"{label}: worker CPU (share of {_fmt(s['window_s'])} s)", cpu, "", ""),
        (
            target,
            f"{label}: load-generator CPU",
            " + ".join(f"{_fmt(c)} s" for c in s["client_cpu_s"]),
            "",
            "",
        ),
    ]
    if "check" in s:
        c, p = s["check"], s["publisher"]
        sent = (
            f"{p['notifications']:,} notifications + {p['chat_posts']:,} messages in {_fmt(p['seconds'])} s"
        )
        if p["failed"]:
            sent += f" (calls that raised: {_kinds(p['failed'])})"
        value = (
            f"{sent}; {c['received']:,}/{c['expected']:,} ids received, lost {c['lost']:,}, duplicated "
            f"{c['duplicates']:,}, late (through resume) {s['late']:,}, re-delivered {c['redelivered']:,}"
        )
        if c["not_live_at_end"]:
            value += (
                f"; {c['missing_not_back']:,} not (yet) received by the {c['not_live_at_end']:,} not back"
            )
        # A client not back has not resumed: that nothing is lost is shown only once all are back.
        ok = not (c["lost"] or c["duplicates"] or c["phantoms"] or c["not_live_at_end"]) and c["expected"] > 0
        rows.append((target, f"{label}: ids against the database", value, "none lost or twice", _verdict(ok)))
    return rows


def rows(target: str, r: dict[str, Any]) -> list[Row]:
    service = target.startswith("service")
    out: list[Row] = []
    p = r.get("publisher")
    if p:
        text = (
            f"{p['notifications']:,} notifications + {p['chat_posts']:,} messages in {_fmt(p['seconds'])} s"
        )
        out.append(
            (target, "published through both storms", text + f"; failed: {_kinds(p['failed'])}", "", "")
        )
    for key, label in STORMS:
        if key in r:
            out += _storm_rows(target, label, r[key], service)
    return out


def ratio_rows(figures: dict[str, Any]) -> list[Row]:
    targets = figures.get("targets", {})
    ours, theirs = targets.get("service-daphne", {}), targets.get("channels-daphne", {})
    out: list[Row] = []
    for key, label in STORMS:
        a, b = ours.get(key), theirs.get(key)
        if not a or not b:
            continue
        value = (
            f"100 % back {_seconds(a['back_100_s'])} / {_seconds(b['back_100_s'])}; "
            f"handshake p99 {_fmt(a['handshake_p99_ms'])} / {_fmt(b['handshake_p99_ms'])} ms"
        )
        if not b["dropped"]:
            value = (
                f"100 % back {_seconds(a['back_100_s'])} / plain Channels closed no socket: what was "
                "sent while Redis was down is lost to its clients, unnoticed"
            )
        out.append(("side by side", f"{label}: service / plain Channels", value, "", ""))
    return out
