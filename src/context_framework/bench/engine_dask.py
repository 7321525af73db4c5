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

import argparse
import json
import os
import time
from contextlib import ExitStack
from typing import Any

from .targets import LABELS, open_target

__all__ = ["format_dask_bench", "run_dask_bench", "store_kind"]


def store_kind(url: str) -> str:
    """The ``ctx bench`` store name of a URL (``redis://`` -> ``"redis"``...)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme.startswith("redis"):
        return "redis-cluster" if "+cluster" in scheme else "redis"
    if scheme.startswith("postgres"):
        return "postgres"
    if scheme.startswith("mysql") or scheme.startswith("mariadb"):
        return "mysql"
    if scheme == "sqlite":
        return "sqlite"
    raise ValueError(
        f"{url.split('://', 1)[0]}:// cannot be shared by worker processes; "
        "use redis://, postgresql://, mysql:// or sqlite:///path"
    )


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

    clock = time.perf_counter_ns
    start = clock()
    ctx.add_row_context(None, [{"meta": f"value_{i}"} for i in part.index])
    added = clock()
    keys = ctx.commit()
    end = clock()
    return pd.DataFrame(
        {"pid": [os.getpid()], "start": [start], "added": [added], "end": [end], "keys": [keys]},
        index=[ctx.number],
    )


def _warm(store_ref: Any) -> None:
    store_ref.open().count()  # connect, and import what the tasks need
    import context_framework.adapters.dask_adapter  # noqa: F401


def _baseline(store: Any, total: int, batch_size: int) -> float:
    """Keys per second for one process writing the same entries with ``set_many``."""
    start = time.perf_counter()
    for lo in range(0, total, batch_size):
        store.set_many([(("row", i), {"meta": f"value_{i}"}) for i in range(lo, min(lo + batch_size, total))])
    return total / (time.perf_counter() - start)


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
        meta = pd.DataFrame(
            {c: pd.Series([], dtype="int64") for c in ("pid", "start", "added", "end", "keys")}
        )
        job_start = time.perf_counter()
        timings = adapter.map_partitions_with_context(_timed_writes, meta=meta).compute()
        job_s = time.perf_counter() - job_start
        stored = store.count()
        if stored != total or int(timings["keys"].sum()) != total:
            raise RuntimeError(f"the store holds {stored} keys after writing {total}")
        store.clear()
        baseline = _baseline(store, total, batch_size)
    write_s = (int(timings["end"].max()) - int(timings["start"].min())) / 1e9
    commit_s = (timings["end"] - timings["added"]) / 1e9
    return {
        "engine": "dask",
        "store": kind,
        "label": LABELS[kind],
        "workers": nworkers,
        "worker_processes": int(timings["pid"].nunique()),
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


def format_dask_bench(result: dict[str, Any]) -> str:
    """One readable line per figure."""
    r = result
    return "\n".join(
        [
            f"dask: {r['workers']} workers, {r['partitions']} partitions x {r['keys_per_partition']:,} keys "
            f"-> {r['label']}",
            f"  workers writing : {r['keys']:,} keys in {r['write_s']:.3f} s = {r['keys_per_s']:,.0f} keys/s",
            f"  whole job       : {r['job_s']:.3f} s = {r['job_keys_per_s']:,.0f} keys/s",
            f"  commit per task : median {r['commit_s_median']:.3f} s, max {r['commit_s_max']:.3f} s",
            f"  one process     : {r['baseline_keys_per_s']:,.0f} keys/s (set_many); "
            f"workers / one process = {r['ratio']:.2f}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m context_framework.bench.engine_dask", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("url", help="store URL (redis://, postgresql://, mysql://, sqlite:///path)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--keys", type=int, default=10_000, help="keys written per partition")
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
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
