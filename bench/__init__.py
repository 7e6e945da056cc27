"""Benchmark suite for issue 6 (fan-out, push latency, broadcast, idle sockets, workers).

Run with `make bench` or `python -m bench [workload ...] [--quick]`. See
docs/benchmarks.md for what each workload measures and the latest figures.
"""
