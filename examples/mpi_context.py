"""Every MPI rank writes its context to one shared store, in direct and in aggregate mode.

Run it with::

    mpiexec -n 4 python examples/mpi_context.py --store redis://localhost:6379/0
    mpiexec -n 4 python examples/mpi_context.py --store postgresql://user@host/db
    mpiexec -n 4 python examples/mpi_context.py --store sqlite:///ctx.db --writer node
    mpiexec -n 8 python examples/mpi_context.py --store redis://localhost:6379/0 --writer 4

For each mode, every rank records ``--keys`` keys (``("row", i)``, stored as
``("rank", rank, "row", i)``) and commits; then the script checks that the
store holds exactly ``ranks * keys`` keys and that the merged view returned
to every rank is the same (its SHA-256 compared across ranks with an
allgather). Rank 0 prints one line per mode, then one JSON line with the
results. The namespaces it made are removed unless ``--keep`` is given. The
exit status is 1 on every rank when a check failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import uuid
from typing import Any

from mpi4py import MPI

from context_framework import open_store
from context_framework.keys import encode_key
from context_framework.mpi import MODES, MPIContext
from context_framework.values import dumps_json


def view_digest(view: list[tuple[Any, dict[str, Any]]]) -> str:
    """SHA-256 of a merged view: encoded keys and canonical JSON values, in order."""
    digest = hashlib.sha256()
    for key, metadata in view:
        digest.update(encode_key(key))
        digest.update(dumps_json(metadata).encode())
    return digest.hexdigest()


def run_mode(store: Any, comm: Any, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Write, commit, count and compare the merged view in one mode; the figures (on every rank)."""
    rank, size, n = comm.Get_rank(), comm.Get_size(), args.keys
    first = rank * n  # this rank's slice of a dataset of size * n rows
    items = [(("row", first + i), {"rank": rank, "step": "normalised", "i": i}) for i in range(n)]

    ctx = MPIContext(store.with_namespace(mode), comm, mode=mode, writer=args.writer)
    comm.Barrier()
    start = time.perf_counter()
    ctx.add_many(items)
    ctx.commit()  # collective: when it returns, every rank's keys are in the store
    seconds = time.perf_counter() - start

    view: list[tuple[Any, dict[str, Any]]] = ctx.merged_view()  # collective: the same list on every rank
    digests = comm.allgather(view_digest(view))
    types_ok = all(
        len(k) == 4 and k[0] == "rank" and type(k[1]) is int and type(k[3]) is int and v["rank"] == k[1]
        for k, v in view
    )
    stored = ctx.store.count() if rank == 0 else None
    seconds = comm.reduce(seconds, op=MPI.MAX, root=0)
    if not args.keep:
        ctx.clear()
    ctx.close()
    return {
        "expected": size * n,
        "stored": stored,
        "view_entries": len(view),
        "view_identical": len(set(digests)) == 1,
        "view_sha256": digests[0],
        "types_intact": types_ok,
        "seconds": seconds,
        "keys_per_s": size * n / seconds if seconds else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--store", required=True, help="store URL every rank can reach")
    parser.add_argument("--keys", type=int, default=10_000, help="keys per rank (default 10000)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--writer",
        type=lambda text: int(text) if text.isdigit() else text,
        default="root",
        help="aggregate mode: root, node, or K (one writer per K ranks)",
    )
    parser.add_argument("--namespace", help="namespace of this run (default: a random one)")
    parser.add_argument("--keep", action="store_true", help="leave the context in the store")
    args = parser.parse_args(argv)

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    namespace = comm.bcast(args.namespace or f"mpi_example_{uuid.uuid4().hex[:10]}", root=0)
    store = open_store(args.store).with_namespace(namespace)
    results = {}
    try:
        for mode in args.modes:
            r = results[mode] = run_mode(store, comm, mode, args)
            if rank == 0:
                print(
                    f"{mode:>9}: {size} ranks x {args.keys:,} keys -> {r['stored']:,} stored "
                    f"(expected {r['expected']:,}); merged view of {r['view_entries']:,} entries "
                    f"{'identical' if r['view_identical'] else 'DIFFERENT'} on every rank "
                    f"(sha256 {r['view_sha256'][:12]}); {r['seconds']:.2f} s, {r['keys_per_s']:,.0f} keys/s",
                    flush=True,
                )
    finally:
        store.close()
    ok = all(
        r["stored"] == r["expected"] == r["view_entries"] and r["view_identical"] and r["types_intact"]
        for r in results.values()
    )
    ok = comm.bcast(ok, root=0)
    if rank == 0:
        summary = {"ranks": size, "keys_per_rank": args.keys, "writer": args.writer}
        print(json.dumps({**summary, "namespace": namespace, "ok": ok, "modes": results}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
