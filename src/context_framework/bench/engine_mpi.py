"""The spec's MPI benchmark: ``mpiexec -n N``, every rank writes its keys to one shared store.

:func:`run_mpi_bench` launches ``mpiexec`` on this module; each rank opens the
store, records ``keys_per_rank`` keys through :class:`~context_framework.mpi.MPIContext`
and commits, in each mode. Rank 0 prints one JSON line that the launcher
parses. Per mode it reports:

* ``seconds``: from a barrier before the first write to the end of the
  collective commit (when every rank's keys are in the store), the median of
  ``repeat`` runs; ``keys_per_s`` is ``ranks * keys_per_rank`` over it;
* ``gather_s`` / ``write_s``: the slowest rank's time in MPI gathers and in
  store calls (aggregate mode: the writer's time is ``write_s``);
* ``view_s``: one ``merged_view()`` (rank 0 reads the namespace, broadcasts it);
* ``stored``: the store's count after the commit (must be ``ranks * keys_per_rank``).

The ``single`` baseline, measured in the same run, is rank 0 alone sending all
``ranks * keys_per_rank`` entries with ``set_many`` in batches (the other
ranks idle): the single-writer ceiling of this store, against which
``vs_single`` compares each mode.

    python -m context_framework.bench.engine_mpi --store redis://localhost:6379/0 --ranks 1 2 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

__all__ = ["format_mpi_bench", "run_mpi_bench"]

_MARKER = "MPI_BENCH_RESULT "


def run_mpi_bench(
    url: str,
    *,
    ranks: int = 4,
    keys_per_rank: int = 10_000,
    modes: Sequence[str] = ("direct", "aggregate"),
    writer: str | int = "root",
    batch_size: int = 10_000,
    repeat: int = 1,
    baseline: bool = True,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Run the benchmark under ``mpiexec -n ranks`` and return its results.

    Raises ``RuntimeError`` when ``mpiexec`` is missing or the run fails (with its output).
    """
    from ..exceptions import ContextConfigurationError
    from ..mpi import MODES, WRITERS, find_mpiexec

    bad = [m for m in modes if m not in MODES]
    if bad or (writer not in WRITERS and not (type(writer) is int and writer > 0)):
        raise ContextConfigurationError(
            f"modes must be among {MODES}, writer one of {WRITERS} or a positive int (ranks per writer)"
        )
    if ranks < 1 or keys_per_rank < 1 or batch_size < 1 or repeat < 1:
        raise ContextConfigurationError("ranks, keys_per_rank, batch_size and repeat must be positive")
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise RuntimeError("mpiexec not found: pip install 'context-framework[mpi]' (or load your MPI)")
    config = {
        "url": url,
        "keys": keys_per_rank,
        "modes": list(modes),
        "writer": writer,
        "batch_size": batch_size,
        "repeat": repeat,
        "baseline": baseline,
        "namespace": f"ctxbench_mpi_{uuid.uuid4().hex[:10]}",
    }
    cmd = [
        mpiexec,
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "context_framework.bench.engine_mpi",
        "--rank-program",
        json.dumps(config),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"mpiexec -n {ranks} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1][len(_MARKER) :])
    result["store"] = urlsplit(url).scheme
    result["namespace"] = config["namespace"]
    return result


def format_mpi_bench(result: dict[str, Any]) -> str:
    """A text table of one :func:`run_mpi_bench` result."""
    head = (
        f"MPI: {result['ranks']} ranks x {result['keys_per_rank']:,} keys on {result['store']} "
        f"(writer={result['writer']}, batch {result['batch_size']:,}, median of {result['repeat']})"
    )
    columns = ("keys/s", 10), ("seconds", 8), ("vs single", 9), ("gather", 7), ("write", 7), ("view", 7)
    rows = [
        head,
        f"{'mode':>10} " + " ".join(f"{name:>{width}}" for name, width in columns) + f" {'stored':>8}",
    ]
    for mode, r in result["modes"].items():
        ratio = f"{r['vs_single']:.2f}x" if r.get("vs_single") else "-"
        rows.append(
            f"{mode:>10} {r['keys_per_s']:>10,.0f} {r['seconds']:>8.3f} {ratio:>9} {r['gather_s']:>7.3f} "
            f"{r['write_s']:>7.3f} {r.get('view_s', 0):>7.3f} {r['stored']:>8,}"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------- rank program


def _idle_barrier(comm: Any) -> None:
    """A barrier that sleeps while it waits (MPI's own spins a core)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.001)


def _rank_program(config: dict[str, Any]) -> None:
    from mpi4py import MPI

    from ..mpi import MPIContext
    from ..registry import open_store

    comm = MPI.COMM_WORLD
    rank, size, n = comm.Get_rank(), comm.Get_size(), config["keys"]
    store = open_store(config["url"]).with_namespace(config["namespace"])
    items = [(("row", rank * n + i), {"meta": f"value_{rank * n + i}"}) for i in range(n)]
    results: dict[str, Any] = {}
    try:
        if config["baseline"]:
            results["single"] = _single_writer(store.with_namespace("single"), comm, n, config)
        for mode in config["modes"]:
            runs = []
            for rep in range(config["repeat"]):
                ctx = MPIContext(
                    store.with_namespace(f"{mode}/{rep}"),
                    comm,
                    mode=mode,
                    writer=config["writer"],
                    batch_size=config["batch_size"],
                )
                _idle_barrier(comm)
                start = time.perf_counter()
                ctx.add_many(items)
                ctx.commit()
                _idle_barrier(comm)
                seconds = time.perf_counter() - start
                gather_s = comm.allreduce(ctx.stats["gather_s"], op=MPI.MAX)
                write_s = comm.allreduce(ctx.stats["write_s"], op=MPI.MAX)
                stored = ctx.store.count() if rank == 0 else 0
                _idle_barrier(comm)
                start = time.perf_counter()
                ctx.merged_view()
                view_s = time.perf_counter() - start
                ctx.clear()
                ctx.close()
                runs.append((seconds, gather_s, write_s, view_s, stored))
            seconds = statistics.median(r[0] for r in runs)
            results[mode] = {
                "seconds": seconds,
                "keys_per_s": size * n / seconds,
                "gather_s": statistics.median(r[1] for r in runs),
                "write_s": statistics.median(r[2] for r in runs),
                "view_s": statistics.median(r[3] for r in runs),
                "stored": min(r[4] for r in runs),
                "samples": [r[0] for r in runs],
            }
    finally:
        store.close()
    if rank == 0:
        single = results.get("single")
        for mode in config["modes"]:
            if single:
                results[mode]["vs_single"] = results[mode]["keys_per_s"] / single["keys_per_s"]
        out = {k: config[k] for k in ("writer", "batch_size", "repeat")}
        out.update(ranks=size, keys_per_rank=n, modes=results)
        print(_MARKER + json.dumps(out), flush=True)


def _single_writer(store: Any, comm: Any, n: int, config: dict[str, Any]) -> dict[str, Any]:
    """Rank 0 alone sends every rank's entries in batches; the others wait."""
    rank, size, batch = comm.Get_rank(), comm.Get_size(), config["batch_size"]
    runs = []
    pairs = []
    if rank == 0:
        pairs = [
            (("rank", r, "row", r * n + i), {"meta": f"value_{r * n + i}"})
            for r in range(size)
            for i in range(n)
        ]
    for _ in range(config["repeat"]):
        _idle_barrier(comm)
        start = time.perf_counter()
        if rank == 0:
            for i in range(0, len(pairs), batch):
                store.set_many(pairs[i : i + batch])
        _idle_barrier(comm)
        seconds = time.perf_counter() - start
        if rank == 0:
            runs.append((seconds, store.count()))
            store.clear()
        _idle_barrier(comm)
    if rank != 0:
        return {}
    seconds = statistics.median(r[0] for r in runs)
    return {
        "seconds": seconds,
        "keys_per_s": size * n / seconds,
        "gather_s": 0.0,
        "write_s": seconds,
        "stored": min(r[1] for r in runs),
        "samples": [r[0] for r in runs],
    }


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="MPI ranks writing to one shared store (the spec's HPC test)"
    )
    parser.add_argument("--rank-program", help=argparse.SUPPRESS)
    parser.add_argument(
        "--store", help="store URL every rank can reach (redis://, postgresql://, sqlite:///)"
    )
    parser.add_argument("--ranks", type=int, nargs="+", default=[4], help="rank counts to run (default 4)")
    parser.add_argument("--keys", type=int, default=10_000, help="keys per rank (default 10000)")
    parser.add_argument(
        "--modes", nargs="+", default=["direct", "aggregate"], choices=("direct", "aggregate")
    )
    parser.add_argument(
        "--writer", default="root", help="aggregate mode: root, node, or K (one writer per K ranks)"
    )
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; the median is reported")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of tables")
    args = parser.parse_args(argv)
    if args.rank_program:
        _rank_program(json.loads(args.rank_program))
        return 0
    if not args.store:
        parser.error("--store is required")
    for ranks in args.ranks:
        result = run_mpi_bench(
            args.store,
            ranks=ranks,
            keys_per_rank=args.keys,
            modes=args.modes,
            writer=int(args.writer) if args.writer.isdigit() else args.writer,
            batch_size=args.batch_size,
            repeat=args.repeat,
        )
        print(json.dumps(result) if args.json else format_mpi_bench(result) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
