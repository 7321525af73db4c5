"""Shared machinery for distributed engines (Spark executors, Dask workers, MPI ranks).

Two pieces every engine adapter builds on:

* :class:`StoreRef` ships a store to other processes as its configuration and
  reopens it **once per process**: every task that runs in the same executor or
  worker process reuses that store (and its connections). Stores that only
  exist inside this process (``memory://``) are refused with a clear error,
  since writes made elsewhere would never come back.
* :class:`PartitionContext` is the handle a task writes through. It collects
  the task's writes and sends them in batches through the store's batch path
  when the task commits. Writes are **idempotent**: keys are deterministic
  (``("partition", id, ...)``, ``("row", label)``...), values are replaced,
  never incremented, and nothing is sent before the task's function returned.
  A task that fails before commit writes nothing; a task killed during commit
  leaves a subset of exactly the keys its retry writes again. Before writing,
  a commit removes the partition's own keys (``("partition", id, ...)``) left
  by an earlier attempt, so a retry whose function wrote fewer partition keys
  leaves no stale one behind. With ``replace="groups"`` it removes only the
  groups ``("partition", id, group, ...)`` the task writes, so jobs that write
  different groups of one partition keep each other's context.
"""

from __future__ import annotations

import atexit
import os
import pickle
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from .base_store import ContextStore, Metadata, iter_pairs
from .exceptions import ContextConfigurationError
from .keys import Key, encode_key

__all__ = ["PARTITION", "PartitionContext", "StoreRef", "check_batch_size", "open_shared"]

#: First element of every partition key: ``("partition", id, ...)``.
PARTITION = "partition"

_lock = threading.Lock()
_open: dict[bytes, Any] = {}  # pickled configuration -> the store opened in this process
_pid = os.getpid()


def _local_only(store: Any) -> bool:
    from .in_memory_context_store import InMemoryContextStore
    from .wrappers.base import unwrap

    inner = unwrap(store)
    shards = getattr(inner, "shards", None)
    if shards is not None:
        return any(_local_only(s) for s in shards)
    if isinstance(inner, InMemoryContextStore):
        return True
    path = getattr(inner, "path", None)
    return path is not None and str(path) in (":memory:", "")


class StoreRef:
    """A picklable reference to a store that other processes reopen once each.

    ``StoreRef(store).open()`` in an executor returns the same store object for
    every task of that process.
    """

    def __init__(self, store: ContextStore | StoreRef) -> None:
        if isinstance(store, StoreRef):
            self.payload: bytes = store.payload
            self.description: str = store.description
            return
        if _local_only(store):
            raise ContextConfigurationError(
                f"{store!r} lives in this process only: writes from executors, workers or ranks "
                "would go to copies that are thrown away. Use a store they can reach "
                "(sqlite:///path on one machine, redis://, postgresql://...)"
            )
        flush = getattr(store, "flush", None)
        if flush is not None:
            flush()
        self.payload = pickle.dumps(store)
        self.description = repr(store)

    def open(self) -> Any:
        """The store in this process (opened on first use, then shared)."""
        return open_shared(self.payload)

    def __repr__(self) -> str:
        return f"StoreRef({self.description})"


def open_shared(payload: bytes) -> Any:
    """Unpickle ``payload`` once per process and return the same store afterwards."""
    global _pid
    with _lock:
        if _pid != os.getpid():  # a forked child must not use the parent's connections
            _open.clear()
            _pid = os.getpid()
        store = _open.get(payload)
        if store is None or store.closed:
            store = _open[payload] = pickle.loads(payload)
        return store


@atexit.register
def _close_shared() -> None:
    with _lock:
        stores = list(_open.values()) if _pid == os.getpid() else []
        _open.clear()
    for store in stores:
        try:
            store.close()
        except Exception:  # best effort at exit; a buffered store reports its own loss
            pass


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` if it is a positive int, else a :class:`ContextConfigurationError`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ContextConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


class PartitionContext:
    """The context handle of one partition (or rank) inside a task.

    Args:
        store: where the writes go (usually ``StoreRef.open()``).
        partition: the partition's id: an int, or a tuple of key parts
            (e.g. ``(rank, "comm-world")``).
        batch_size: writes sent per ``set_many`` at commit.
        replace: whether commit first removes the partition's own keys (see the
            module docstring); ``"groups"`` removes only each group
            ``("partition", id, group)`` this task writes keys under; ``False``
            leaves keys other jobs wrote under ``("partition", id, ...)`` in place
            and only overwrites this task's keys.
    """

    def __init__(
        self,
        store: ContextStore,
        partition: Any,
        *,
        batch_size: int = 10_000,
        replace: bool | Literal["groups"] = True,
    ) -> None:
        check_batch_size(batch_size)
        if replace not in (True, False, "groups"):
            raise ContextConfigurationError(f"replace must be True, False or 'groups', got {replace!r}")
        self.store = store
        self.partition: tuple[Any, ...] = partition if isinstance(partition, tuple) else (partition,)
        encode_key((PARTITION, *self.partition))  # a clear error now for an unusable id
        self.batch_size = batch_size
        self.replace = replace
        self._writes: dict[bytes, tuple[Key, Mapping[str, Any]]] = {}
        self._check = getattr(store, "_check_value", None)
        self.committed = False

    @property
    def key(self) -> tuple[Any, ...]:
        """This partition's own key, ``("partition", *id)``."""
        return (PARTITION, *self.partition)

    def partition_key(self, *parts: Any) -> tuple[Any, ...]:
        """A key under this partition: ``("partition", *id, *parts)``."""
        return (PARTITION, *self.partition, *parts)

    def add(self, key: Key, metadata: Mapping[str, Any]) -> None:
        """Record ``metadata`` under ``key`` (sent at commit; a later add to the key replaces it)."""
        if self.committed:
            raise ContextConfigurationError(f"{self!r} was already committed")
        if self._check is not None:
            metadata = self._check(metadata)  # a bad value fails in the task, not at commit
        self._writes[encode_key(key)] = (key, metadata)

    def add_many(
        self, items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]]
    ) -> None:
        """Record many ``(key, metadata)`` pairs."""
        for key, metadata in iter_pairs(items):
            self.add(key, metadata)

    def add_partition_context(self, metadata: Mapping[str, Any], *parts: Any) -> None:
        """Record metadata for this partition (``("partition", id)``, or a key under it)."""
        self.add(self.partition_key(*parts), metadata)

    def get(self, key: Key, default: Any = None) -> Metadata | None:
        """What this task recorded under ``key``, else what the store holds."""
        pending = self._writes.get(encode_key(key))
        if pending is not None:
            return dict(pending[1])
        return self.store.get(key, default)

    def groups(self) -> list[Any]:
        """The groups this task recorded keys under: ``group`` of each ``("partition", *id, group, ...)``."""
        prefix = encode_key(self.key)
        depth = len(self.key)
        found: dict[bytes, Any] = {}
        for encoded, (key, _) in self._writes.items():
            if len(encoded) > len(prefix) and encoded.startswith(prefix) and type(key) is tuple:
                group = key[depth]
                found.setdefault(encode_key((group,)), group)
        return list(found.values())

    def __len__(self) -> int:
        return len(self._writes)

    def commit(self) -> int:
        """Send the recorded writes (idempotent: see the module docstring); return how many."""
        if self.committed:
            return 0
        if self.replace == "groups":
            for group in self.groups():  # what an earlier attempt left in these groups
                self.store.clear((*self.key, group))
        elif self.replace:
            self.store.clear(self.key)  # partition keys of an earlier, failed attempt
        pairs = list(self._writes.values())
        for start in range(0, len(pairs), self.batch_size):
            self.store.set_many(pairs[start : start + self.batch_size])
        flush = getattr(self.store, "flush", None)
        if flush is not None:
            flush()
        self.committed = True
        self._writes.clear()
        return len(pairs)

    def __repr__(self) -> str:
        return f"PartitionContext({self.key!r}, {len(self._writes)} pending)"
