"""Percentiles and latency summaries of the nanosecond durations the load generators send
(array('q') blobs), and the ratios between targets' throughputs."""

from __future__ import annotations

from array import array
from typing import Any


def percentile(sorted_values, q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def sorted_ns(blobs: list[bytes]) -> list[int]:
    """Nanosecond durations from the clients' array('q') blobs, in order, for percentiles."""
    values = array("q")
    for blob in blobs:
        values.frombytes(blob)
    return sorted(values)


def lat_stats(blobs: list[bytes]) -> dict[str, float]:
    ordered = sorted_ns(blobs)
    ms = 1e6
    return {
        "latency_p50_ms": percentile(ordered, 0.50) / ms,
        "latency_p99_ms": percentile(ordered, 0.99) / ms,
        "latency_max_ms": (ordered[-1] / ms) if ordered else 0.0,
    }


def spread_ms(blobs: list[bytes]) -> dict[str, float]:
    """p50 / p99 / max of nanosecond durations (array('q') blobs), in milliseconds."""
    ordered = sorted_ns(blobs)
    return {
        "p50_ms": round(percentile(ordered, 0.50) / 1e6, 2),
        "p99_ms": round(percentile(ordered, 0.99) / 1e6, 2),
        "max_ms": round((ordered[-1] if ordered else 0) / 1e6, 2),
    }


def rate_ratios(targets: dict[str, Any], pairs: list[tuple[str, str, str, int]]) -> dict[str, float]:
    """For each (key, a, b, digits): a's deliveries per second over b's, where both have a figure."""
    rate = {k: v.get("deliveries_per_s") for k, v in targets.items()}
    return {
        key: round(rate[a] / rate[b], digits) for key, a, b, digits in pairs if rate.get(a) and rate.get(b)
    }
