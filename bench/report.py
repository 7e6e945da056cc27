"""Tables from result documents, for the terminal and for docs/benchmarks.md."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

from bench.common import RESULTS, ROOT

DOCS = ROOT / "docs" / "benchmarks.md"
ORDER = ["fanout", "push", "broadcast", "idle", "workers", "joins", "ticker", "reconnect"]

Row = tuple[str, str, str, str, str]  # target, metric, value, goal, verdict


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.1f}" if abs(value) >= 100 else f"{value:,.2f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text}{unit}"


def _ms(r: dict[str, Any], *keys: str) -> str:
    return " / ".join(_fmt(r[k]) for k in keys) + " ms"


def _delivered(r: dict[str, Any]) -> str:
    extra = []
    keys = (
        "duplicates",
        "out_of_order",
        "short_sockets",
        "error_frames",
        "lost_sockets",
        "reopened_before_start",
    )
    for key in keys:
        if r.get(key):
            extra.append(f"{key}={r[key]}")
    if r.get("connect_errors"):
        extra.append(f"handshakes failed: {sum(r['connect_errors'].values())}")
    if r.get("stalled"):
        extra.append("stalled: no delivery for 15 s")
    text = f"{r['received']:,}/{r['expected']:,}"
    if "connected" in r:
        text += f" on {r['connected']:,} sockets"
    return text + (f" ({', '.join(extra)})" if extra else "")


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def _faults(r: dict[str, Any]) -> str:
    """What went wrong with the deliveries of a joins or overlap run, if anything (a failed join too)."""
    extra = [
        f"{key.replace('_', ' ')} {r[key]:,}"
        for key in ("lost", "duplicates", "unexpected", "out_of_order", "dropped", "posts_not_stored")
        if r.get(key)
    ]
    if r.get("join_errors"):
        extra.append(f"joins failed {sum(r['join_errors'].values()):,}")
    if r.get("timed_out") or r.get("stalled"):
        extra.append("gave up waiting")
    return f"{r['received']:,}/{r['expected']:,}" + (f" ({', '.join(extra)})" if extra else "")


def _fanout_rows(target: str, r: dict[str, Any]) -> list[Row]:
    out: list[Row] = [
        (target, "deliveries/s", _fmt(r["deliveries_per_s"]), "", ""),
        (
            target,
            "latency p50 / p99",
            f"{_fmt(r['latency_p50_ms'])} / {_fmt(r['latency_p99_ms'])} ms",
            "",
            "",
        ),
    ]
    cpu = "+".join(_fmt(c) for c in r["client_cpu_s"])
    if target.endswith("-overlap"):
        ok = r["all_delivered"] and not r.get("join_errors")
        joined = f"{r['joined_while_posting']:,} of {r['sockets']:,} sockets"
        out.append((target, "delivered", _faults(r), "all, once", _verdict(ok)))
        out.append((target, "still joining after the first post", joined, "", ""))
        out.append((target, "generator CPU", f"{cpu} s", "", ""))
    else:
        wall = _fmt(max(r["client_wall_s"]))
        out.append((target, "delivered", _delivered(r), "all", _verdict(r["all_delivered"])))
        out.append((target, "generator CPU / wall", f"{cpu} s / {wall} s", "", ""))
    return out


def _fanout_ratio_rows(figures: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    ratios = figures.get("ratios", {})
    goals = {
        "service_daphne_vs_channels_daphne": ("≥ 10x", 10.0),
        "service_uvicorn_vs_websockets": ("≥ 0.5x", 0.5),
    }
    overlap = [k for k in ratios if k.endswith("_overlap")]
    for key in (*goals, "channels_daphne_vs_websockets", "websockets_2clients_vs_1client", *overlap):
        value = ratios.get(key)
        goal, floor = goals.get(key, ("", None))
        verdict = "" if floor is None else ("n/a (skipped)" if value is None else _verdict(value >= floor))
        out.append(("ratio", key.replace("_", " "), _fmt(value, "x"), goal, verdict))
    return out


def _push_rows(target: str, r: dict[str, Any]) -> list[Row]:
    d = r["driver"]
    rate = (
        f"{_fmt(d['achieved_rate'])}/s (call p50 / p99 {_ms(d, 'notify_call_p50_ms', 'notify_call_p99_ms')})"
    )
    return [
        (
            target,
            "latency p50 / p99 / max",
            _ms(r, "latency_p50_ms", "latency_p99_ms", "latency_max_ms"),
            "p99 ≤ 25 ms",
            _verdict(r["latency_p99_ms"] <= 25 and r["all_delivered"]),
        ),
        (target, "delivered", _delivered(r), "all", _verdict(r["all_delivered"])),
        (target, "notify() rate achieved", rate, f"{r['rate_per_s']}/s", ""),
    ]


def _broadcast_rows(target: str, r: dict[str, Any]) -> list[Row]:
    last = r["commit_to_last_receipt_ms"]
    ok = last is not None and last <= 1000 and r["all_delivered"]
    return [
        (target, "commit → last receipt", _fmt(last, " ms"), "≤ 1000 ms", _verdict(ok)),
        (target, "commit → first receipt", _fmt(r["commit_to_first_receipt_ms"], " ms"), "", ""),
        (target, "notify() call → commit", _fmt(r["call_to_commit_ms"], " ms"), "", ""),
        (target, "delivered", _delivered(r), "all", _verdict(r["all_delivered"])),
    ]


def _idle_rows(target: str, r: dict[str, Any]) -> list[Row]:
    per = r["rss_per_socket_kib"]
    all_open = r["errors"] == 0 and r["sockets"] == r["requested"]
    return [
        (
            target,
            "sockets / errors",
            f"{r['sockets']:,} / {r['errors']}",
            f"{r['requested']:,} / 0",
            _verdict(all_open),
        ),
        (
            target,
            "RSS growth per socket",
            _fmt(per, " KiB"),
            "≤ 30 KiB",
            _verdict(per is not None and per <= 30),
        ),
        (target, "handshakes/s", _fmt(r["handshakes_per_s"]), "", ""),
        (target, "worker CPU per handshake", f"{_fmt(r.get('cpu_ms_per_handshake'))} ms", "", ""),
    ]


def _workers_rows(target: str, r: dict[str, Any]) -> list[Row]:
    if "sizes" not in r:
        return []
    out: list[Row] = []
    for n, s in sorted(r["sizes"].items(), key=lambda kv: int(kv[0])):
        per = _fmt(s["redis_commands_per_message"])
        got = f"{s['received']:,}/{s['expected']:,}"
        out.append((target, f"{n} members: Redis commands/message", per, "", ""))
        out.append((target, f"{n} members: delivered", got, "all", _verdict(s["all_delivered"])))
    growth = r.get("growth_small_to_large")
    ok = None if growth is None else growth <= 1.2
    verdict = _verdict(ok) if target.startswith("service") else ""
    out.append(
        (target, "commands/message, large / small room", _fmt(growth, "x"), "≈ 1x (independent)", verdict)
    )
    return out


def _report_of(workload: str):
    """bench/<workload>_report.py, which draws that workload's rows with this module's formatting."""
    return importlib.import_module(f"bench.{workload}_report")


# One row builder per workload: the rows of one target's figures, then the rows drawn from the
# figures of the whole run (ratios between targets).
TARGET_ROWS: dict[str, Callable[[str, dict[str, Any]], list[Row]]] = {
    "fanout": _fanout_rows,
    "push": _push_rows,
    "broadcast": _broadcast_rows,
    "idle": _idle_rows,
    "workers": _workers_rows,
    "joins": lambda target, r: _report_of("joins").rows(target, r),
    "ticker": lambda target, r: _report_of("ticker").rows(target, r),
    "reconnect": lambda target, r: _report_of("reconnect").rows(target, r),
}
RUN_ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "fanout": _fanout_ratio_rows,
    "joins": lambda figures: _report_of("joins").ratio_rows(figures),
    "ticker": lambda figures: _report_of("ticker").ratio_rows(figures),
    "reconnect": lambda figures: _report_of("reconnect").ratio_rows(figures),
}


def _no_rows(*_: Any) -> list[Row]:
    return []


def rows(doc: dict[str, Any]) -> list[Row]:
    figures = doc["figures"]
    name = doc["workload"]
    if "error" in figures:
        return [("-", "error", figures["error"], "", "ERROR")]
    out: list[Row] = []
    for target, r in figures.get("targets", {}).items():
        if "skipped" in r:
            out.append((target, "skipped", r["skipped"], "", "skipped"))
        elif "error" in r:
            out.append((target, "error", r["error"][:300], "", "ERROR"))
        else:
            out += TARGET_ROWS.get(name, _no_rows)(target, r)
    return out + RUN_ROWS.get(name, _no_rows)(figures)


def table_for(doc: dict[str, Any]) -> str:
    table = rows(doc)
    head = ("target", "metric", "value", "goal", "verdict")
    widths = [max(len(head[i]), *(len(r[i]) for r in table)) for i in range(5)] if table else [10] * 5
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    return "\n".join(lines)


def markdown_for(doc: dict[str, Any]) -> str:
    lines = ["| target | metric | value | goal | verdict |", "| --- | --- | --- | --- | --- |"]
    for r in rows(doc):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    return "\n".join(lines)


def load_results() -> dict[str, dict[str, Any]]:
    docs = {}
    for name in ORDER:
        path = RESULTS / f"{name}.json"
        if path.exists():
            docs[name] = json.loads(path.read_text())
    return docs


def commands_for(doc: dict[str, Any]) -> list[str]:
    seen = []
    for r in doc["figures"].get("targets", {}).values():
        cmds = [r["command"]] if "command" in r else [s["command"] for s in r.get("sizes", {}).values()]
        for c in cmds:
            if c not in seen:
                seen.append(c)
    return seen


def write_docs() -> None:
    from bench import docs_text

    docs = load_results()
    parts = [docs_text.HEADER]
    for name in ORDER:
        parts.append(docs_text.SECTIONS[name])
        doc = docs.get(name)
        if doc is None:
            parts.append("_Not run yet._\n")
            continue
        load = doc.get("load_average")
        seen = f"; 1-minute load average {load[0]:g} at the start, {load[1]:g} at the end" if load else ""
        parts.append(
            f"Run {doc['date']} on {doc['cores']} cores ({doc['machine']}), "
            f"`{doc['invocation']}`, {doc['elapsed_s']} s{seen}.\n"
        )
        parts.append(markdown_for(doc) + "\n")
        cmds = commands_for(doc)
        if cmds:
            parts.append("Servers: " + "; ".join(f"`{c}`" for c in cmds) + "\n")
    any_doc = next(iter(docs.values()), None)
    if any_doc:
        v = any_doc["versions"]
        parts.append("## Versions and settings\n")
        parts.append(", ".join(f"{k} {val}" for k, val in v.items()) + ".\n")
        parts.append(
            "Environment of every server and driver: "
            + ", ".join(f"`{k}={val}`" for k, val in any_doc["env"].items())
            + f"; uvicorn event loop `{any_doc['uvicorn_loop']}`.\n"
        )
    parts.append(docs_text.FOOTER)
    DOCS.write_text("\n".join(parts))
