"""``ctx bench --engine dask``: Dask workers write context to one shared store.

The spec's multi-process benchmark on Dask: a ``distributed.LocalCluster`` of
``workers`` processes (one thread each) runs a job over ``partitions``
partitions, and each partition's task writes ``keys_per_partition`` row
contexts (``{"meta": "value_i"}``, as in the spec's loop) through
:class:`~context_framework.adapters.dask_adapter.DaskContextAdapter`: the
store travels as its configuration, is opened once per worker process, and
each task commits its keys in batches (``set_many``).

Measured:

* ``write_s``: from the first task's first write to the last task's commit,
  read from the workers' own ``time.perf_counter_ns`` (system-wide monotonic on
  Linux); ``keys_per_s`` is the total keys over it.
* ``job_s``: the driver's wall time of the whole job (graph, scheduling,
  tasks, results); ``job_keys_per_s`` over it.
* ``baseline_keys_per_s``: the same keys written by one process (the driver)
  with ``set_many`` in the same batches, on the same store, in the same run;
  ``ratio`` is ``keys_per_s`` over it.

Worker start-up and the store's first connection in each worker are kept out
of the timings (a warm-up opens the store on every worker first). Every run
uses a fresh namespace or table, removed afterwards, and checks that the store
holds exactly the keys written.

The cluster starts worker processes: call :func:`run_dask_bench` from code
under ``if __name__ == "__main__":`` (as this module's own entry point does).
"""

from __future__ import annotations

import json
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

__all__ = ["format_dask_bench", "run_dask_bench"]


def _partition(number: int, size: int) -> Any:
    import numpy as np
    import pandas as pd

    start = number * size
    return pd.DataFrame(
        {"A": np.arange(start, start + size, dtype="int64")}, index=range(start, start + size)
    )


def _timed_writes(part: Any, ctx: Any) -> Any:
    """One task: the spec's values for every row of the partition, then the commit; timings back."""
    import pandas as pd

    start = time.perf_counter_ns()
    return pd.DataFrame(timed_row_writes(ctx, None, part.index, start), index=[ctx.number])


def _warm(store_ref: Any) -> None:
    store_ref.open().count()  # connect, and import what the tasks need
    import context_framework.adapters.dask_adapter  # noqa: F401


def run_dask_bench(
    url: str,
    *,
    workers: int = 2,
    partitions: int = 4,
    keys_per_partition: int = 10_000,
    batch_size: int = 10_000,
    client: Any = None,
) -> dict[str, Any]:
    """Run the benchmark on the store of ``url``; return its figures (see the module docstring).

    ``client``: an existing ``distributed.Client`` to use instead of starting a
    ``LocalCluster`` of ``workers`` processes.
    """
    import dask.dataframe as dd
    import distributed
    import pandas as pd

    from ..adapters.dask_adapter import DaskContextAdapter
    from ..distributed import StoreRef

    kind = store_kind(url)
    total = partitions * keys_per_partition
    with ExitStack() as stack:
        store = stack.enter_context(open_target(kind, None if kind == "sqlite" else url))
        if client is None:
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=None
                )
            )
            client = stack.enter_context(distributed.Client(cluster))
        nworkers = len(client.scheduler_info(n_workers=-1)["workers"])
        client.run(_warm, StoreRef(store))
        ddf = dd.from_map(_partition, range(partitions), args=(keys_per_partition,))
        adapter = DaskContextAdapter(ddf, store, batch_size=batch_size)
        meta = pd.DataFrame({c: pd.Series([], dtype="int64") for c in TIMING_COLUMNS})
        job_start = time.perf_counter()
        timings = adapter.map_partitions_with_context(_timed_writes, meta=meta).compute()
        job_s = time.perf_counter() - job_start
        baseline = checked_baseline(store, timings, total, batch_size)
    return {
        **result_header("dask", kind),
        "workers": nworkers,
        "worker_processes": int(timings["pid"].nunique()),
        **write_figures(timings, job_s, baseline, partitions, keys_per_partition, batch_size),
    }


def format_dask_bench(result: dict[str, Any]) -> str:
    """One readable line per figure."""
    r = result
    return "\n".join(
        [
            f"dask: {r['workers']} workers, {r['partitions']} partitions x {r['keys_per_partition']:,} keys "
            f"-> {r['label']}",
            *write_lines(r, "workers"),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = engine_parser("python -m context_framework.bench.engine_dask", __doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    result = run_dask_bench(
        args.url,
        workers=args.workers,
        partitions=args.partitions,
        keys_per_partition=args.keys,
        batch_size=args.batch_size,
    )
    print(json.dumps(result, indent=2) if args.json else format_dask_bench(result))


if __name__ == "__main__":
    main()
