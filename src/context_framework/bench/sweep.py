"""``ctx bench --sweep``: batch throughput of each store as a function of the batch size.

For each batch size ``b`` the same entries (``("row", i)`` → ``{"meta": ...}``)
are written with ``add_context_many`` in calls of ``b`` entries, then read
with ``get_context_many`` in calls of ``b`` keys, on a fresh store. Each size
moves at least ``num_ops`` entries in at least three calls, so that small
batches are not over in microseconds and big ones are not a single call. The
argument lists are built before the clock starts: what is timed is the
store's batch path (plus the adapter's key checks). Medians of ``repeat``
runs, interleaved over the sizes.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from .targets import LABELS, open_target

__all__ = ["SWEEP_SIZES", "format_sweep", "parse_sizes", "run_batch_sweep", "sweep_entries"]

SWEEP_SIZES = (1, 10, 100, 1000, 10_000)
_MIN_CALLS = 3


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"1,10,100"`` -> ``(1, 10, 100)``; ``ValueError`` for anything but positive integers."""
    sizes = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            size = int(part.replace("_", ""))
        except ValueError:
            raise ValueError(f"batch sizes are positive integers separated by commas, got {part!r}") from None
        if size < 1:
            raise ValueError(f"batch sizes must be at least 1, got {size}")
        sizes.append(size)
    if not sizes:
        raise ValueError("no batch size given")
    return tuple(sorted(set(sizes)))


def sweep_entries(size: int, num_ops: int) -> int:
    """How many entries the sweep moves at batch size ``size``."""
    return max(_MIN_CALLS, math.ceil(num_ops / size)) * size


def _run_once(adapter: Any, size: int, entries: int) -> tuple[float, float]:
    items = [(("row", i), {"meta": f"value_{i}"}) for i in range(entries)]
    item_chunks = [items[lo : lo + size] for lo in range(0, entries, size)]
    key_chunks = [[key for key, _ in chunk] for chunk in item_chunks]
    add_many, get_many = adapter.add_context_many, adapter.get_context_many
    start = time.perf_counter()
    for chunk in item_chunks:
        add_many(chunk)
    mid = time.perf_counter()
    for keys in key_chunks:
        values = get_many(keys)
    end = time.perf_counter()
    if values[-1] != {"meta": f"value_{entries - 1}"}:
        raise AssertionError(f"batch sweep (size {size}) read back the wrong value")
    return mid - start, end - mid


def run_batch_sweep(
    store: str,
    url: str | None = None,
    *,
    sizes: tuple[int, ...] = SWEEP_SIZES,
    num_ops: int = 10_000,
    repeat: int = 3,
    workdir: str | None = None,
    step: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One result per batch size: median add and get times and entries per second.

    ``step(label)`` is called before each run (for a progress bar).
    """
    import pandas as pd

    from ..adapters.pandas_adapter import PandasContextAdapter

    if repeat < 1 or num_ops < 1:
        raise ValueError("repeat and num_ops must be at least 1")
    entries = {size: sweep_entries(size, num_ops) for size in sizes}
    df = pd.DataFrame({"A": range(max(entries.values()))})
    timings: dict[int, list[tuple[float, float]]] = {size: [] for size in sizes}
    for r in range(repeat):
        for size in sizes:
            if step:
                step(f"{LABELS[store]} batch size {size:,} (run {r + 1}/{repeat})")
            with open_target(store, url, workdir) as target:
                timings[size].append(_run_once(PandasContextAdapter(df, target), size, entries[size]))
    results = []
    for size in sizes:
        add = statistics.median(t[0] for t in timings[size])
        get = statistics.median(t[1] for t in timings[size])
        n = entries[size]
        results.append(
            {
                "store": LABELS[store],
                "backend": store,
                "batch_size": size,
                "entries": n,
                "calls": n // size,
                "add_seconds": add,
                "get_seconds": get,
                "add_entries_per_second": n / add,
                "get_entries_per_second": n / get,
                "entries_per_second": 2 * n / (add + get),
            }
        )
    return results


def format_sweep(results: list[dict[str, Any]]) -> str:
    """One row per store and batch size: entries per second written, read, and both."""
    from .spec_benchmark import _grid

    header = ("Store", "Batch size", "Entries", "Add entries/s", "Get entries/s", "Add+get entries/s")
    rows = [header]
    for r in results:
        rates = (r["add_entries_per_second"], r["get_entries_per_second"], r["entries_per_second"])
        rows.append((r["store"], f"{r['batch_size']:,}", f"{r['entries']:,}", *(f"{x:,.0f}" for x in rates)))
    return _grid(rows)
