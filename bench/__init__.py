"""Benchmark suite for issues 6 and 12 (fan-out, push latency, broadcast, idle sockets, workers, joins).

Run with `make bench` or `python -m bench [workload ...] [--quick]`. See
docs/benchmarks.md for what each workload measures and the latest figures.
"""
