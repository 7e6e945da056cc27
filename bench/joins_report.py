"""The joins workload's rows in the bench tables (bench/report.py draws them), with the issue's
goals for it (issue 12, "Done when")."""

from __future__ import annotations

from typing import Any

from bench.report import Row, _faults, _fmt, _verdict


def _mb(value: int) -> str:
    return f"{value / 1e6:,.2f} MB"


# The goals for the joins workload (issue 12, "Done when"), on the service.
JOINS_BYTES_MB_AT_1000 = 30
JOINS_QUIET_S_AT_1000 = 3.0
JOINS_BYTES_GROWTH_2000 = 4.5
JOINS_CPU_GROWTH = 1.5
JOINS_P99_MS_AT_2000 = 250


def _goal_row(target: str, metric: str, value: str, goal: str, ok: bool | None) -> Row:
    """A row whose goal applies only at some sizes: no goal, no verdict."""
    return (target, metric, value, goal, _verdict(ok) if goal else "")


def _presence_rows(target: str, n: str, a: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    """The service's presence traffic per join and the bytes and time of joining (the service only)."""
    head = f"{int(n):,} members"
    per = (
        f"{_fmt(a['presence_frames_per_join_per_member'])} frames, "
        f"{_fmt(a['presence_bytes_per_join_per_member'])} B / "
        f"{_fmt(b['presence_frames_per_join_per_member'])} frames, "
        f"{_fmt(b['presence_bytes_per_join_per_member'])} B"
    )
    sized = n == "1000"
    value = (
        f"{_mb(a['join_bytes'])} (welcome {_mb(a['bytes']['welcome'])}, presence "
        f"{_mb(a['bytes']['presence'])}) / {_mb(b['join_bytes'])}"
    )
    quiet = f"{_fmt(a['quiet_s'], ' s')} / {_fmt(b['quiet_s'], ' s')}"
    return [
        (target, f"{head}: presence per join per member, joins / storm", per, "", ""),
        _goal_row(
            target,
            f"{head}: bytes of joining, all members, joins / storm",
            value,
            f"≤ {JOINS_BYTES_MB_AT_1000} MB (joins)" if sized else "",
            sized and a["join_bytes"] <= JOINS_BYTES_MB_AT_1000 * 1e6,
        ),
        _goal_row(
            target,
            f"{head}: last join to quiet, joins / storm",
            quiet,
            f"≤ {JOINS_QUIET_S_AT_1000:g} s" if sized else "",
            sized and a["quiet_s"] is not None and a["quiet_s"] <= JOINS_QUIET_S_AT_1000,
        ),
    ]


def _storm_rows(target: str, n: str, b: dict[str, Any], service: bool) -> list[Row]:
    """How fast the storm's posts came back to their members, and how many the server took."""
    head = f"{int(n):,} members"
    lat = b["latency"]
    sized = n == "2000" and service
    value = f"{_fmt(lat['p50_ms'])} / {_fmt(lat['p99_ms'])} / {_fmt(lat['max_ms'])} ms"
    taken = (
        f"{_fmt(b['posts_taken_per_s'])}/s of {_fmt(b['post_rate'])}/s sent; "
        f"first / last post back {_fmt(b['first_post_echo_ms'])} / {_fmt(b['last_post_echo_ms'])} ms"
    )
    return [
        _goal_row(
            target,
            f"{head}: storm post delivery p50 / p99 / max",
            value,
            f"p99 ≤ {JOINS_P99_MS_AT_2000} ms" if sized else "",
            sized and lat["p99_ms"] <= JOINS_P99_MS_AT_2000,
        ),
        (target, f"{head}: storm posts taken by the server", taken, "", ""),
    ]


def _delivery_rows(target: str, n: str, a: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    """Whether every member got every post once in both passes, and what the workers logged."""
    head = f"{int(n):,} members"
    out: list[Row] = []
    for label, x in (("joins then posts", a), ("storm", b)):
        ok = x["all_delivered"] and not x.get("join_errors")
        out.append((target, f"{head}: deliveries, {label}", _faults(x), "all, once", _verdict(ok)))
    events = []
    for label, x in (("joins", a), ("storm", b)):
        logged = {k: v for k, v in x.get("server_log", {}).items() if v}
        if logged:
            events.append(f"{label}: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in logged.items()))
    if events:
        out.append((target, f"{head}: worker log", "; ".join(events), "none", _verdict(False)))
    return out


def _online_row(target: str, n: str, a: dict[str, Any], b: dict[str, Any]) -> Row:
    """Whether every member's online list matched who was connected (the service only)."""
    checks = []
    for x in (a, b):
        o = x["online"]
        text = f"{o['truth'] - o['members_wrong']:,}/{o['truth']:,} members right"
        if o["names_not_online"]:
            text += f", {o['names_not_online']:,} names not online"
        text += ", HTTP list right" if o.get("http_matches") else ", HTTP list WRONG"
        checks.append(text)
    settled = a["online"].get("settled", True) and b["online"].get("settled", True)
    ok = a["online"]["ok"] and b["online"]["ok"] and a["online"]["truth"] == int(n) if settled else None
    if not settled:
        checks.append("frames still arriving when compared")
    ghosts = [x.get("online_after_close") or 0 for x in (a, b)]
    if any(ghosts):
        checks.append(f"still online after all closed: {ghosts[0]:,} / {ghosts[1]:,}")
        ok = False
    return (
        target,
        f"{int(n):,} members: online lists, joins / storm",
        " / ".join(checks),
        "all right",
        _verdict(ok),
    )


def _size_rows(target: str, r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    service = target.startswith("service")
    for n, passes in sorted(r["sizes"].items(), key=lambda kv: int(kv[0])):
        a, b = passes["joins"], passes["storm"]
        head = f"{int(n):,} members"
        rate = f"{_fmt(a['join_rate_achieved'])} / {_fmt(b['join_rate_achieved'])} joins/s"
        hs = f"handshake p99 {_fmt(a['handshake']['p99_ms'])} / {_fmt(b['handshake']['p99_ms'])} ms"
        out.append((target, f"{head}: joins/s achieved, joins / storm", f"{rate}; {hs}", "", ""))
        if service:
            out += _presence_rows(target, n, a, b)
        cpu = f"{_fmt(a['cpu_per_join_ms'])} / {_fmt(b['cpu_per_join_ms'])} ms"
        out.append((target, f"{head}: worker CPU per join, joins / storm (posts included)", cpu, "", ""))
        out += _storm_rows(target, n, b, service)
        out += _delivery_rows(target, n, a, b)
        if service:
            out.append(_online_row(target, n, a, b))
    return out


def _stopped_row(target: str, r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    if "stopped" in r:
        out.append((target, "stopped (larger rooms not run)", r["stopped"][:300], "", "ERROR"))
    separate = r.get("separate_run")
    if separate:
        load = " / ".join(f"{x:g}" for x in separate["load_average"])
        text = (
            f"`{separate['invocation']}`, {separate['elapsed_s']} s, load average {load}: {separate['why']}"
        )
        out.append((target, "run separately", text, "", ""))
    return out


def ratio_rows(figures: dict[str, Any]) -> list[Row]:
    ratios = figures.get("ratios", {})
    out: list[Row] = []
    for target, values in ratios.items():
        service = target.startswith("service")
        for key, value in values.items():
            goal, ok = "", None
            if service and key.startswith("cpu_per_join_joins_"):
                goal, ok = f"≤ {JOINS_CPU_GROWTH:g}x", value is not None and value <= JOINS_CPU_GROWTH
            elif service and key.startswith("join_bytes_joins_"):
                goal, ok = (
                    f"≤ {JOINS_BYTES_GROWTH_2000:g}x",
                    value is not None and value <= JOINS_BYTES_GROWTH_2000,
                )
            label = key.replace("_", " ").replace(" vs ", " / ")
            out.append((target, label, _fmt(value, "x"), goal, _verdict(ok) if goal else ""))
    return out


def rows(target: str, r: dict[str, Any]) -> list[Row]:
    return _size_rows(target, r) + _stopped_row(target, r)
