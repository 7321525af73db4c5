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
  batches: rank 0 (``writer="root"``, one client in all), the first rank of
  each node (``writer="node"``, via ``Split_type(COMM_TYPE_SHARED)``: one
  client per node) or the first of every ``k`` consecutive ranks
  (``writer=k``). More writers share the load of one; fewer keep the store's
  client count low.

Idempotency: keys are deterministic and values replaced, never merged. With
``replace=True`` (the default) making the context removes the ``("rank", ...)``
keys an earlier run left in the communicator's namespace (one prefix clear by
rank 0), so rerunning a job, even with fewer ranks, leaves exactly the new
run's context. Unscoped keys are replaced, not removed.

Collective errors: a store failure on any rank (or writer) during ``commit``
or ``merged_view`` raises :class:`~context_framework.ContextStoreError` on
every rank, naming the failed ranks, so that no rank hangs in a collective.
Ranks waiting for others sleep ``poll_interval`` between checks instead of
spinning (MPI's own waits poll a core flat out, which starves the writer and
the store server when ranks outnumber cores).
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .base_store import ContextStore, Metadata, iter_pairs
from .distributed import check_batch_size
from .exceptions import ContextConfigurationError, ContextError, ContextStoreError, MissingDependencyError
from .in_memory_context_store import _canonical, _canonical_batch
from .keys import Key, encode_key
from .values import DEFAULT_MAX_VALUE_SIZE, prepare_value

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


def _parts(key: Any) -> tuple[Any, ...]:
    """The parts a rank-scoped key appends to ``("rank", rank)``."""
    if type(key) is tuple:
        return key
    return tuple(key) if isinstance(key, tuple) else (key,)


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
        writer: in aggregate mode, ``"root"`` (rank 0), ``"node"`` (one per node)
            or an int ``k`` (one per ``k`` consecutive ranks).
        name: the communicator's stable name (the namespace of its context);
            default ``comm.Get_name()``. Must be the same on every rank.
        batch_size: entries per ``set_many`` (and per rank per gather round).
        replace: remove the ``("rank", ...)`` keys an earlier run left in the
            communicator's namespace (rank 0, when the context is made).
        poll_interval: seconds a waiting rank sleeps between checks (``None``:
            MPI's busy wait, fine with one core per rank).
    """

    def __init__(
        self,
        store: ContextStore | str,
        comm: Any = None,
        *,
        mode: str = "direct",
        writer: str | int = "root",
        name: str | None = None,
        batch_size: int = 10_000,
        replace: bool = True,
        poll_interval: float | None = 0.001,
    ) -> None:
        MPI = _mpi()
        if mode not in MODES:
            raise ContextConfigurationError(f"mode must be one of {MODES}, got {mode!r}")
        if writer not in WRITERS and (isinstance(writer, bool) or not isinstance(writer, int) or writer <= 0):
            raise ContextConfigurationError(
                f"writer must be one of {WRITERS} or a positive int (ranks per writer), got {writer!r}"
            )
        check_batch_size(batch_size)
        if poll_interval is not None and not poll_interval >= 0:
            raise ContextConfigurationError(f"poll_interval must be >= 0 or None, got {poll_interval!r}")
        comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(comm, MPI.Intracomm):
            raise ContextConfigurationError(f"comm must be an mpi4py intracommunicator, got {comm!r}")
        name = comm.Get_name() if name is None else name
        self.mode = mode
        self.writer = writer
        self.name = name
        self.batch_size = batch_size
        self.replace = replace
        self.poll_interval = poll_interval
        self.comm = comm.Dup()
        self.rank: int = self.comm.Get_rank()
        self.size: int = self.comm.Get_size()
        # The group a writer serves: the whole communicator, the ranks of one node, or k ranks.
        if mode == "aggregate" and writer == "node":
            self._group = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        elif mode == "aggregate" and isinstance(writer, int):
            self._group = self.comm.Split(self.rank // writer, self.rank)
        else:
            self._group = self.comm
        self.is_writer: bool = mode == "direct" or self._group.Get_rank() == 0
        self._prefix: tuple[Any, ...] = (RANK, self.rank)
        # Unsent writes, one per key: rank-scoped ones by their key's parts, unscoped ones by key.
        self._scoped: dict[Any, _Pair] = {}
        self._unscoped: dict[Any, _Pair] = {}
        self._recorded = 0  # distinct keys recorded since the last commit
        self._timing = {"gather_s": 0.0, "write_s": 0.0}
        #: Figures of this rank's last commit: ``entries`` it recorded, seconds ``gather_s``
        #: in gathers and ``write_s`` in store calls (since the commit before).
        self.stats: dict[str, float] = {}
        # A store given by URL is opened where it is used: by writers and rank 0 now, by the
        # other ranks of aggregate mode only if they read (so the server sees one client per writer).
        self._url = store if isinstance(store, str) else None
        self._owns_store = self._url is not None
        self._root_store: ContextStore | None = None
        self._view: ContextStore | None = None
        self.closed = False
        error: Exception | None = None
        try:
            if self._url is None or self.is_writer or self.rank == 0:
                self._root_store = self._open(store)
        except (ContextError, TypeError) as exc:
            error = exc
        size_limit = getattr(self._root_store, "max_value_size", DEFAULT_MAX_VALUE_SIZE)
        # One exchange tells every rank whether any rank failed, so none goes on into a collective alone.
        setup = self.comm.allgather(
            (name, None if error is None else f"{type(error).__name__}: {error}", size_limit)
        )
        try:
            if error is not None:
                raise error
            failed = [f"rank {rank}: {e}" for rank, (_, e, _) in enumerate(setup) if e is not None]
            if failed:
                raise ContextConfigurationError(f"opening the store failed on {'; '.join(failed)}")
            if not isinstance(name, str) or not name.strip("/"):
                raise ContextConfigurationError(
                    "the communicator has no name: give it a stable one with comm.Set_name(...) "
                    "or MPIContext(..., name=...) (it names the namespace of its context)"
                )
            names = [n for n, _, _ in setup]
            if any(n != name for n in names):
                raise ContextConfigurationError(f"the communicator's name differs between ranks: {names}")
            if self._root_store is not None:
                self._check: Callable[[Any], Metadata] = getattr(self.store, "_check_value", None) or dict
            else:  # validate as rank 0's store does, without opening one here
                self._check = functools.partial(prepare_value, max_size=setup[0][2])
        except BaseException:
            self.close()
            raise
        if replace:
            try:
                self._on_root(lambda: self.store.clear((RANK,)), "removing the context of an earlier run")
            except ContextError:
                self.close()
                raise

    @property
    def store(self) -> ContextStore:
        """The store, bound to the communicator's namespace (opened here on first use)."""
        if self._view is None:
            if self._root_store is None:
                assert self._url is not None
                self._root_store = self._open(self._url)
            self._view = self._root_store.with_namespace(self.name)
        return self._view

    def _open(self, store: ContextStore | str) -> ContextStore:
        from .distributed import _local_only

        if isinstance(store, str):
            from .registry import open_store

            opened: ContextStore = open_store(store)
        else:
            from .wrappers.minimal import complete_store

            opened = complete_store(store, close_inner=False)  # a four-method store, completed
            if not all(callable(getattr(opened, m, None)) for m in ("set_many", "with_namespace")):
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
        return (*self._prefix, *parts)

    def add(self, key: Key, metadata: Mapping[str, Any], *, scoped: bool = True) -> None:
        """Record ``metadata`` under this rank's ``key`` (validated now; sent by the mode's rules).

        ``key`` is a tuple of parts (``("row", 7)`` is stored as ``("rank", rank, "row", 7)``)
        or a single part; with ``scoped=False`` it is stored as given.
        """
        self.add_many([(key, metadata)], scoped=scoped)

    def add_many(
        self,
        items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]],
        *,
        scoped: bool = True,
    ) -> None:
        """Record many ``(key, metadata)`` pairs; all are validated before any is recorded."""
        self._check_open()
        pairs = list(iter_pairs(items))
        check = self._check
        values = [check(v) for _, v in pairs]
        keys: list[Any]
        stored: list[Any]
        if scoped:
            keys = [_parts(k) for k, _ in pairs]
            pending = self._scoped
            prefix = self._prefix
            stored = [prefix + k for k in keys]
        else:
            keys = stored = [k for k, _ in pairs]
            pending = self._unscoped
        before = len(pending)
        for ident, key, value in zip(_canonical_batch(keys), stored, values):  # validates the keys
            pending[ident] = (key, value)
        self._recorded += len(pending) - before
        if self.mode == "direct" and len(self._scoped) + len(self._unscoped) >= self.batch_size:
            self._send_direct()

    def add_rank_context(self, metadata: Mapping[str, Any]) -> None:
        """Record metadata of this rank as a whole (key ``("rank", rank)``)."""
        self.add((), metadata)

    def get(self, key: Key, default: Any = None, *, scoped: bool = True) -> Metadata | None:
        """What this rank recorded under ``key`` and has not sent yet, else what the store holds."""
        self._check_open()
        if scoped:
            parts = _parts(key)
            found = self._scoped.get(_canonical(parts))
            stored: Key = self._prefix + parts
        else:
            found = self._unscoped.get(_canonical(key))
            stored = key
        if found is not None:
            return dict(found[1])
        return self.store.get(stored, default)

    def __len__(self) -> int:
        """Writes recorded on this rank and not sent yet."""
        return len(self._scoped) + len(self._unscoped)

    def _take_pending(self) -> list[_Pair]:
        pairs = [*self._scoped.values(), *self._unscoped.values()]
        self._scoped.clear()
        self._unscoped.clear()
        return pairs

    # ------------------------------------------------------------------ collectives

    def commit(self) -> int:
        """Send every rank's recorded writes to the store (collective); return this rank's count.

        When it returns on any rank, the writes of every rank are in the store.
        """
        self._check_open()
        error: str | None = None
        failure: ContextError | None = None
        try:
            if self.mode == "direct":
                self._send_direct()
            else:
                self._aggregate()
            flush = getattr(self.store, "flush", None) if self.is_writer else None
            if flush is not None:
                flush()
        except ContextError as exc:
            error, failure = f"{type(exc).__name__}: {exc}", exc
        count, self._recorded = self._recorded, 0
        self.stats = {"entries": float(count), **self._timing}
        self._timing = {"gather_s": 0.0, "write_s": 0.0}
        self._wait_for_all()
        errors = self.comm.allgather(error)
        failed = [f"rank {rank}: {e}" for rank, e in enumerate(errors) if e is not None]
        if failed:
            raise ContextStoreError(
                f"commit failed on {len(failed)} of {self.size} ranks: {'; '.join(failed)}"
            ) from failure
        return count

    def merged_view(self, prefix: tuple[Any, ...] | None = None) -> list[_Pair]:
        """Commit, then return every rank's context (under ``prefix``) to every rank (collective).

        Rank 0 reads the communicator's namespace from the store once and
        broadcasts it: one scan of the store, and ``size - 1`` copies over MPI.
        The list of ``(key, metadata)`` is sorted by encoded key, so it is the
        same on every rank (a list, not a dict: ``("row", 1)`` and
        ``("row", True)`` are different keys but equal dict keys).
        """
        self.commit()

        def read() -> list[_Pair]:
            found = [(encode_key(k), k, v) for k, v in self.store.items(prefix)]
            found.sort(key=lambda t: t[0])
            return [(k, v) for _, k, v in found]

        view: list[_Pair] = self._on_root(read, "reading the merged view")
        return view

    def clear(self) -> int:
        """Remove the communicator's whole context and drop unsent writes (collective)."""
        self._check_open()
        self._take_pending()
        self._recorded = 0
        self._wait_for_all()  # no rank is still reading what rank 0 removes
        return int(self._on_root(lambda: self.store.clear(), "clearing the context"))

    # ------------------------------------------------------------------ internals

    def _on_root(self, action: Callable[[], Any], what: str) -> Any:
        """Run ``action`` on rank 0 and return its result on every rank (or raise on every rank)."""
        result: Any = None
        error: str | None = None
        if self.rank == 0:
            try:
                result = action()
            except ContextError as exc:
                error = f"{type(exc).__name__}: {exc}"
        self._wait_for_all()
        error, result = self.comm.bcast((error, result), root=0)
        if error is not None:
            raise ContextStoreError(f"{what} failed on rank 0: {error}")
        return result

    def _send_direct(self) -> None:
        pairs = self._take_pending()
        start = time.perf_counter()
        for i in range(0, len(pairs), self.batch_size):
            self.store.set_many(pairs[i : i + self.batch_size])
        self._timing["write_s"] += time.perf_counter() - start

    def _aggregate(self) -> None:
        group, batch = self._group, self.batch_size
        pairs = self._take_pending()
        self._wait_for_all(group)
        rounds = group.allreduce(-(-len(pairs) // batch), op=_mpi().MAX)
        error: ContextError | None = None
        for r in range(rounds):
            if r:
                self._wait_for_all(group)  # while the writer sends the last round
            start = time.perf_counter()
            chunk = pairs[r * batch : (r + 1) * batch]
            gathered = group.gather(None if self.is_writer else chunk, root=0)  # the writer keeps its own
            self._timing["gather_s"] += time.perf_counter() - start
            if gathered is None or error is not None:
                continue  # not a writer, or a write failed: keep gathering so no rank hangs
            start = time.perf_counter()
            gathered[0] = chunk
            merged = [pair for part in gathered for pair in part]
            try:
                for i in range(0, len(merged), batch):
                    self.store.set_many(merged[i : i + batch])
            except ContextError as exc:
                error = exc
            self._timing["write_s"] += time.perf_counter() - start
        if error is not None:
            raise error

    def _wait_for_all(self, comm: Any = None) -> None:
        """Wait for every rank of ``comm`` (default: all), sleeping between checks (``poll_interval``)."""
        comm = self.comm if comm is None else comm
        if comm.Get_size() == 1:
            return
        if self.poll_interval is None:
            comm.Barrier()
            return
        request = comm.Ibarrier()
        while not request.Test():
            time.sleep(self.poll_interval)

    def _check_open(self) -> None:
        if self.closed:
            raise ContextConfigurationError(f"{self!r} is closed")

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Drop unsent writes, close a store opened from a URL, free the duplicated communicator."""
        if self.closed:
            return
        self.closed = True
        self._take_pending()
        if self._owns_store and self._root_store is not None:
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
