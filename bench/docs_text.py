"""The prose of docs/benchmarks.md; the tables come from bench/results/*.json."""

HEADER = "# Benchmarks\n"
SECTIONS = {name: f"## {name}\n" for name in ("fanout", "push", "broadcast", "idle", "workers")}
FOOTER = ""
