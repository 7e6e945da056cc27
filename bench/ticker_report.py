"""The ticker workload's rows in the bench tables (bench/report.py draws them)."""

from __future__ import annotations

from typing import Any

from bench.report import Row, _fmt, _ms, _verdict


def rows(target: str, r: dict[str, Any]) -> list[Row]:
    p, slow = r["publisher"], r["slow"]
    service = target.startswith("service")
    lat = _ms(r, "latency_p50_ms", "latency_p99_ms", "latency_max_ms")
    ok = r["latency_p99_ms"] <= 50 and r["latency_p99_ms"] > 0
    faults = [
        f"{k}={r[k]}" for k in ("conflated", "duplicates", "out_of_order", "behind", "lost_sockets") if r[k]
    ]
    got = f"{r['received']:,}/{r['expected']:,}" + (f" ({', '.join(faults)})" if faults else "")
    held = slow["live_buffered_bytes"]
    held_text = f"{held / 1024:,.1f} KiB held, " if held is not None else "/metrics unanswered in 10 s, "
    memory = (held_text if service else "") + f"RSS +{_fmt(slow['rss_growth_kib'])} KiB"
    age = f"first {_fmt(slow['first_age_ms_max'])} ms old; fresh after {_fmt(slow['fresh_after_ms_max'])} ms"
    return [
        (
            target,
            "delivery p50 / p99 / max",
            lat,
            "p99 ≤ 50 ms" if service else "",
            _verdict(ok) if service else "",
        ),
        (target, "deliveries/s", _fmt(r["deliveries_per_s"]), "", ""),
        (
            target,
            "delivered, latest value everywhere",
            got,
            "latest, in order",
            _verdict(r["latest_everywhere"]),
        ),
        (
            target,
            "worker CPU (share of the window)",
            f"{_fmt(r['worker_cpu_s'])} s ({_fmt(r['worker_cpu_share'])})",
            "",
            "",
        ),
        (
            target,
            "publishes/s achieved",
            f"{_fmt(p['achieved_rate'])} of {_fmt(p['asked_rate'])} ({p['how']})",
            "",
            "",
        ),
        (
            target,
            f"{slow['sockets']} subscribers paused {_fmt(slow['pause_s'])} s: server memory",
            memory,
            "",
            "",
        ),
        (target, "paused subscribers on resuming", age, "", ""),
    ]


def ratio_rows(figures: dict[str, Any]) -> list[Row]:
    ratios = figures.get("ratios", {})
    value = ratios.get("service_daphne_vs_channels_daphne")
    verdict = "n/a" if value is None else _verdict(value >= 10)
    out: list[Row] = [
        ("ratio", "service daphne vs channels daphne, deliveries/s", _fmt(value, "x"), "≥ 10x", verdict)
    ]
    other = ratios.get("service_daphne_vs_websockets")
    out.append(("ratio", "service daphne vs websockets, deliveries/s", _fmt(other, "x"), "", ""))
    return out
