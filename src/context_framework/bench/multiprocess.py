"""``ctx bench --processes N``: N processes run the spec's loop on one shared store.

The parent creates the store (a SQLite file, a Redis namespace, a SQL table)
and hands it to N worker processes (``multiprocessing`` *spawn*: safe with
threads, the same on every OS, and the workers import only this module, so
no ``__main__`` guard is needed in the caller's script). A store pickles by
its configuration, so each worker opens its own connections to the same
data. Worker ``w`` works on its own key range, rows ``w*n .. (w+1)*n - 1``.

Phases are separated by a barrier that the parent also waits on: all workers
start their adds together, then their gets. A phase lasts from the first
worker's start to the last worker's end, read from the workers' own
``time.perf_counter_ns`` (a system-wide monotonic clock on Linux, macOS and
Windows); total throughput is entries over the two phases' durations. Each worker also times
every call with ``time.perf_counter_ns`` (one clock read per call) and the
parent reports latency percentiles, pooled and per process.

In batch mode a "call" is one ``add_context_many``/``get_context_many`` of
``batch_size`` entries; throughput still counts entries. In buffered mode the
final ``flush()`` is part of the add phase (its own time is reported too).
The in-memory store cannot be shared between processes: each worker gets its
own, and the result says ``"shared": false``.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from array import array
from collections.abc import Sequence
from contextlib import ExitStack
from threading import BrokenBarrierError
from typing import Any

from .modes import BUFFER, CACHE, MODES
from .targets import LABELS, open_target

__all__ = ["format_processes", "percentiles", "run_multiprocess_bench"]

#: Entries per ``add_context_many``/``get_context_many`` call in batch mode.
BATCH_SIZE = 1000
_START_TIMEOUT = 300.0  # spawning N interpreters that import pandas, on a busy machine


def percentiles(samples_ns: Sequence[int], points: Sequence[float] = (50, 99)) -> dict[str, float]:
    """Nearest-rank percentiles of latencies in ns, returned in microseconds (plus ``max``)."""
    if not samples_ns:
        return {f"p{p:g}": 0.0 for p in points} | {"max": 0.0}
    ordered = sorted(samples_ns)
    n = len(ordered)
    out = {f"p{p:g}": ordered[min(n - 1, max(0, math.ceil(n * p / 100) - 1))] / 1000 for p in points}
    out["max"] = ordered[-1] / 1000
    return out


def _timed_adds(adapter: Any, start: int, n: int) -> array[int]:
    lat = array("q", bytes(8 * n))
    add, clock = adapter.add_context, time.perf_counter_ns
    t = clock()
    for j in range(n):
        i = start + j
        add(("row", i), {"meta": f"value_{i}"})
        now = clock()
        lat[j] = now - t
        t = now
    return lat


def _timed_gets(adapter: Any, start: int, n: int) -> array[int]:
    lat = array("q", bytes(8 * n))
    get, clock = adapter.get_context, time.perf_counter_ns
    t = clock()
    for j in range(n):
        get(("row", start + j))
        now = clock()
        lat[j] = now - t
        t = now
    return lat


def _timed_batch_adds(adapter: Any, start: int, n: int, size: int) -> array[int]:
    lat, clock = array("q"), time.perf_counter_ns
    for lo in range(start, start + n, size):
        items = [(("row", i), {"meta": f"value_{i}"}) for i in range(lo, min(lo + size, start + n))]
        t = clock()
        adapter.add_context_many(items)
        lat.append(clock() - t)
    return lat


def _timed_batch_gets(adapter: Any, start: int, n: int, size: int) -> array[int]:
    lat, clock = array("q"), time.perf_counter_ns
    for lo in range(start, start + n, size):
        keys = [("row", i) for i in range(lo, min(lo + size, start + n))]
        t = clock()
        adapter.get_context_many(keys)
        lat.append(clock() - t)
    return lat


def _worker(
    index: int, store: Any, mode: str, num_ops: int, rows: int, batch_size: int, barrier: Any, queue: Any
) -> None:
    """One process: set up, then adds, then gets, each phase started by the barrier."""
    try:
        import pandas as pd

        from ..adapters.pandas_adapter import PandasContextAdapter

        wrapping: dict[str, Any] = {"buffer": BUFFER, "cache": CACHE} if mode == "buffered" else {}
        adapter = PandasContextAdapter(pd.DataFrame({"A": range(rows)}), store, **wrapping)
        start, flush_ns = index * num_ops, 0
        barrier.wait()
        clock = time.perf_counter_ns
        add_start = clock()
        if mode == "batch":
            adds = _timed_batch_adds(adapter, start, num_ops, batch_size)
        else:
            adds = _timed_adds(adapter, start, num_ops)
            if mode == "buffered":
                t = time.perf_counter_ns()
                adapter.flush()
                flush_ns = time.perf_counter_ns() - t
        add_end = clock()
        barrier.wait()
        get_start = clock()
        if mode == "batch":
            gets = _timed_batch_gets(adapter, start, num_ops, batch_size)
        else:
            gets = _timed_gets(adapter, start, num_ops)
        get_end = clock()
        barrier.wait()
        last = start + num_ops - 1
        adapter.close()
        if store.get(("row", last)) != {"meta": f"value_{last}"}:
            raise AssertionError(f"process {index} read back the wrong value for row {last}")
        store.close()
        spans = (add_start, add_end, get_start, get_end)
        queue.put((index, None, adds.tobytes(), gets.tobytes(), flush_ns, spans))
    except BaseException as exc:
        barrier.abort()
        queue.put((index, f"{type(exc).__name__}: {exc}", b"", b"", 0, (0, 0, 0, 0)))


def _collect(queue: Any, processes: list[Any], timeout: float) -> list[tuple[Any, ...]]:
    """The workers' reports (before joining them, so that none blocks on a full pipe)."""
    import queue as queue_module

    reports: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + timeout
    while len(reports) < len(processes):
        try:
            reports.append(queue.get(timeout=1.0))
        except queue_module.Empty:
            if time.monotonic() > deadline or not any(p.is_alive() for p in processes):
                break
    for p in processes:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
    return sorted(reports)


def run_multiprocess_bench(
    store: str,
    url: str | None = None,
    *,
    processes: int = 2,
    mode: str = "per-call",
    num_ops: int = 10_000,
    rows: int = 100_000,
    batch_size: int = BATCH_SIZE,
    workdir: str | None = None,
    timeout: float = 3600.0,
    target: Any = None,
) -> dict[str, Any]:
    """Run ``processes`` workers on one shared store of kind ``store``; return the measurements.

    ``num_ops`` is per process (each adds then gets its own ``num_ops`` rows).
    ``target``: a store to share instead of a fresh one of kind ``store``
    (it must pickle by configuration; it is neither cleared nor closed).
    Raises ``RuntimeError`` with the workers' errors when one fails.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if num_ops < 1 or batch_size < 1:
        raise ValueError("num_ops and batch_size must be at least 1")
    rows = max(rows, processes * num_ops)
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(processes + 1), ctx.Queue()
    with ExitStack() as stack:
        if target is None:
            target = stack.enter_context(open_target(store, url, workdir))
        workers = [
            ctx.Process(
                target=_worker,
                args=(w, target, mode, num_ops, rows, batch_size, barrier, queue),
                name=f"ctx-bench-{w}",
                daemon=True,
            )
            for w in range(processes)
        ]
        for p in workers:
            p.start()
        try:
            barrier.wait(timeout=_START_TIMEOUT)
            barrier.wait(timeout=timeout)
            barrier.wait(timeout=timeout)
            failed = None
        except BrokenBarrierError:
            failed = "a worker failed or timed out"
        reports = _collect(queue, workers, timeout=60.0 if failed else timeout)
    errors = [f"process {r[0]}: {r[1]}" for r in reports if r[1]]
    # A worker that failed breaks the barrier for the others: show the cause, not the echoes.
    errors = [e for e in errors if "BrokenBarrierError" not in e] or errors
    if failed or errors or len(reports) < processes:
        raise RuntimeError(
            f"{LABELS[store]} with {processes} processes: "
            + "; ".join(errors or [failed or f"only {len(reports)} of {processes} processes reported"])
        )
    entries = processes * num_ops
    # Phase windows from the workers' own clocks (perf_counter_ns is system-wide), first start
    # to last end: the parent may be scheduled late after a barrier on a busy machine.
    spans = [r[5] for r in reports]
    add_s = (max(s[1] for s in spans) - min(s[0] for s in spans)) / 1e9
    get_s = (max(s[3] for s in spans) - min(s[2] for s in spans)) / 1e9
    per_process, all_adds, all_gets = [], array("q"), array("q")
    for index, _, add_bytes, get_bytes, flush_ns, _spans in reports:
        adds, gets = array("q"), array("q")
        adds.frombytes(add_bytes)
        gets.frombytes(get_bytes)
        all_adds.extend(adds)
        all_gets.extend(gets)
        per_process.append(
            {
                "index": index,
                "add_us": percentiles(adds),
                "get_us": percentiles(gets),
                "flush_ms": flush_ns / 1e6,
            }
        )
    return {
        "store": LABELS[store],
        "backend": store,
        "mode": mode,
        "processes": processes,
        "ops_per_process": num_ops,
        "entries_per_call": batch_size if mode == "batch" else 1,
        "shared": store != "memory",
        "add_seconds": add_s,
        "get_seconds": get_s,
        "add_calls_per_second": entries / add_s,
        "get_calls_per_second": entries / get_s,
        "calls_per_second": 2 * entries / (add_s + get_s),
        "add_us": percentiles(all_adds),
        "get_us": percentiles(all_gets),
        "per_process": per_process,
    }


def _latency_cell(result: dict[str, Any], phase: str, point: str) -> str:
    pooled = result[f"{phase}_us"][point]
    values = [p[f"{phase}_us"][point] for p in result["per_process"]]
    return f"{pooled:,.1f} [{min(values):,.1f}-{max(values):,.1f}]"


def format_processes(results: list[dict[str, Any]]) -> str:
    """One row per store and mode: total calls/s and latency percentiles (pooled [per-process range])."""
    from .spec_benchmark import _grid

    header = (
        "Store",
        "Mode",
        "Processes",
        "Calls/s (total)",
        "Add p50 µs",
        "Add p99 µs",
        "Get p50 µs",
        "Get p99 µs",
    )
    rows = [header]
    for r in results:
        label = r["store"] if r["shared"] else f"{r['store']} (one per process)"
        mode = r["mode"] if r["entries_per_call"] == 1 else f"{r['mode']} ({r['entries_per_call']:,}/call)"
        rows.append(
            (
                label,
                mode,
                str(r["processes"]),
                f"{r['calls_per_second']:,.0f}",
                _latency_cell(r, "add", "p50"),
                _latency_cell(r, "add", "p99"),
                _latency_cell(r, "get", "p50"),
                _latency_cell(r, "get", "p99"),
            )
        )
    return _grid(rows)
