"""Smoke run of the benchmark workloads and the soak at tiny N (`python -m bench --quick`).

No timing assertions: only that every workload runs end to end against real
servers (daphne, uvicorn, the baselines) and that every delivery arrived,
exactly once and in order. Needs PostgreSQL and Redis, like the suite itself;
it uses a database of its own (the test database's name + `_bench_smoke`) and
a channel-layer prefix of its own per target, so it touches nothing else.
The chat targets run once the chat endpoint is merged; until then the
workloads report them as skipped.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("picows")

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(180)]


@pytest.fixture
def bench_database(monkeypatch):
    import dj_database_url

    url = os.environ.get("DATABASE_URL", "")
    name = dj_database_url.parse(url)["NAME"]
    monkeypatch.setenv("DATABASE_URL", url.rsplit("/", 1)[0] + f"/{name}_bench_smoke")
    monkeypatch.setenv("DJANGO_SECRET_KEY", "bench-smoke-secret-key")


def delivered(result: dict) -> None:
    assert result["all_delivered"], result
    assert result["received"] == result["expected"] > 0
    assert result["duplicates"] == 0
    assert result["out_of_order"] == 0


def test_fanout_quick(bench_database):
    from bench.workloads import run

    targets = run("fanout", quick=True)["targets"]
    # The *-overlap targets post while the room is still filling (issue 12).
    for name in ("channels-daphne", "channels-uvicorn", "websockets"):
        delivered(targets[name])
    delivered(targets["channels-daphne-overlap"])
    for name in ("service-daphne", "service-uvicorn", "service-daphne-overlap"):
        if "skipped" not in targets[name]:
            delivered(targets[name])


@pytest.mark.parametrize("workload", ["push", "broadcast"])
def test_notifications_quick(bench_database, workload):
    from bench.workloads import run

    targets = run(workload, quick=True)["targets"]
    assert set(targets) == {"daphne", "uvicorn"}
    for result in targets.values():
        delivered(result)


def test_idle_quick(bench_database):
    from bench.workloads import run

    for result in run("idle", quick=True)["targets"].values():
        assert result["sockets"] == result["requested"]
        assert result["errors"] == 0, result


def test_workers_quick(bench_database):
    from bench.workloads import run

    targets = run("workers", quick=True)["targets"]
    for name, target in targets.items():
        if "skipped" in target:
            assert name.startswith("service")
            continue
        for result in target["sizes"].values():
            assert result["all_delivered"], result


def test_joins_quick(bench_database):
    """The joins workload end to end: two realtime.serve workers, and plain Channels on two daphnes."""
    from bench.workloads import run

    targets = run("joins", quick=True)["targets"]
    assert set(targets) == {"service-serve-x2", "channels-daphne-x2"}
    for name, target in targets.items():
        if "skipped" in target:
            assert name.startswith("service")
            continue
        for passes in target["sizes"].values():
            for result in passes.values():
                delivered(result)
                assert result["joined"] == result["joins"], result["join_errors"]
                if name.startswith("service"):
                    # Every member's online list, kept from welcome + diffs, and the HTTP list.
                    assert result["online"]["ok"], result["online"]
                    assert result["online"]["truth"] == result["members"]
                    assert result["frames"]["presence"] > 0


def test_soak_quick(bench_database):
    """The soak script end to end at tiny N: two workers, reconnects, the database check."""
    from bench import soak

    args = ["--sockets", "8", "--rooms", "2", "--minutes", "0.1", "--sample-every", "2"]
    assert soak.main([*args, "--churn", "100", "--no-save"]) == 0


def test_ticker_quick(bench_database):
    """The ticker workload end to end: every subscriber ends on each topic's latest value, in order."""
    from bench.workloads import run

    figures = run("ticker", quick=True)
    assert set(figures["targets"]) == {"service-daphne", "channels-daphne", "websockets"}
    for result in figures["targets"].values():
        assert result.get("latest_everywhere"), result
        assert result["received"] > 0
        assert result["slow"]["caught_up"] == result["slow"]["sockets"], result["slow"]


def test_reconnect_quick(bench_database):
    """Both storms at tiny N: every client that lost its socket is back, and the service's lose nothing."""
    from bench.workloads import run

    targets = run("reconnect", quick=True)["targets"]
    assert set(targets) == {"service-daphne", "channels-daphne"}
    for name, target in targets.items():
        for storm in ("redis", "drain"):
            result = target[storm]
            assert result["back"] == result["dropped"], (name, storm, result)
            assert result["live_at_end"] == result["sockets"], (name, storm, result)
            if name == "service-daphne":
                assert result["dropped"] == result["must_drop"] > 0, (storm, result)
                check = result["check"]
                assert check["lost"] == check["duplicates"] == check["phantoms"] == 0, (storm, check)
                assert check["received"] == check["expected"] > 0, (storm, check)
    # Plain Channels' clients of the drained worker came back on the other one.
    drain = targets["channels-daphne"]["drain"]
    assert drain["dropped"] == drain["must_drop"] > 0, drain
