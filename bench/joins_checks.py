"""What a `joins` run checks its members against: the room's online list and stored message ids
over HTTP (as the room page reads them), each member's online list against who is connected
(`check_online`), and the events the workers log that a user would notice."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
import urllib.request
from bisect import bisect_right
from typing import Any

from bench.joins_member import user_index
from realtime.launcher import Worker

# After the sockets close, everyone must be offline within this long: more than
# PRESENCE_TTL_SECONDS (60), so an entry still there is being kept alive, not expiring.
EMPTY_S = 90.0


def get_json(port: int, path: str, query: dict[str, str], cookie: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback
        return json.loads(answer.read())


def online_list(port: int, slug: str, cookie: str) -> tuple[list[str], int]:
    """The room's whole online list over HTTP, a page at a time, as the room page reads it."""
    names: list[str] = []
    query = {"limit": "1000"}
    count = 0
    for _ in range(100):  # 100,000 names at most: bounded
        page = get_json(port, f"/api/chat/rooms/{slug}/online/", query, cookie)
        names += page["results"]
        count = page["online_count"]
        if page["next_after"] is None:
            break
        query["after"] = page["next_after"]
    return names, count


def room_ids(port: int, slug: str, cookie: str, floor: int) -> list[int]:
    """The ids of the room's messages above `floor`, from its history over HTTP (what is stored)."""
    ids: list[int] = []
    query = {"limit": "100"}
    for _ in range(1000):  # 100,000 messages at most: bounded
        page = get_json(port, f"/api/chat/rooms/{slug}/messages/", query, cookie)
        ids += [m["id"] for m in page["results"] if m["id"] > floor]
        if page["next_before"] is None or any(m["id"] <= floor for m in page["results"]):
            break
        query["before"] = str(page["next_before"])
    return sorted(ids)


def wait_empty(port: int, slug: str, cookie: str, limit: float = EMPTY_S) -> int:
    """Poll (bounded) until nobody is online in the room; returns who still is."""
    deadline = time.monotonic() + limit
    count = -1
    while time.monotonic() < deadline:
        count = online_list(port, slug, cookie)[1]
        if count == 0:
            break
        time.sleep(0.25)
    return count


def check_online(members: list[dict[str, Any]], http: tuple[list[str], int] | None) -> dict[str, Any]:
    """Each member's online list (welcome + diffs) against the truth: the members still connected.

    A member must know every user whose handshake began after its own welcome (their
    joins come after its own, so it is told of each), and nobody who is not online;
    one whose welcome named everyone and who never got a truncated frame must know
    exactly the truth. Every member's count must be the truth's.
    """
    truth = 0
    for m in members:
        if not m["dead"]:
            truth |= 1 << m["index"]
    n_truth = truth.bit_count()
    # Who began joining after a given moment: suffix unions over the start times.
    order = sorted(members, key=lambda m: m["t_start"])
    starts = [m["t_start"] for m in order]
    suffix = [0] * (len(order) + 1)
    for i in range(len(order) - 1, -1, -1):
        suffix[i] = suffix[i + 1] | (1 << order[i]["index"])
    out = dict.fromkeys(
        (
            "members_wrong",
            "count_wrong",
            "names_missing",
            "names_not_online",
            "members_missing_names",
            "complete_members",
            "complete_wrong",
            "truncated_frames",
        ),
        0,
    )
    for m in members:
        out["truncated_frames"] += m["truncated"]
        if m["dead"]:
            continue
        known = int.from_bytes(m["known"], "little")
        wrong = m["count"] != n_truth
        out["count_wrong"] += 1 if wrong else 0
        stray = (known & ~truth).bit_count()
        out["names_not_online"] += stray
        wrong = wrong or stray > 0
        if not m["truncated"]:
            later = suffix[bisect_right(starts, m["t_welcome"])] & truth
            missing = (later & ~known).bit_count()
            out["names_missing"] += missing
            out["members_missing_names"] += 1 if missing else 0
            wrong = wrong or missing > 0
            if m["welcome_complete"]:
                out["complete_members"] += 1
                out["complete_wrong"] += 1 if known != truth else 0
                wrong = wrong or known != truth
        out["members_wrong"] += 1 if wrong else 0
    out["truth"] = n_truth
    if http is not None:
        names, count = http
        listed = 0
        for name in names:
            i = user_index(name)
            if i >= 0:
                listed |= 1 << i
        out["http_count"] = count
        out["http_names"] = len(names)
        out["http_matches"] = listed == truth and count == n_truth and len(names) == n_truth
    out["ok"] = (
        out["count_wrong"] == 0
        and out["names_missing"] == 0
        and out["names_not_online"] == 0
        and out["complete_wrong"] == 0
        and out.get("http_matches", True)
    )
    return out


# Worker log lines that say a user saw something go wrong (realtime.serve and daphne).
LOG_EVENTS = {
    "unexpected_errors": "unexpected error endpoint=",
    "application_errors": "Exception inside application",
    "instances_killed": "took too long to shut down and was killed",
    "slow_clients_dropped": "event=slow_client_dropped",
}


class LogWatch:
    """Counts LOG_EVENTS in the workers' logs since the last call."""

    def __init__(self, servers: list[Worker]) -> None:
        self.servers = servers
        self.offsets = [0] * len(servers)

    def take(self) -> dict[str, int]:
        counts = dict.fromkeys(LOG_EVENTS, 0)
        for i, server in enumerate(self.servers):
            with contextlib.suppress(OSError), server.log_path.open("rb") as log:
                log.seek(self.offsets[i])
                text = log.read().decode(errors="replace")
                self.offsets[i] = log.tell()
            for key, needle in LOG_EVENTS.items():
                counts[key] += text.count(needle)
        return counts
