"""``ctx bench --engine spark,dask,mpi``: the spec's multi-process benchmark, per engine and store.

Each partition (Spark, Dask) or rank (MPI) writes ``keys`` row contexts to
one shared store; the section reports the total keys/s of the writers per
engine and store, next to one process writing the same keys with
``set_many`` in the same run. The work is done by the engines' own
benchmarks, wired here:

* Spark: :func:`~context_framework.bench.engine_spark.run_spark_bench`, a local
  Spark of ``min(workers, CPUs)`` cores running ``workers`` partitions;
* Dask: :func:`~context_framework.bench.engine_dask.run_dask_bench`, a
  ``LocalCluster`` of :data:`DASK_PROCESSES` worker processes running ``workers`` partitions;
* MPI: :func:`~context_framework.bench.engine_mpi.run_mpi_bench`, ``mpiexec -n workers``,
  one row per mode (every rank writes; rank 0 gathers and writes).

Every run starts its engine (Spark session, Dask cluster, ``mpiexec``) and
stops it: ``wall_s`` is that whole run, start-up included; ``write_s`` is the
window the keys/s is measured over. Only stores that separate processes can
share are used (all engines run on this machine, so SQLite is one of them);
an engine whose package or launcher is missing gives one "unavailable" row,
and a run that fails gives a "failed" row and a note, never an exception.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .targets import LABELS, cluster_url, parse_choices, tag

__all__ = [
    "DASK_PROCESSES",
    "ENGINES",
    "ENGINE_KEYS",
    "ENGINE_STORES",
    "ENGINE_WORKERS",
    "engine_cases",
    "engine_unavailable",
    "format_engines",
    "parse_engines",
    "run_engines",
]

#: Engines ``--engine`` knows, in the order of the table (``--engine all``).
ENGINES = ("spark", "dask", "mpi")
#: Stores whose data separate processes share.
ENGINE_STORES = ("sqlite", "redis", "redis-cluster", "postgres", "mysql")
#: Keys each partition or rank writes (``--engine-keys``), as the spec.
ENGINE_KEYS = 10_000
#: Partitions (Spark, Dask) or ranks (MPI) (``--engine-workers``).
ENGINE_WORKERS = 4
#: Worker processes of the Dask ``LocalCluster`` (fewer when there are fewer partitions).
DASK_PROCESSES = 2


def parse_engines(text: str) -> tuple[str, ...]:
    """``"dask, mpi"`` -> ``("dask", "mpi")``, ``"all"`` -> :data:`ENGINES`; ``ValueError`` on unknowns."""
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    if "all" in names:
        names = [*ENGINES, *(n for n in names if n != "all")]
    engines = parse_choices(",".join(names), ENGINES, "engine", f"{', '.join(ENGINES)} or all")
    return tuple(e for e in ENGINES if e in engines)


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def engine_unavailable(engine: str) -> str | None:
    """Why ``engine`` cannot run here (a missing package or launcher), or ``None``."""
    if engine == "spark":
        if _missing("pyspark"):
            return "pyspark is not installed (pip install pyspark)"
        java_home = os.environ.get("JAVA_HOME")
        if not shutil.which("java") and not (
            java_home and os.path.isfile(os.path.join(java_home, "bin", "java"))
        ):
            return "java not found: Spark needs a JVM (set JAVA_HOME or put java on PATH)"
        return None
    if engine == "dask":
        missing = _missing("dask", "distributed", "pandas")
        return (
            f"{', '.join(missing)} not installed (pip install 'dask[dataframe]' distributed)"
            if missing
            else None
        )
    if engine == "mpi":
        from ..mpi import find_mpiexec

        if _missing("mpi4py"):
            return "mpi4py is not installed (pip install mpi4py mpich)"
        return None if find_mpiexec() else "mpiexec not found (pip install mpich, or load your MPI)"
    raise ValueError(f"unknown engine {engine!r}")


def engine_cases(
    engines: tuple[str, ...], stores: tuple[str, ...], urls: Mapping[str, str]
) -> list[tuple[str, str]]:
    """The (engine, store) runs: shareable stores, server stores only when their server answered."""
    shared = [s for s in stores if s in ENGINE_STORES and (s == "sqlite" or s in urls)]
    return [(e, s) for e in engines for s in shared]


@contextmanager
def _run_url(store: str, urls: Mapping[str, str], workdir: str) -> Iterator[str]:
    """A URL of a fresh store every rank of one MPI run opens; removed on exit."""
    name = tag()
    if store == "sqlite":
        path = os.path.join(workdir, f"{name}.db")
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)
        return
    url = urls[store]
    sep = "&" if "?" in url else "?"
    if store.startswith("redis"):
        from ..redis_store import RedisContextStore

        url = cluster_url(url) if store == "redis-cluster" else url
        try:
            yield f"{url}{sep}namespace={name}"
        finally:
            redis = RedisContextStore.from_url(url, namespace=name)
            try:
                redis.clear()
            finally:
                redis.close()
        return
    from .sql_baseline import _drop_store_table

    try:
        yield f"{url}{sep}table={name}"
    finally:
        _drop_store_table(url, name)


def _entry(engine: str, store: str, **fields: Any) -> dict[str, Any]:
    return {"engine": engine, "mode": None, "store": store, "label": LABELS.get(store, store), **fields}


def _server_url(store: str, urls: Mapping[str, str]) -> str:
    """The URL Spark's and Dask's benchmarks take: they make (and remove) a fresh store on it themselves."""
    if store == "sqlite":
        return "sqlite://"  # a new file in a temporary directory
    return cluster_url(urls[store]) if store == "redis-cluster" else urls[store]


def _spark(
    store: str, urls: Mapping[str, str], workdir: str, keys: int, workers: int
) -> list[dict[str, Any]]:
    from .engine_spark import run_spark_bench

    start = time.perf_counter()
    r = run_spark_bench(_server_url(store, urls), partitions=workers, keys_per_partition=keys)
    wall = time.perf_counter() - start
    writers = f"{r['partitions']} partitions on {r['master']}"
    return [_from_job(r, "spark", store, writers, r["executor_processes"], wall)]


def _dask(store: str, urls: Mapping[str, str], workdir: str, keys: int, workers: int) -> list[dict[str, Any]]:
    from .engine_dask import run_dask_bench

    start = time.perf_counter()
    r = run_dask_bench(
        _server_url(store, urls),
        workers=min(DASK_PROCESSES, workers),
        partitions=workers,
        keys_per_partition=keys,
    )
    wall = time.perf_counter() - start
    writers = f"{r['partitions']} partitions on {r['workers']} worker processes"
    return [_from_job(r, "dask", store, writers, r["worker_processes"], wall)]


def _from_job(
    r: Mapping[str, Any], engine: str, store: str, writers: str, procs: int, wall: float
) -> dict[str, Any]:
    """A Spark or Dask result as a row of the section."""
    return _entry(
        engine,
        store,
        writers=writers,
        partitions=r["partitions"],
        processes=procs,
        keys_per_writer=r["keys_per_partition"],
        keys=r["keys"],
        keys_per_s=r["keys_per_s"],
        write_s=r["write_s"],
        job_s=r["job_s"],
        wall_s=wall,
        baseline_keys_per_s=r["baseline_keys_per_s"],
        ratio=r["ratio"],
        result=dict(r),
    )


def _mpi(store: str, urls: Mapping[str, str], workdir: str, keys: int, workers: int) -> list[dict[str, Any]]:
    from .engine_mpi import run_mpi_bench

    with _run_url(store, urls, workdir) as url:
        start = time.perf_counter()
        r = run_mpi_bench(url, ranks=workers, keys_per_rank=keys, repeat=1)
        wall = time.perf_counter() - start
    total = r["ranks"] * r["keys_per_rank"]
    single = r["modes"].get("single", {}).get("keys_per_s")
    entries = []
    for mode in ("direct", "aggregate"):
        m = r["modes"][mode]
        if m["stored"] != total:
            raise RuntimeError(f"{mode} mode: the store holds {m['stored']} keys after writing {total}")
        who = "every rank writes" if mode == "direct" else f"writer={r['writer']}"
        entries.append(
            _entry(
                "mpi",
                store,
                mode=mode,
                writers=f"{r['ranks']} ranks, {who}",
                partitions=r["ranks"],
                processes=r["ranks"],
                keys_per_writer=r["keys_per_rank"],
                keys=total,
                keys_per_s=m["keys_per_s"],
                write_s=m["seconds"],
                job_s=None,
                wall_s=wall,
                baseline_keys_per_s=single,
                ratio=m.get("vs_single"),
                result=r,
            )
        )
    return entries


_RUNNERS: dict[str, Callable[[str, Mapping[str, str], str, int, int], list[dict[str, Any]]]] = {
    "spark": _spark,
    "dask": _dask,
    "mpi": _mpi,
}


def run_engines(
    engines: tuple[str, ...],
    stores: tuple[str, ...],
    urls: Mapping[str, str],
    *,
    keys: int = ENGINE_KEYS,
    workers: int = ENGINE_WORKERS,
    workdir: str,
    notes: list[str],
    step: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One entry per engine run (MPI: per mode), or per engine that cannot run; notes say why."""
    left_out = [s for s in stores if s not in ENGINE_STORES]
    if left_out:
        notes.append(
            f"engines on {', '.join(left_out)}: left out (an in-process store cannot be shared by "
            "executor, worker or rank processes)"
        )
    results: list[dict[str, Any]] = []
    unavailable = {e: engine_unavailable(e) for e in engines}
    for engine, reason in unavailable.items():
        if reason:
            notes.append(f"engine {engine} unavailable: {reason}")
            results.append(_entry(engine, "", label="-", unavailable=reason))
    for engine, store in engine_cases(tuple(e for e in engines if not unavailable[e]), stores, urls):
        if step:
            step(f"{engine} on {store}")
        try:
            results += _RUNNERS[engine](store, urls, workdir, keys, workers)
        except Exception as exc:  # one failed run must not hide the others
            error = f"{type(exc).__name__}: {exc}"
            notes.append(f"engine {engine} on {store}: failed ({error[:1500]})")
            results.append(_entry(engine, store, error=error))
    return results


def format_engines(results: list[dict[str, Any]]) -> str:
    """The section's table: one row per engine run, "unavailable"/"failed" rows included."""
    from .spec_benchmark import _grid

    def num(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rows = [("Engine", "Store", "Writers", "Keys", "Keys/s", "vs 1 process", "Write s", "Job s", "Wall s")]
    for r in results:
        name = f"{r['engine']} {r['mode']}" if r.get("mode") else r["engine"]
        if "unavailable" in r or "error" in r:
            why = f"unavailable ({r['unavailable']})" if "unavailable" in r else "failed (see notes)"
            rows.append((name, r["label"], why, "-", "-", "-", "-", "-", "-"))
            continue
        rows.append(
            (
                name,
                r["label"],
                r["writers"],
                f"{r['keys']:,}",
                num(r["keys_per_s"], ",.0f"),
                f"{r['ratio']:.2f}x" if r.get("ratio") else "-",
                num(r["write_s"], ".3f"),
                num(r.get("job_s"), ".3f"),
                num(r["wall_s"], ".1f"),
            )
        )
    return _grid(rows)
