"""``ctx bench --engine spark``: Spark executors write context to one shared store.

The spec's multi-process benchmark on Spark: a local Spark (``local[cores]``,
one Python worker process per running task) runs one job over ``partitions``
partitions, and each partition's task writes ``keys_per_partition`` row
contexts (``{"meta": "value_i"}``, as in the spec's loop) through
:class:`~context_framework.adapters.spark_adapter.SparkContextAdapter`: the
store travels as its configuration, is opened once per executor Python
process, and each task commits its keys in batches (``set_many``).

Measured:

* ``write_s``: from the first task's first write to the last task's commit,
  read from the tasks' own ``time.perf_counter_ns`` (system-wide monotonic on
  Linux); ``keys_per_s`` is the total keys over it.
* ``job_s``: the driver's wall time of the whole job (planning, scheduling,
  Arrow transfer of the partitions, tasks, results); ``job_keys_per_s`` over it.
* ``baseline_keys_per_s``: the same keys written by one process (the driver)
  with ``set_many`` in the same batches, on the same store, in the same run;
  ``ratio`` is ``keys_per_s`` over it.
* ``per_call_keys_per_s``: the driver's spec loop (one ``add_context`` call
  per key) over ``keys_per_partition`` keys, on the same store.

Python worker start-up and each worker's first connection are kept out of the
timings (a warm-up job of the same shape runs first). Every run uses a fresh
namespace or table, removed afterwards, and checks that the store holds
exactly the keys written.

    python -m context_framework.bench.engine_spark redis://localhost:6379/0 --partitions 4
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import ExitStack
from typing import Any

from .engine_figures import (
    TIMING_COLUMNS,
    checked_baseline,
    engine_parser,
    result_header,
    timed_row_writes,
    write_figures,
    write_lines,
)
from .targets import open_target, store_kind

__all__ = ["format_spark_bench", "run_spark_bench"]

_TIMINGS = ", ".join(f"{c} long" for c in TIMING_COLUMNS)


def _timed_writes(frame: Any, ctx: Any) -> Any:
    """One task: the spec's values for every row of the partition, then the commit; timings back."""
    import pandas as pd

    start = time.perf_counter_ns()
    labels = frame["id"].tolist()
    return pd.DataFrame(timed_row_writes(ctx, labels, labels, start))


def _warm(frame: Any, ctx: Any) -> Any:
    """Start the Python workers and open the store in each (kept out of the timings)."""
    import pandas as pd

    ctx.store.count()
    zero = [0]
    return pd.DataFrame({"pid": [os.getpid()], "start": zero, "added": zero, "end": zero, "keys": zero})


def _per_call(adapter: Any, n: int) -> float:
    """Keys per second of the spec's loop on the driver: one ``add_context`` per key."""
    add = adapter.add_context
    start = time.perf_counter()
    for i in range(n):
        add(("row", i), {"meta": f"value_{i}"})
    return n / (time.perf_counter() - start)


def _session(cores: int) -> Any:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("context-framework-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def run_spark_bench(
    url: str,
    *,
    partitions: int = 4,
    keys_per_partition: int = 10_000,
    cores: int | None = None,
    batch_size: int = 10_000,
    spark: Any = None,
) -> dict[str, Any]:
    """Run the benchmark on the store of ``url``; return its figures (see the module docstring).

    ``cores``: tasks Spark runs at once (default: ``partitions``, at most the
    CPU count). ``spark``: an existing ``SparkSession`` to use instead of
    starting (and stopping) a local one.
    """
    from pyspark.sql import functions as F

    from ..adapters.spark_adapter import SparkContextAdapter

    kind = store_kind(url)
    total = partitions * keys_per_partition
    cores = cores or max(1, min(partitions, os.cpu_count() or 1))
    with ExitStack() as stack:
        store = stack.enter_context(open_target(kind, None if kind == "sqlite" else url))
        if spark is None:
            spark = _session(cores)
            stack.callback(spark.stop)
        master = spark.sparkContext.master
        df = spark.range(0, total, numPartitions=partitions).select(F.col("id"))
        adapter = SparkContextAdapter(df, store, row_column="id", batch_size=batch_size)
        adapter.map_partitions_with_context(_warm, _TIMINGS).collect()
        job_start = time.perf_counter()
        timings = adapter.map_partitions_with_context(_timed_writes, _TIMINGS).toPandas()
        job_s = time.perf_counter() - job_start
        baseline = checked_baseline(store, timings, total, batch_size)
        store.clear()
        per_call = _per_call(adapter, keys_per_partition)
    return {
        **result_header("spark", kind),
        "master": master,
        "executor_processes": int(timings["pid"].nunique()),
        **write_figures(timings, job_s, baseline, partitions, keys_per_partition, batch_size),
        "per_call_keys_per_s": per_call,
    }


def format_spark_bench(result: dict[str, Any]) -> str:
    """One readable line per figure."""
    r = result
    return "\n".join(
        [
            f"spark {r['master']}: {r['partitions']} partitions x {r['keys_per_partition']:,} keys "
            f"-> {r['label']} ({r['executor_processes']} executor processes)",
            *write_lines(r, "executors"),
            f"  driver per call   : {r['per_call_keys_per_s']:,.0f} keys/s (add_context loop)",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = engine_parser("python -m context_framework.bench.engine_spark", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--cores", type=int, default=None, help="tasks at once (default: partitions, <= CPUs)"
    )
    args = parser.parse_args(argv)
    result = run_spark_bench(
        args.url,
        partitions=args.partitions,
        keys_per_partition=args.keys,
        cores=args.cores,
        batch_size=args.batch_size,
    )
    print(json.dumps(result, indent=2) if args.json else format_spark_bench(result))


if __name__ == "__main__":
    main()
