"""MPI ranks writing context to one shared store (mpi4py).

``MPIContext(store, comm)`` is every rank's handle; it is made, committed and
read **collectively** (every rank of ``comm`` makes the same calls)::

    from mpi4py import MPI
    from context_framework.mpi import MPIContext

    with MPIContext("redis://host:6379/0", MPI.COMM_WORLD, mode="aggregate") as ctx:
        for i in my_rows:
            ctx.add(("row", i), {"source": "step 3"})   # stored as ("rank", rank, "row", i)
        ctx.commit()                                    # collective
        view = ctx.merged_view()                        # the same list on every rank

Key scoping. The context of a communicator lives in the store namespace named
after it (``comm.Get_name()``, ``"MPI_COMM_WORLD"`` for the world; a derived
communicator needs ``comm.Set_name(...)`` or ``name=``), and a rank's keys are
``("rank", rank, *key)`` with its rank in that communicator, so ranks never
overwrite each other and ``("rank", r)`` is a prefix scan of rank ``r``'s
context. ``scoped=False`` writes a key as given (e.g. a job-level key).

Modes (``mode=``):

* ``"direct"``: every rank sends its writes to the store itself, with
  ``set_many`` in batches of ``batch_size`` (a batch leaves as soon as it is
  full, the rest at ``commit``). Throughput grows with ranks until the store
  saturates; the store sees one client per rank.
* ``"aggregate"``: ranks keep their writes until ``commit``, then gather them
  (in rounds of at most ``batch_size`` entries per rank, so a writer holds at
  most ``group size * batch_size`` at a time) to a writer that sends them in
  batches: rank 0 (``writer="root"``, one client in all) or the first rank of
  each node (``writer="node"``, via ``Split_type(COMM_TYPE_SHARED)``:
  hierarchical aggregation, one client per node).

Idempotency: keys are deterministic and values replaced, never merged. The
first commit of each rank (with ``replace=True``) first removes that rank's
``("rank", rank)`` keys left by an earlier run, so rerunning a job leaves
exactly the new run's context. Unscoped keys are replaced, not removed.

Collective errors: a store failure on any rank (or writer) during ``commit``
or ``merged_view`` raises :class:`~context_framework.ContextStoreError` on
every rank, naming the failed ranks, so that no rank hangs in a collective.
Ranks waiting for others sleep ``poll_interval`` between checks instead of
spinning (MPI's own waits poll a core flat out, which starves the writer and
the store server when ranks outnumber cores).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .base_store import ContextStore, Metadata, iter_pairs
from .exceptions import ContextConfigurationError, ContextError, ContextStoreError, MissingDependencyError
from .keys import Key, encode_key, normalize_key

__all__ = ["MODES", "RANK", "WRITERS", "MPIContext", "find_mpiexec"]

#: First element of every rank-scoped key: ``("rank", rank, ...)``.
RANK = "rank"
MODES = ("direct", "aggregate")
WRITERS = ("root", "node")

_Pair = tuple[Key, Metadata]


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise MissingDependencyError.for_extra("mpi", "mpi4py") from exc
    return MPI


def find_mpiexec() -> str | None:
    """The ``mpiexec`` beside this Python (the ``mpich`` wheel puts it there), else on ``PATH``."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    return shutil.which("mpiexec") or shutil.which("mpirun")


class MPIContext:
    """One rank's handle on the context of communicator ``comm`` in a shared store.

    Collective: every rank of ``comm`` makes it, and calls ``commit``,
    ``merged_view``, ``clear`` and ``close`` in the same order.

    Args:
        store: a store every rank can reach, or its URL (each rank opens it;
            ``close`` closes it). In-process stores are refused with more than one rank.
        comm: an mpi4py intracommunicator (default ``MPI.COMM_WORLD``). It is
            duplicated, so the context's messages never mix with the program's.
        mode: ``"direct"`` or ``"aggregate"`` (see the module docstring).
        writer: in aggregate mode, ``"root"`` (rank 0) or ``"node"`` (one per node).
        name: the communicator's stable name (the namespace of its context);
            default ``comm.Get_name()``. Must be the same on every rank.
        batch_size: entries per ``set_many`` (and per rank per gather round).
        replace: the first commit removes this rank's keys left by an earlier run.
        poll_interval: seconds a waiting rank sleeps between checks (``None``:
            MPI's busy wait, fine with one core per rank).
    """

    def __init__(
        self,
        store: ContextStore | str,
        comm: Any = None,
        *,
        mode: str = "direct",
        writer: str = "root",
        name: str | None = None,
        batch_size: int = 10_000,
        replace: bool = True,
        poll_interval: float | None = 0.001,
    ) -> None:
        MPI = _mpi()
        if mode not in MODES:
            raise ContextConfigurationError(f"mode must be one of {MODES}, got {mode!r}")
        if writer not in WRITERS:
            raise ContextConfigurationError(f"writer must be one of {WRITERS}, got {writer!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ContextConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
        if poll_interval is not None and not poll_interval >= 0:
            raise ContextConfigurationError(f"poll_interval must be >= 0 or None, got {poll_interval!r}")
        comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(comm, MPI.Intracomm):
            raise ContextConfigurationError(f"comm must be an mpi4py intracommunicator, got {comm!r}")
        name = comm.Get_name() if name is None else name
        names = comm.allgather(name)
        if not isinstance(name, str) or not name.strip("/"):
            raise ContextConfigurationError(
                "the communicator has no name: give it a stable one with comm.Set_name(...) "
                "or MPIContext(..., name=...) (it names the namespace of its context)"
            )
        if len(set(names)) != 1:
            raise ContextConfigurationError(f"the communicator's name differs between ranks: {names}")
        self.mode = mode
        self.writer = writer
        self.name = name
        self.batch_size = batch_size
        self.replace = replace
        self.poll_interval = poll_interval
        self.comm = comm.Dup()
        self.rank: int = self.comm.Get_rank()
        self.size: int = self.comm.Get_size()
        # The group a writer serves: the whole communicator, or the ranks of one node.
        if mode == "aggregate" and writer == "node":
            self._group = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        else:
            self._group = self.comm
        self.is_writer: bool = mode == "direct" or self._group.Get_rank() == 0
        self._owns_store = isinstance(store, str)
        self._root_store = self._open(store)
        self.store: ContextStore = self._root_store.with_namespace(name)
        self._check = getattr(self.store, "_check_value", None)
        self._pending: dict[bytes, _Pair] = {}
        self._committed_once = False
        self._recorded = 0  # distinct keys recorded since the last commit
        self._timing = {"gather_s": 0.0, "write_s": 0.0}
        self.closed = False
        #: Figures of this rank's last commit: ``entries`` it recorded, seconds ``gather_s``
        #: in gathers and ``write_s`` in store calls (since the commit before).
        self.stats: dict[str, float] = {}

    def _open(self, store: ContextStore | str) -> ContextStore:
        from .distributed import _local_only

        if isinstance(store, str):
            from .registry import open_store

            opened: ContextStore = open_store(store)
        elif callable(getattr(store, "set_many", None)) and callable(getattr(store, "with_namespace", None)):
            opened = store
        else:
            raise TypeError(f"store must be a context store or a store URL, got {type(store).__name__}")
        if self.size > 1 and _local_only(opened):
            if self._owns_store:
                opened.close()
            raise ContextConfigurationError(
                f"{opened!r} lives in one process only: the {self.size} ranks would each write to "
                "their own copy. Use a store they can all reach (redis://, postgresql://, "
                "sqlite:///path on one machine)"
            )
        return opened

    # ------------------------------------------------------------------ keys and writes

    def key(self, *parts: Any) -> tuple[Any, ...]:
        """This rank's key ``("rank", rank, *parts)`` (``("rank", rank)`` without parts)."""
        return (RANK, self.rank, *parts)

    def _scoped(self, key: Key, scoped: bool) -> Key:
        if not scoped:
            return normalize_key(key)
        parts = key if isinstance(key, tuple) else (key,)
        return normalize_key((RANK, self.rank, *parts))

    def add(self, key: Key, metadata: Mapping[str, Any], *, scoped: bool = True) -> None:
        """Record ``metadata`` under this rank's ``key`` (validated now; sent by the mode's rules)."""
        self._check_open()
        key = self._scoped(key, scoped)
        value: Metadata = self._check(metadata) if self._check is not None else dict(metadata)
        encoded = encode_key(key)
        if encoded not in self._pending:
            self._recorded += 1
        self._pending[encoded] = (key, value)
        if self.mode == "direct" and len(self._pending) >= self.batch_size:
            self._send_direct()

    def add_many(
        self,
        items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]],
        *,
        scoped: bool = True,
    ) -> None:
        """Record many ``(key, metadata)`` pairs (see :meth:`add`)."""
        for key, metadata in iter_pairs(items):
            self.add(key, metadata, scoped=scoped)

    def add_rank_context(self, metadata: Mapping[str, Any]) -> None:
        """Record metadata of this rank as a whole (key ``("rank", rank)``)."""
        self.add((), metadata)

    def get(self, key: Key, default: Any = None, *, scoped: bool = True) -> Metadata | None:
        """What this rank recorded under ``key`` and has not sent yet, else what the store holds."""
        self._check_open()
        key = self._scoped(key, scoped)
        pending = self._pending.get(encode_key(key))
        if pending is not None:
            return dict(pending[1])
        return self.store.get(key, default)

    def __len__(self) -> int:
        """Writes recorded on this rank and not sent yet."""
        return len(self._pending)

    # ------------------------------------------------------------------ collectives

    def commit(self) -> int:
        """Send every rank's recorded writes to the store (collective); return this rank's count.

        When it returns on any rank, the writes of every rank are in the store.
        """
        self._check_open()
        error: str | None = None
        try:
            if self.mode == "direct":
                self._send_direct()
            else:
                self._aggregate()
            flush = getattr(self.store, "flush", None)
            if flush is not None and self.is_writer:
                flush()
        except ContextError as exc:
            error = f"{type(exc).__name__}: {exc}"
            failure: ContextError | None = exc
        else:
            failure = None
        self._committed_once = True
        count, self._recorded = self._recorded, 0
        self.stats = {"entries": float(count), **self._timing}
        self._timing = {"gather_s": 0.0, "write_s": 0.0}
        self._agree(error, "commit", failure)
        return count

    def merged_view(self, prefix: tuple[Any, ...] | None = None) -> list[_Pair]:
        """Commit, then return every rank's context (under ``prefix``) to every rank (collective).

        Rank 0 reads the communicator's namespace from the store once and
        broadcasts it: one scan on the store, and ``size - 1`` copies over MPI.
        The list is sorted by encoded key, so it is the same on every rank.
        """
        self.commit()
        view: list[_Pair] | None = None
        error: str | None = None
        if self.rank == 0:
            try:
                found = [(encode_key(k), k, v) for k, v in self.store.items(prefix)]
                found.sort(key=lambda t: t[0])
                view = [(k, v) for _, k, v in found]
            except ContextError as exc:
                error = f"{type(exc).__name__}: {exc}"
        self._wait_for_all()
        error, view = self.comm.bcast((error, view), root=0)
        if error is not None:
            raise ContextStoreError(f"merged_view failed: rank 0 could not read the store: {error}")
        assert view is not None
        return view

    def clear(self) -> int:
        """Remove the communicator's whole context and drop pending writes (collective)."""
        self._check_open()
        self._pending.clear()
        removed = 0
        error: str | None = None
        if self.rank == 0:
            try:
                removed = self.store.clear()
            except ContextError as exc:
                error = f"{type(exc).__name__}: {exc}"
        self._wait_for_all()
        error, removed = self.comm.bcast((error, removed), root=0)
        if error is not None:
            raise ContextStoreError(f"clear failed on rank 0: {error}")
        return int(removed)

    # ------------------------------------------------------------------ internals

    def _send_direct(self) -> None:
        pairs = list(self._pending.values())
        self._pending.clear()
        start = time.perf_counter()
        if self.replace and not self._committed_once:
            self.store.clear(self.key())
            self._committed_once = True  # earlier-run keys are gone; later batches only add
        for i in range(0, len(pairs), self.batch_size):
            self.store.set_many(pairs[i : i + self.batch_size])
        self._timing["write_s"] += time.perf_counter() - start

    def _aggregate(self) -> None:
        group, batch = self._group, self.batch_size
        pairs = list(self._pending.values())
        self._pending.clear()
        rounds = group.allreduce(-(-len(pairs) // batch), op=_mpi().MAX)
        first = self.replace and not self._committed_once
        error: ContextError | None = None
        for r in range(max(rounds, 1)):
            start = time.perf_counter()
            chunk = pairs[r * batch : (r + 1) * batch]
            gathered = group.gather((self.rank, first and r == 0, chunk), root=0)
            self._timing["gather_s"] += time.perf_counter() - start
            if gathered is None or error is not None:
                continue  # not a writer, or a write failed: keep gathering so no rank hangs
            start = time.perf_counter()
            try:
                for rank, clear, _ in gathered:
                    if clear:
                        self.store.clear((RANK, rank))
                merged = [p for _, _, part in gathered for p in part]
                for i in range(0, len(merged), batch):
                    self.store.set_many(merged[i : i + batch])
            except ContextError as exc:
                error = exc
            self._timing["write_s"] += time.perf_counter() - start
        if error is not None:
            raise error

    def _wait_for_all(self) -> None:
        """Wait for every rank, sleeping between checks (see ``poll_interval``)."""
        if self.poll_interval is None or self.size == 1:
            return
        request = self.comm.Ibarrier()
        while not request.Test():
            time.sleep(self.poll_interval)

    def _agree(self, error: str | None, what: str, failure: ContextError | None) -> None:
        """Every rank learns whether any rank failed; all raise if one did."""
        self._wait_for_all()
        errors = self.comm.allgather(error)
        failed = {rank: e for rank, e in enumerate(errors) if e is not None}
        if not failed:
            return
        detail = "; ".join(f"rank {rank}: {e}" for rank, e in sorted(failed.items()))
        raise ContextStoreError(f"{what} failed on {len(failed)} of {self.size} ranks: {detail}") from failure

    def _check_open(self) -> None:
        if self.closed:
            raise ContextConfigurationError(f"{self!r} is closed")

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Drop unsent writes, close a store opened from a URL, free the duplicated communicator."""
        if self.closed:
            return
        self.closed = True
        self._pending.clear()
        if self._owns_store:
            self._root_store.close()
        if self._group is not self.comm:
            self._group.Free()
        self.comm.Free()

    def __enter__(self) -> MPIContext:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        """Commit (collective) when the block succeeded; only close after an exception."""
        try:
            if exc_type is None and not self.closed:
                self.commit()
        finally:
            self.close()

    def __repr__(self) -> str:
        where = f"{self.mode}" + (f", writer={self.writer!r}" if self.mode == "aggregate" else "")
        return f"MPIContext({self.name!r}, rank {self.rank}/{self.size}, {where})"
