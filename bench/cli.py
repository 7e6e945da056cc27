"""`python -m bench [workload ...] [--quick] [--no-save]`: run, print, save, document."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import sys
import time
import traceback

from bench import report
from bench.common import RECORDED_ENV, RESULTS, bench_env, raise_nofile, versions
from bench.workloads import WORKLOADS, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("workloads", nargs="*", choices=[*WORKLOADS, []], help="default: all")
    parser.add_argument(
        "--quick", action="store_true", help="tiny N, for a smoke run (results are not saved)"
    )
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    names = args.workloads or list(WORKLOADS)
    save = not (args.quick or args.no_save)
    nofile = raise_nofile()
    # A SIGTERM becomes KeyboardInterrupt, so every `with Stack()` stops its servers.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    env = bench_env()
    meta = {
        "cores": os.cpu_count(),
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}",
        "nofile": nofile,
        "versions": versions(),
        "env": {k: env.get(k, "") for k in RECORDED_ENV},
        "uvicorn_loop": os.environ.get("BENCH_UVICORN_LOOP", "asyncio"),
        "invocation": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
    }
    failed = 0
    results = {}
    for name in names:
        started = time.monotonic()
        # The machine is shared: what else ran is part of the figures.
        load_start = os.getloadavg()[0]
        print(f"== {name} {'(quick)' if args.quick else ''}", flush=True)
        try:
            figures = run(name, args.quick)
            status = "ok"
        except KeyboardInterrupt:
            print("interrupted; servers and clients stopped", file=sys.stderr)
            return 130
        except Exception as exc:
            traceback.print_exc()
            figures = {"error": f"{type(exc).__name__}: {exc}"}
            status = "error"
            failed += 1
        doc = {
            "workload": name,
            "status": status,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "elapsed_s": round(time.monotonic() - started, 1),
            "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
            **meta,
            "figures": figures,
        }
        results[name] = doc
        print(report.table_for(doc), flush=True)
        if save:
            RESULTS.mkdir(parents=True, exist_ok=True)
            path = RESULTS / f"{name}.json"
            path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    if save:
        report.write_docs()
        print(f"wrote {RESULTS}/*.json and docs/benchmarks.md")
    return 1 if failed else 0
