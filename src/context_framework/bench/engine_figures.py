"""What the Spark and Dask benchmarks share: a task's timed writes, the one-process baseline, the figures.

Each task records the spec's values (``{"meta": "value_i"}``) for its rows and
commits, reporting one timing row (:data:`TIMING_COLUMNS`) read from its own
``time.perf_counter_ns``; :func:`write_figures` turns the rows into throughput
and :func:`write_lines` into readable lines.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from .targets import LABELS

__all__ = [
    "TIMING_COLUMNS",
    "baseline_keys_per_s",
    "checked_baseline",
    "engine_parser",
    "result_header",
    "spec_values",
    "timed_row_writes",
    "write_figures",
    "write_lines",
]

#: One timing row per task: its process, clock readings (ns) and keys committed.
TIMING_COLUMNS = ("pid", "start", "added", "end", "keys")


def spec_values(labels: Any) -> list[dict[str, str]]:
    """The spec's value for each row label: ``{"meta": "value_<label>"}``."""
    return [{"meta": f"value_{i}"} for i in labels]


def timed_row_writes(ctx: Any, rows: Any, labels: Any, start: int) -> dict[str, list[int]]:
    """Record the spec's values for ``rows`` (labelled ``labels``) through ``ctx`` and commit it.

    Returns the task's timing row (columns :data:`TIMING_COLUMNS`) from ``start``
    (``time.perf_counter_ns``) to the commit's end.
    """
    clock = time.perf_counter_ns
    ctx.add_row_context(rows, spec_values(labels))
    added = clock()
    keys = ctx.commit()
    end = clock()
    return {"pid": [os.getpid()], "start": [start], "added": [added], "end": [end], "keys": [keys]}


def baseline_keys_per_s(store: Any, total: int, batch_size: int) -> float:
    """Keys per second for one process writing the same entries with ``set_many``."""
    start = time.perf_counter()
    for lo in range(0, total, batch_size):
        store.set_many([(("row", i), {"meta": f"value_{i}"}) for i in range(lo, min(lo + batch_size, total))])
    return total / (time.perf_counter() - start)


def checked_baseline(store: Any, timings: Any, total: int, batch_size: int) -> float:
    """Check the store holds exactly the ``total`` keys the tasks wrote, clear it, measure the baseline."""
    stored = store.count()
    if stored != total or int(timings["keys"].sum()) != total:
        raise RuntimeError(f"the store holds {stored} keys after writing {total}")
    store.clear()
    return baseline_keys_per_s(store, total, batch_size)


def result_header(engine: str, kind: str) -> dict[str, Any]:
    """The first fields of a result: engine, store kind and our store's label."""
    return {"engine": engine, "store": kind, "label": LABELS[kind]}


def write_figures(
    timings: Any, job_s: float, baseline: float, partitions: int, keys_per_partition: int, batch_size: int
) -> dict[str, Any]:
    """The figures of one run from its tasks' timing rows (a pandas DataFrame) and the driver's timings."""
    total = partitions * keys_per_partition
    write_s = (int(timings["end"].max()) - int(timings["start"].min())) / 1e9
    commit_s = (timings["end"] - timings["added"]) / 1e9
    return {
        "partitions": partitions,
        "keys_per_partition": keys_per_partition,
        "keys": total,
        "batch_size": batch_size,
        "write_s": write_s,
        "keys_per_s": total / write_s,
        "job_s": job_s,
        "job_keys_per_s": total / job_s,
        "commit_s_median": float(commit_s.median()),
        "commit_s_max": float(commit_s.max()),
        "baseline_keys_per_s": baseline,
        "ratio": total / write_s / baseline,
    }


def write_lines(r: dict[str, Any], writers: str) -> list[str]:
    """The lines of :func:`write_figures`' figures; ``writers`` names who wrote ("workers"...)."""
    width = len(writers) + len(" writing ")
    return [
        f"  {writers + ' writing':<{width}}: {r['keys']:,} keys in {r['write_s']:.3f} s "
        f"= {r['keys_per_s']:,.0f} keys/s",
        f"  {'whole job':<{width}}: {r['job_s']:.3f} s = {r['job_keys_per_s']:,.0f} keys/s",
        f"  {'commit per task':<{width}}: median {r['commit_s_median']:.3f} s, max {r['commit_s_max']:.3f} s",
        f"  {'one process':<{width}}: {r['baseline_keys_per_s']:,.0f} keys/s (set_many); "
        f"{writers} / one process = {r['ratio']:.2f}",
    ]


def engine_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The command line both benchmarks share: the store URL, partitions, keys, batch size, ``--json``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("url", help="store URL (redis://, postgresql://, mysql://, sqlite:///path)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--keys", type=int, default=10_000, help="keys written per partition")
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser
