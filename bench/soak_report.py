"""The soak's output (bench/soak.py): a row per sample for the terminal, the summary of a run
(first and last sample under load, the peak, what is left after close), its lines, and the
generated "Soak" section of docs/reliability.md."""

from __future__ import annotations

from typing import Any

from bench.common import ROOT

DOC = ROOT / "docs" / "reliability.md"
DOC_BEGIN = "<!-- soak:generated:begin (python -m bench.soak writes this part) -->"
DOC_END = "<!-- soak:generated:end -->"
FULL_SCALE = (2000, 10.0)  # the run: sockets, minutes


COLUMNS = (
    "t s",
    "phase",
    "RSS MiB w1/w2",
    "fds w1/w2",
    "CPU % w1/w2",
    "open w1/w2",
    "Redis keys l/p/r",
    "pubsub",
    "Redis MiB",
    "PG",
    "clients live",
    "delivered (sum)",
    "p99 ms",
)


def row_cells(sample: dict[str, Any]) -> list[str]:
    ws = sample["workers"]
    keys = sample["redis"]["keys"]
    clients = sample.get("clients") or {}
    lat = sample.get("latency") or {}

    def pair(f) -> str:
        return "/".join(f(w) for w in ws)

    return [
        f"{sample['t_s']:.0f}",
        sample["phase"],
        pair(lambda w: f"{w['rss_kib'] / 1024:.0f}"),
        pair(lambda w: str(w["fds"])),
        pair(lambda w: "-" if w["cpu_pct"] is None else f"{w['cpu_pct']:.0f}"),
        pair(lambda w: "?" if w["open"] is None else str(sum(w["open"].values()))),
        f"{keys['layer']}/{keys['presence']}/{keys['rate']}",
        str(sample["redis"]["pubsub_channels"]),
        f"{sample['redis']['used_memory_kib'] / 1024:.1f}",
        str(sample["pg_connections"]),
        f"{clients['live']}/{clients['agents']}" if clients else "-",
        f"{clients['delivered']:,}" if clients else "-",
        f"{lat['latency_p99_ms']:,.0f}" if lat.get("n") else "-",
    ]


def row_text(sample: dict[str, Any]) -> str:
    return "  ".join(row_cells(sample))


def markdown_table(samples: list[dict[str, Any]], rows: int = 12) -> str:
    """About `rows` samples of the load phase, evenly spaced, and every sample of the other phases."""
    load = [s["t_s"] for s in samples if s["phase"] == "load"]
    every = (load[-1] - load[0]) / rows if len(load) > 1 else 0.0
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    last = None
    for i, sample in enumerate(samples):
        keep = sample["phase"] != "load" or last is None or sample["t_s"] - last >= every - 0.5
        if sample["phase"] == "load" and i + 1 < len(samples) and samples[i + 1]["phase"] != "load":
            keep = True  # the last sample under load
        if keep:
            if sample["phase"] == "load":
                last = sample["t_s"]
            lines.append("| " + " | ".join(row_cells(sample)) + " |")
    return "\n".join(lines)


def series(samples: list[dict[str, Any]], phase_set: set[str], f) -> list:
    return [f(s) for s in samples if s["phase"] in phase_set]


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return round(60 * cov / var, 2) if var else None


def summarize(samples: list[dict[str, Any]], n_workers: int) -> dict[str, Any]:
    """First and last sample under load, the peak, and what is left after the sockets closed."""
    loaded = {"connected", "load", "settled"}
    load = [s for s in samples if s["phase"] in ("connected", "load")]
    first, last = load[0], load[-1]
    after = next((s for s in samples if s["phase"] == "closed"), None)
    # Growth over the second half of the load, when start-up allocations are done.
    under_load = [s for s in samples if s["phase"] == "load"]
    second_half = under_load[len(under_load) // 2 :]
    workers = []
    for i in range(n_workers):
        rss = series(samples, loaded, lambda s, i=i: s["workers"][i]["rss_kib"])
        fds = series(samples, loaded, lambda s, i=i: s["workers"][i]["fds"])
        workers.append(
            {
                "rss_mib_start": round(first["workers"][i]["rss_kib"] / 1024, 1),
                "rss_mib_end": round(last["workers"][i]["rss_kib"] / 1024, 1),
                "rss_mib_max": round(max(rss) / 1024, 1),
                "rss_mib_per_min_2nd_half": slope_per_minute(
                    [(s["t_s"], s["workers"][i]["rss_kib"] / 1024) for s in second_half]
                ),
                "rss_mib_idle_before": round(samples[0]["workers"][i]["rss_kib"] / 1024, 1),
                "rss_mib_after_close": round(after["workers"][i]["rss_kib"] / 1024, 1) if after else None,
                "fds_start": first["workers"][i]["fds"],
                "fds_end": last["workers"][i]["fds"],
                "fds_max": max(fds),
                "fds_idle_before": samples[0]["workers"][i]["fds"],
                "fds_after_close": after["workers"][i]["fds"] if after else None,
                "fd_kinds_end": last["workers"][i]["fd_kinds"],
                "fd_kinds_after_close": after["workers"][i]["fd_kinds"] if after else None,
                "threads_max": max(series(samples, loaded, lambda s, i=i: s["workers"][i]["threads"])),
            }
        )
    keys = series(samples, loaded, lambda s: sum(s["redis"]["keys"].values()))
    pubsub = series(samples, loaded, lambda s: s["redis"]["pubsub_channels"])
    pg = [c for c in series(samples, loaded, lambda s: s["pg_connections"]) if c is not None]
    return {
        "workers": workers,
        "redis_keys_start": sum(first["redis"]["keys"].values()),
        "redis_keys_end": sum(last["redis"]["keys"].values()),
        "redis_keys_max": max(keys),
        "redis_keys_after_close": after["redis"]["keys"] if after else None,
        "pubsub_channels_start": first["redis"]["pubsub_channels"],
        "pubsub_channels_max": max(pubsub),
        "pubsub_channels_after_close": after["redis"]["pubsub_channels"] if after else None,
        "pubsub_kinds_end": last["redis"]["pubsub_kinds"],
        "pubsub_kinds_after_close": after["redis"]["pubsub_kinds"] if after else None,
        "redis_used_memory_mib_start": round(first["redis"]["used_memory_kib"] / 1024, 1),
        "redis_used_memory_mib_end": round(last["redis"]["used_memory_kib"] / 1024, 1),
        "pg_connections_max": max(pg) if pg else None,
        "redis_client_kills": samples[-1]["redis"]["client_kill_calls"]
        - samples[0]["redis"]["client_kill_calls"],
        "load_minutes_sampled": round((last["t_s"] - first["t_s"]) / 60, 2),
    }


def kinds(counts: dict[str, int] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "n/a"


def summary_lines(doc: dict[str, Any]) -> list[str]:
    f = doc["figures"]
    if "error" in f:
        return [f"ERROR: {f['error']}"]
    c, s, d, cfg = f["check"], f["summary"], f["deliveries"], doc["config"]
    lines = [
        f"gaps {c['gaps']}, duplicates within a connection {c['duplicates']}, ids not in the database "
        f"{c['phantoms']}: {'PASS' if f['passed'] else 'FAIL'}",
        f"received {c['received']:,} of {c['expected']:,} expected ids over {c['connections']:,} connections "
        f"of {c['agents']:,} clients ({c['redelivered']:,} re-deliveries across reconnects, dropped by the "
        f"client as the browser does); converged {c['converge_s']} s after the load",
        f"posts: {c['posts_sent']:,} sent, {c['posts_acked']:,} acknowledged, {c['posts_stored']:,} stored, "
        f"{c['posts_resent']:,} re-sent from the outbox, {c['posts_rejected']:,} rejected; "
        f"ack p50/p99 {c['post_ack_p50_ms']}/{c['post_ack_p99_ms']} ms",
        f"notify(): {f['driver']['sent']:,} single + {f['driver']['group_sends']:,} groups of "
        f"{min(cfg['group_size'], cfg['users'])}; call p50/p99 {f['driver']['notify_call_p50_ms']:.1f}/"
        f"{f['driver']['notify_call_p99_ms']:.1f} ms",
        f"deliveries {d['delivered_during_load']:,} ({d['per_s']:,}/s); live push latency p50/p99/max "
        f"{d['latency_p50_ms']:,}/{d['latency_p99_ms']:,}/{d['latency_max_ms']:,} ms",
        f"reconnects: {c['churned']:,} dropped by the clients, server closes {c['server_closes']}, "
        f"{c['resumes']:,} resumes, {c['dead_links']} dead links, {c['pings']:,} pings",
        f"after the clients closed, the workers' sockets and the pub/sub channels settled in "
        f"{f.get('close_settle_s', 'n/a')} s",
    ]
    if not f["passed"]:
        lines.append(
            f"FAILED: {c['agents_with_gaps']} clients with gaps, {c['never_connected']} never connected, "
            f"{c['not_live_at_end']} not back at the end, {c['outbox_left']} posts never acknowledged, "
            f"{c['posts_rejected']} rejected; examples {c['gap_samples'][:3]}"
        )
    for i, w in enumerate(s["workers"], 1):
        lines.append(
            f"worker {i}: RSS {w['rss_mib_idle_before']} MiB idle, "
            f"{w['rss_mib_start']} -> {w['rss_mib_end']} MiB under load (max {w['rss_mib_max']}, "
            f"{w['rss_mib_per_min_2nd_half']} MiB/min over its second half), "
            f"{w['rss_mib_after_close']} after close; fds "
            f"{w['fds_idle_before']} idle, {w['fds_start']} -> {w['fds_end']} (max {w['fds_max']}), "
            f"{w['fds_after_close']} after close ({kinds(w['fd_kinds_after_close'])}); "
            f"threads max {w['threads_max']}"
        )
    lines.append(
        f"Redis keys of the run: {s['redis_keys_start']} -> {s['redis_keys_end']} "
        f"(max {s['redis_keys_max']}), after close {kinds(s['redis_keys_after_close'])}; "
        f"pub/sub channels {s['pubsub_channels_start']} "
        f"(max {s['pubsub_channels_max']}), after close {s['pubsub_channels_after_close']} "
        f"({kinds(s['pubsub_kinds_after_close'])}); used_memory "
        f"{s['redis_used_memory_mib_start']} -> {s['redis_used_memory_mib_end']} MiB (server-wide); "
        f"PostgreSQL connections max {s['pg_connections_max']}; CLIENT KILL calls to that Redis "
        f"during the run (anyone's): {s.get('redis_client_kills', 'n/a')}"
    )
    logs = f["worker_logs"]
    lines.append(
        "worker logs: "
        + "; ".join(
            f"{w['warnings']} warnings, {w['errors']} errors, {w['tracebacks']} tracebacks" for w in logs
        )
    )
    for w in logs:
        for line, n in w["top"].items():
            lines.append(f"  {n} x {line}")
    return lines


def markdown(doc: dict[str, Any]) -> str:
    f, cfg = doc["figures"], doc["config"]
    scale = (cfg["sockets"], cfg["minutes"])
    small = scale[0] < FULL_SCALE[0] or scale[1] < FULL_SCALE[1]
    head = [
        f"### Latest run: {cfg['sockets']:,} sockets, {cfg['minutes']:g} minute"
        + ("" if cfg["minutes"] == 1 else "s")
        + (" (validation at small scale)" if small else ""),
        "",
        f"Run {doc['date']} on {doc['cores']} cores ({doc['machine']}), `{doc['invocation']}`, "
        f"{doc['elapsed_s']} s in all. {cfg['users']:,} users in {cfg['rooms']} rooms; {cfg['chat_rate']:g} "
        f"posts/s per room, notify() {cfg['notify_rate']:g}/s plus {min(cfg['group_size'], cfg['users'])} "
        f"users every {cfg['group_every']:g} s, {cfg['churn']:g} % of sockets dropped per minute.",
        "",
    ]
    if small:
        head += [
            f"_This is not the issue's run ({FULL_SCALE[0]:,} sockets for {FULL_SCALE[1]:g} minutes); "
            "see the command above._",
            "",
        ]
    if "error" in f:
        return "\n".join([*head, f"**The run failed:** {f['error']}", ""])
    body = ["```", *summary_lines(doc), "```", "", markdown_table(f["samples"]), ""]
    return "\n".join(head + body)


def write_docs(doc: dict[str, Any]) -> None:
    text = DOC.read_text()
    if DOC_BEGIN not in text or DOC_END not in text:
        raise RuntimeError(f"{DOC} has no soak markers")
    before, rest = text.split(DOC_BEGIN, 1)
    _, after = rest.split(DOC_END, 1)
    DOC.write_text(f"{before}{DOC_BEGIN}\n{markdown(doc)}\n{DOC_END}{after}")
