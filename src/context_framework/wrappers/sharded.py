"""``ShardedStore``: spread keys over several stores by rendezvous hashing.

::

    store = ShardedStore([RedisContextStore("h1"), RedisContextStore("h2"), RedisContextStore("h3")])
    store = open_store("sharded+redis://h1:6379,h2:6379,h3:6379/0?prefix=ctx:")
    store = ShardedStore.from_urls(["sqlite:///a.db", "sqlite:///b.db"])

Routing. Each key belongs to one shard, chosen by rendezvous
(highest-random-weight) hashing of its encoded bytes (:func:`keys.encode_key`,
without the namespace): the key's 64-bit BLAKE2b digest is mixed with a seed
derived from each shard's *name*, and the shard with the highest score owns
the key. Adding or removing a shard therefore moves only the keys that the
new shard wins or that the removed shard held (about 1/N of them), and the
routing depends only on the key and the set of names: not on the order of
the shards, the process, the machine or the Python version.

Operations. Single-key operations go to the owning shard, so ``update`` and
``increment`` are exactly as atomic as that shard makes them. Batches
(``set_many``, ``get_many``, ``delete_many``) validate every key and value
first (one bad item stores nothing anywhere), split per shard and run the
parts in parallel on a thread pool with one worker per shard (made on first
use, shut down on close; ``parallel=False`` runs them in turn). A batch is
*not* one transaction across shards: if a shard fails, the parts of the
other shards may already be applied, and the error says which.
``scan``/``items``/``count``/``list_keys``/``clear`` visit every shard.

Errors. A shard failure is a :class:`ContextStoreError` (same subclass as the
shard's) naming the shard, with the driver's error as ``__cause__``. Errors
in the caller's input (bad keys, values, prefixes) pass through unchanged.

Built on :class:`BaseContextStore`, not :class:`WrapperStore`: a sharded
store has several inner stores, and ``WrapperStore``'s one-``inner`` contract
(``unwrap``, forwarding, namespaces, closing and pickling through ``inner``)
would all have to be overridden, with ``unwrap()`` naming a single shard.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlencode

from ..base_store import BaseContextStore, ContextStore, Metadata, Number, check_prefix, iter_pairs
from ..exceptions import (
    ContextConfigurationError,
    ContextError,
    ContextStoreClosedError,
    ContextStoreError,
)
from ..keys import Key, encode_key, encode_keys
from ..urls import coerce_option, mask_secrets, mask_url, split_options, split_url
from ..values import DEFAULT_MAX_VALUE_SIZE, _flat_bound, prepare_value
from .base import WriteChecks, write_checks
from .minimal import FULL_API, complete_store

__all__ = ["Rendezvous", "ShardedStore", "key_hash", "shard_seed"]

T = TypeVar("T")

_MASK = (1 << 64) - 1
_MIX1 = 0xBF58476D1CE4E5B9  # SplitMix64 finaliser constants
_MIX2 = 0x94D049BB133111EB
_SEED_TAG = b"context-framework/shard:"
#: Batches at least this long take the numpy path (when numpy is importable).
_NUMPY_MIN_BATCH = 256
#: The methods a shard must have.

# --------------------------------------------------------------------------- hashing


def key_hash(encoded: bytes) -> int:
    """64-bit hash of an encoded key: its 8-byte BLAKE2b digest, little-endian."""
    return int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "little")


def shard_seed(name: str) -> int:
    """64-bit seed of a shard, from its name."""
    digest = hashlib.blake2b(_SEED_TAG + name.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _score(h: int, seed: int) -> int:
    """The weight of a key (hash ``h``) on a shard (``seed``): SplitMix64's finaliser of ``h ^ seed``."""
    z = h ^ seed
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK
    return z ^ (z >> 31)


_numpy: Any = None


def _load_numpy() -> Any:
    """numpy if importable (an optional fast path), else ``False``."""
    global _numpy
    if _numpy is None:
        try:
            import numpy

            _numpy = numpy
        except ImportError:
            _numpy = False
    return _numpy


class Rendezvous:
    """Highest-random-weight routing of encoded keys over named shards.

    ``owner(encoded)`` is the index (in ``names``) of the shard with the
    highest :func:`_score`; a tie (probability about 2**-64) goes to the
    smallest name, so the result depends on the set of names only.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._order = sorted(range(len(self.names)), key=lambda i: self.names[i])
        self._seeds = [shard_seed(self.names[i]) for i in self._order]

    def owner(self, encoded: bytes) -> int:
        """Index of the shard that owns the key whose encoding is ``encoded``."""
        seeds = self._seeds
        if len(seeds) == 1:
            return 0
        h = key_hash(encoded)
        best, best_j = -1, 0
        for j, seed in enumerate(seeds):
            z = h ^ seed
            z = ((z ^ (z >> 30)) * _MIX1) & _MASK
            z = ((z ^ (z >> 27)) * _MIX2) & _MASK
            z ^= z >> 31
            if z > best:
                best, best_j = z, j
        return self._order[best_j]

    def owners(self, encoded: Sequence[bytes]) -> list[int]:
        """:meth:`owner` of many encoded keys (numpy speeds up long batches when installed)."""
        if len(self._seeds) == 1:
            return [0] * len(encoded)
        if len(encoded) >= _NUMPY_MIN_BATCH:
            np = _load_numpy()
            if np:
                return self._owners_numpy(np, encoded)
        owner = self.owner
        return [owner(e) for e in encoded]

    def _owners_numpy(self, np: Any, encoded: Sequence[bytes]) -> list[int]:
        blake = hashlib.blake2b
        digests = b"".join([blake(e, digest_size=8).digest() for e in encoded])
        h = np.frombuffer(digests, dtype="<u8").astype(np.uint64)
        s30, s27, s31 = np.uint64(30), np.uint64(27), np.uint64(31)
        m1, m2 = np.uint64(_MIX1), np.uint64(_MIX2)

        def score(seed: int) -> Any:
            z = h ^ np.uint64(seed)
            z = (z ^ (z >> s30)) * m1
            z = (z ^ (z >> s27)) * m2
            return z ^ (z >> s31)

        with np.errstate(over="ignore"):
            best = score(self._seeds[0])
            owner = np.zeros(len(h), dtype=np.intp)
            for j in range(1, len(self._seeds)):
                z = score(self._seeds[j])
                better = z > best  # strict: the first (smallest) name keeps a tie
                best = np.where(better, z, best)
                owner[better] = j
        return np.asarray(self._order, dtype=np.intp)[owner].tolist()  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the worker pool


class _Workers:
    """The thread pool of a sharded store and its views: one worker per shard, made on first use.

    A pool inherited through ``fork`` has no threads in the child, so a
    process that is not the one that made the pool makes its own.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def pool(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.size, thread_name_prefix="context-framework-shard")
                self._pid = os.getpid()
            return self._pool

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.shutdown(wait=True)


# --------------------------------------------------------------------------- the store


class ShardedStore(BaseContextStore):
    """Spread keys over ``stores`` by rendezvous hashing of their names (see the module docstring).

    Args:
        stores: two or more context stores (one works too), all bound to the
            same namespace and with the same ``max_value_size``.
        names: one unique, non-empty name per store (default ``"shard-0"``,
            ``"shard-1"``...). A key's shard depends on the names, not the
            order: keep a shard's name when adding or removing others.
        parallel: run the per-shard parts of a batch on a thread pool.
        close_inner: whether closing this store closes the shards.
    """

    scheme = "sharded"

    def __init__(
        self,
        stores: Sequence[ContextStore],
        *,
        names: Sequence[str] | None = None,
        parallel: bool = True,
        close_inner: bool = True,
    ) -> None:
        shards = _check_stores(stores)
        names = _check_names(names, len(shards))
        namespaces = {s.namespace for s in shards}
        if len(namespaces) > 1:
            raise ContextConfigurationError(
                "all shards of a ShardedStore must be bound to the same namespace, got "
                + ", ".join(f"{n!r}: {s.namespace!r}" for n, s in zip(names, shards))
            )
        limits = {getattr(s, "max_value_size", DEFAULT_MAX_VALUE_SIZE) for s in shards}
        if len(limits) > 1:
            raise ContextConfigurationError(
                "all shards of a ShardedStore must have the same max_value_size, got "
                + ", ".join(f"{n!r}: {getattr(s, 'max_value_size', None)!r}" for n, s in zip(names, shards))
            )
        super().__init__(namespace=shards[0].namespace, max_value_size=limits.pop())
        self._shards: list[Any] = shards
        self._names = names
        self._router = Rendezvous(names)
        self.parallel = bool(parallel)
        self.close_inner = bool(close_inner)
        self._workers = _Workers(len(shards))
        self._secrets: tuple[str, ...] = ()  # passwords to hide from error messages (from URLs)
        self._checks = [write_checks(s) for s in shards]

    # ------------------------------------------------------------------ introspection

    @property
    def shards(self) -> tuple[Any, ...]:
        """The shard stores, in the order given."""
        return tuple(self._shards)

    @property
    def names(self) -> tuple[str, ...]:
        """The shard names, in the order of :attr:`shards`."""
        return self._names

    def shard_of(self, key: Key) -> int:
        """Index (in :attr:`shards`) of the shard that holds ``key``."""
        return self._router.owner(encode_key(key))

    def shards_of(self, keys: Iterable[Key]) -> list[int]:
        """:meth:`shard_of` for many keys (fast for long batches)."""
        return self._router.owners(encode_keys(keys))

    # ------------------------------------------------------------------ checking writes

    def check_write(self, key: Key, value: Any) -> None:
        """What the shard that owns ``key`` checks in ``set(key, value)``."""
        shard = self._shards[self._route(key)]
        check = getattr(shard, "check_write", None)
        if check is None:
            super().check_write(key, value)
        else:
            check(key, value)

    def check_write_key(self, key: Key) -> None:
        """What the shard that owns ``key`` checks of the key in a write."""
        shard = self._shards[self._route(key)]
        check = getattr(shard, "check_write_key", None)
        if check is None:
            encode_key(key)
        else:
            check(key)

    @property
    def max_key_size(self) -> int | None:
        """The smallest key limit of the shards (a key that fits it fits every shard)."""
        rooms = [c.room for c in self._checks if c is not None and c.key is not None]
        return min(rooms) if rooms else None

    def _write_checks(self) -> WriteChecks | None:
        """:func:`~context_framework.wrappers.base.write_checks` of this store, from its shards'."""
        if any(c is not None and c.full is not None for c in self._checks):
            return WriteChecks(self.check_write, None, 0)
        room = self.max_key_size
        return None if room is None else WriteChecks(None, self.check_write_key, room)

    def _check_shard_writes(
        self, pairs: list[tuple[Key, Mapping[str, Any]]], encoded: list[bytes], owners: list[int]
    ) -> None:
        """Each shard's own checks of the writes of a batch it owns, before any shard writes."""
        checks = self._checks
        if all(c is None for c in checks):
            return
        for (key, value), k, owner in zip(pairs, encoded, owners):
            check = checks[owner]
            if check is not None:
                if check.key is not None and len(k) > check.room:
                    check.key(key)
                if check.full is not None:
                    check.full(key, value)

    # ------------------------------------------------------------------ errors and running

    def _raise(self, i: int, op: str, exc: BaseException, done: list[int] | None = None) -> NoReturn:
        """Re-raise ``exc`` from shard ``i``: the caller's errors as they are, store failures named."""
        if isinstance(exc, ContextError) and not isinstance(exc, ContextStoreError):
            raise exc
        name = self._names[i]
        if isinstance(exc, ContextStoreError):
            kind: type[ContextStoreError] = type(exc)
            detail = str(exc)
        else:
            kind = ContextStoreError
            detail = f"{self._shards[i]!r}: {type(exc).__name__}: {exc}"
        message = f"{op} failed on shard {name!r} of {type(self).__name__}: {detail}"
        if done is not None:
            applied = ", ".join(repr(self._names[j]) for j in done)
            message += "; a batch is not atomic across shards: " + (
                f"the parts for {applied} were applied" if applied else "no other shard applied its part"
            )
        message = mask_secrets(message, secrets=self._secrets)
        try:
            error = kind(message)
        except Exception:
            error = ContextStoreError(message)
        cause = exc.__cause__ if isinstance(exc, ContextStoreError) and exc.__cause__ is not None else exc
        raise error from cause

    def _run(self, op: str, jobs: Sequence[tuple[int, Callable[[], T]]], write: bool = False) -> list[T]:
        """Run ``(shard index, job)`` pairs (in parallel if enabled); results in job order."""
        if len(jobs) == 1 or not self.parallel:
            results: list[T] = []
            for n, (i, job) in enumerate(jobs):
                try:
                    results.append(job())
                except Exception as exc:
                    self._raise(i, op, exc, [j for j, _ in jobs[:n]] if write else None)
            return results
        try:
            futures = [self._workers.pool().submit(job) for _, job in jobs[1:]]
        except RuntimeError:  # the pool was shut down: the store is being closed
            raise self._closed_error() from None
        outcomes: list[tuple[bool, Any]] = []
        try:
            outcomes.append((True, jobs[0][1]()))
        except Exception as exc:
            outcomes.append((False, exc))
        for future in futures:
            try:
                outcomes.append((True, future.result()))
            except Exception as exc:
                outcomes.append((False, exc))
        for n, (ok, value) in enumerate(outcomes):
            if not ok:
                done = [jobs[k][0] for k, (ok2, _) in enumerate(outcomes) if ok2]
                self._raise(jobs[n][0], op, value, done if write else None)
        return [value for _, value in outcomes]

    def _each(self, op: str, call: Callable[[Any], T], write: bool = False) -> list[T]:
        """``call(shard)`` on every shard."""
        return self._run(op, [(i, partial(call, s)) for i, s in enumerate(self._shards)], write)

    def _chain(self, op: str, call: Callable[[Any], Iterable[T]]) -> Iterator[T]:
        for i, shard in enumerate(self._shards):
            try:
                yield from call(shard)
            except Exception as exc:
                self._raise(i, op, exc)

    def _route(self, key: Key) -> int:
        if len(self._shards) == 1:
            return 0
        return self._router.owner(encode_key(key))

    def _groups(self, keys: list[Any]) -> list[list[int]]:
        """Positions in ``keys`` per shard (validates every key)."""
        groups: list[list[int]] = [[] for _ in self._shards]
        appends = [g.append for g in groups]
        for pos, owner in enumerate(self._router.owners(encode_keys(keys))):
            appends[owner](pos)
        return groups

    # ------------------------------------------------------------------ single keys

    def set(self, key: Key, value: Mapping[str, Any]) -> None:
        self._check_open()
        i = self._route(key)
        try:
            self._shards[i].set(key, value)
        except Exception as exc:
            self._raise(i, "set", exc)

    def get(self, key: Key, default: Any = None) -> Metadata | None:
        self._check_open()
        i = self._route(key)
        try:
            return self._shards[i].get(key, default)  # type: ignore[no-any-return]
        except Exception as exc:
            self._raise(i, "get", exc)

    def delete(self, key: Key) -> bool:
        self._check_open()
        i = self._route(key)
        try:
            return bool(self._shards[i].delete(key))
        except Exception as exc:
            self._raise(i, "delete", exc)

    def exists(self, key: Key) -> bool:
        self._check_open()
        i = self._route(key)
        try:
            return bool(self._shards[i].exists(key))
        except Exception as exc:
            self._raise(i, "exists", exc)

    def update(self, key: Key, patch: Mapping[str, Any]) -> Metadata:
        """Merge ``patch`` into ``key``'s metadata, atomically on the owning shard."""
        self._check_open()
        i = self._route(key)
        try:
            return self._shards[i].update(key, patch)  # type: ignore[no-any-return]
        except Exception as exc:
            self._raise(i, "update", exc)

    def increment(self, key: Key, field: str, by: Number = 1) -> Number:
        """Add ``by`` to ``field`` of ``key``, atomically on the owning shard."""
        self._check_open()
        i = self._route(key)
        try:
            return self._shards[i].increment(key, field, by)  # type: ignore[no-any-return]
        except Exception as exc:
            self._raise(i, "increment", exc)

    # ------------------------------------------------------------------ batches

    def set_many(
        self, items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]]
    ) -> None:
        """Validate every entry, then write each shard's part (in parallel). Not atomic across shards."""
        self._check_open()
        pairs = list(iter_pairs(items))
        if not pairs:
            return
        encoded = encode_keys([k for k, _ in pairs])  # validates every key
        owners = self._router.owners(encoded)
        self._check_shard_writes(pairs, encoded, owners)  # what one shard refuses must stop every shard
        _check_values([v for _, v in pairs], self.max_value_size)
        parts: list[list[tuple[Key, Mapping[str, Any]]]] = [[] for _ in self._shards]
        appends = [part.append for part in parts]
        for pair, owner in zip(pairs, owners):
            appends[owner](pair)
        jobs = [(i, partial(self._shards[i].set_many, part)) for i, part in enumerate(parts) if part]
        self._run("set_many", jobs, write=True)

    def get_many(self, keys: Iterable[Key]) -> list[Metadata | None]:
        """The metadata of each key in the caller's order (``None`` where absent)."""
        self._check_open()
        keys = list(keys)
        if not keys:
            return []
        groups = [(i, g) for i, g in enumerate(self._groups(keys)) if g]
        jobs = [(i, partial(self._shards[i].get_many, [keys[p] for p in g])) for i, g in groups]
        out: list[Metadata | None] = [None] * len(keys)
        for (_, group), values in zip(groups, self._run("get_many", jobs)):
            for pos, value in zip(group, values):
                out[pos] = value
        return out

    def delete_many(self, keys: Iterable[Key]) -> int:
        """Delete many keys (every key validated first); return how many existed."""
        self._check_open()
        keys = list(keys)
        if not keys:
            return 0
        jobs = [
            (i, partial(self._shards[i].delete_many, [keys[p] for p in g]))
            for i, g in enumerate(self._groups(keys))
            if g
        ]
        return sum(int(n) for n in self._run("delete_many", jobs, write=True))

    # ------------------------------------------------------------------ every shard

    def scan(self, prefix: tuple[Any, ...] | None = None) -> Iterator[Key]:
        """Every key under ``prefix``, shard after shard (no global order)."""
        self._check_open()
        prefix = check_prefix(prefix)
        return self._chain("scan", lambda s: s.scan(prefix))

    def items(self, prefix: tuple[Any, ...] | None = None) -> Iterator[tuple[Key, Metadata]]:
        self._check_open()
        prefix = check_prefix(prefix)
        return self._chain("items", lambda s: s.items(prefix))

    def list_keys(self, prefix: tuple[Any, ...] | None = None) -> list[Key]:
        self._check_open()
        prefix = check_prefix(prefix)
        return [k for part in self._each("list_keys", lambda s: s.list_keys(prefix)) for k in part]

    def count(self, prefix: tuple[Any, ...] | None = None) -> int:
        self._check_open()
        prefix = check_prefix(prefix)
        return sum(int(n) for n in self._each("count", lambda s: s.count(prefix)))

    def clear(self, prefix: tuple[Any, ...] | None = None) -> int:
        """Delete every key under ``prefix`` on every shard (not atomic across shards)."""
        self._check_open()
        prefix = check_prefix(prefix)
        return sum(int(n) for n in self._each("clear", lambda s: s.clear(prefix), write=True))

    def flush(self) -> None:
        """Flush the shards that buffer writes (those with a ``flush`` method)."""
        self._check_open()
        jobs = [(i, s.flush) for i, s in enumerate(self._shards) if callable(getattr(s, "flush", None))]
        if jobs:
            self._run("flush", jobs, write=True)

    # ------------------------------------------------------------------ namespaces and lifecycle

    def with_namespace(self, name: str) -> ShardedStore:
        """A sharded view over each shard's view of the sub-namespace ``name``."""
        self._check_open()
        views: list[Any] = []
        try:
            for i, shard in enumerate(self._shards):
                try:
                    views.append(shard.with_namespace(name))
                except Exception as exc:
                    self._raise(i, "with_namespace", exc)
        except BaseException:
            for view in views:
                view.close()
            raise
        child = object.__new__(type(self))
        child.__dict__.update(self.__dict__)  # shares the pool and the set of views
        child._shards = views
        child._checks = [write_checks(v) for v in views]  # a key limit can depend on the namespace
        child._namespace = views[0].namespace
        child._is_view = True
        self._views.add(child)
        return child

    def close(self) -> None:
        """Close this store; a view closes its shard views, the owner its views and (by default) shards."""
        if self._closed:
            return
        if self._is_view:
            self._mark_closed()
            self._close_shards(self._shards)
            return
        super().close()

    def _close_backend(self) -> None:
        self._workers.shutdown()
        if self.close_inner:
            self._close_shards(self._shards)

    def _close_shards(self, shards: list[Any]) -> None:
        failure: tuple[int, Exception] | None = None
        for i, shard in enumerate(shards):
            try:
                shard.close()
            except Exception as exc:
                failure = failure or (i, exc)
        if failure is not None:
            self._raise(failure[0], "close", failure[1])

    def _config(self) -> dict[str, Any]:
        return {"names": list(self._names), "parallel": self.parallel, "close_inner": self.close_inner}

    def __reduce__(self) -> tuple[Any, ...]:
        # Each shard pickles by its own configuration; the clone owns the shards it reopens.
        return (_reshard, (type(self), list(self._shards), list(self._names), self.parallel))

    def _describe(self) -> str:
        return ", ".join(f"{name!r}: {shard!r}" for name, shard in zip(self._names, self._shards))

    def __repr__(self) -> str:
        extra = f", namespace={self._namespace!r}" if self._namespace else ""
        return f"{type(self).__name__}({{{self._describe()}}}{extra}{', closed' if self._closed else ''})"

    # ------------------------------------------------------------------ URLs

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ShardedStore:
        """One shard per host of ``url``: ``redis://[user:pw@]h1:6379,h2:6379/0?prefix=x``.

        Every shard is opened with :func:`~context_framework.open_store` from
        the URL with one host (same scheme, credentials, path and query) and
        ``options``; shard names default to the hosts as written (``h1:6379``),
        so a host keeps its keys when others are added. ``names`` (a list, or
        comma-separated in the query) and ``parallel`` are this store's own
        options. A leading ``sharded+`` is accepted. For stores without hosts
        (SQLite files, memory) use :meth:`from_urls`.
        """
        if not isinstance(url, str) or "://" not in url:
            raise ContextConfigurationError(
                f"a sharded store URL looks like redis://h1,h2/0, got {_shown(url)!r}"
            )
        base, query = split_options(url)
        scheme, _, rest = base.partition("://")
        if scheme.lower().startswith("sharded+"):
            scheme = scheme[len("sharded+") :]
        base = f"{scheme}://{rest}"
        parts = split_url(base)
        shown = mask_url(base)
        own = _take_options(query, options)
        _refuse_cluster(parts.scheme, query, shown)
        hosts = [h.strip() for h in parts.hosts.split(",")] if parts.hosts else []
        if not hosts:
            raise ContextConfigurationError(
                f"a sharded store URL lists its hosts separated by commas "
                f"(sharded+redis://h1:6379,h2:6379/0), got no host in {shown!r}; for stores "
                "without hosts (SQLite files, memory) use ShardedStore.from_urls([...])"
            )
        if "" in hosts:
            raise ContextConfigurationError(
                f"empty host at position {hosts.index('') + 1} of the host list in sharded URL {shown!r}"
            )
        if len(hosts) == 1:
            raise ContextConfigurationError(
                f"a sharded store URL lists two or more hosts separated by commas, got one in {shown!r}; "
                "drop 'sharded+' to open a single store"
            )
        tail = ("/" if parts.slash else "") + parts.path + (f"?{urlencode(query)}" if query else "")
        urls = [f"{scheme}://{parts.userinfo}{parts.at}{host}{tail}" for host in hosts]
        names = own.pop("names", None)
        secrets = [parts.password] if parts.password else []
        return cls._open_all(urls, names if names is not None else hosts, secrets, options, own)

    @classmethod
    def from_urls(
        cls, urls: Sequence[str], names: Sequence[str] | None = None, **options: Any
    ) -> ShardedStore:
        """One shard per store URL (any scheme, e.g. ``sqlite:///a.db``), each opened with ``options``.

        Names default to each URL's hosts (``h1:6379``, as :meth:`from_url`
        names them) or, for URLs without a host, the URL without its query
        and password; pass ``names`` when those are not unique.
        """
        if isinstance(urls, str) or not isinstance(urls, Sequence):
            raise ContextConfigurationError(
                f"from_urls takes a list of store URLs, got {_shown(urls)!r:.100}"
            )
        urls = list(urls)
        own = {k: options.pop(k) for k in ("parallel",) if k in options}
        secrets = []
        defaults = []
        for url in urls:
            if not isinstance(url, str) or "://" not in url:
                raise ContextConfigurationError(f"not a store URL: {_shown(url)!r:.100}")
            base = url.partition("?")[0]
            parts = split_url(base)
            if parts.password:
                secrets.append(parts.password)
            defaults.append(parts.hosts or mask_url(base))
        if names is None:
            if len(set(defaults)) != len(defaults):
                raise ContextConfigurationError(
                    f"cannot name the shards after their hosts, which repeat ({', '.join(defaults)}); "
                    "pass names=[...]"
                )
            names = defaults
        return cls._open_all(urls, names, secrets, options, own)

    @classmethod
    def _open_all(
        cls,
        urls: list[str],
        names: Sequence[str],
        secrets: list[str],
        options: dict[str, Any],
        own: dict[str, Any],
    ) -> ShardedStore:
        from ..registry import open_store

        names = _check_names(names, len(urls))
        stores: list[Any] = []
        try:
            for name, url in zip(names, urls):
                try:
                    stores.append(open_store(url, **options))
                except ContextStoreError as exc:
                    message = mask_secrets(f"opening shard {name!r} failed: {exc}", urls, secrets)
                    raise type(exc)(message) from (exc.__cause__ or exc)
            store = cls(stores, names=names, **own)
        except BaseException:
            for opened in stores:
                opened.close()
            raise
        store._secrets = tuple(secrets)
        return store


def _check_values(values: list[Any], max_size: int | None) -> None:
    """Validate metadata values (the rules of ``set``) without copying them; raise on the first bad one."""
    limit = max_size if max_size is not None else 1 << 62
    for value in values:
        if type(value) is dict and 0 <= _flat_bound(value) <= limit:
            continue  # a flat dict of plain scalars within the size limit: valid
        prepare_value(value, max_size)


def _reshard(cls: type[ShardedStore], shards: list[Any], names: list[str], parallel: bool) -> ShardedStore:
    return cls(shards, names=names, parallel=parallel, close_inner=True)


# --------------------------------------------------------------------------- checks and URL helpers


def _check_stores(stores: Any) -> list[Any]:
    if callable(getattr(stores, "set_many", None)):
        raise ContextConfigurationError(
            "ShardedStore takes a list of stores, got one store; pass [store, ...]"
        )
    if isinstance(stores, (str, bytes, Mapping)) or not isinstance(stores, Iterable):
        raise ContextConfigurationError(
            f"ShardedStore takes a list of stores, got {type(stores).__name__} {stores!r:.100}"
        )
    shards = list(stores)
    if not shards:
        raise ContextConfigurationError("ShardedStore needs at least one store, got an empty list")
    if len({id(s) for s in shards}) != len(shards):
        raise ContextConfigurationError("the same store appears twice among the shards of a ShardedStore")
    shards = [complete_store(s) for s in shards]  # a four-method store, completed
    for i, shard in enumerate(shards):
        missing = [m for m in FULL_API if not callable(getattr(shard, m, None))]
        if missing or not isinstance(getattr(shard, "namespace", None), str):
            raise ContextConfigurationError(
                f"shard {i} of a ShardedStore must be a context store, got {type(shard).__name__} "
                f"without {', '.join(missing) or 'namespace'}"
            )
        if getattr(shard, "closed", False):
            raise ContextStoreClosedError(f"shard {i} of a ShardedStore is closed: {shard!r}")
    return shards


def _check_names(names: Any, count: int) -> tuple[str, ...]:
    if names is None:
        return tuple(f"shard-{i}" for i in range(count))
    if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
        raise ContextConfigurationError(f"shard names must be a list of strings, got {names!r:.100}")
    names = tuple(names)
    if len(names) != count:
        raise ContextConfigurationError(f"got {len(names)} shard names for {count} shards: {names!r:.200}")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ContextConfigurationError(f"a shard name must be a non-empty string, got {name!r}")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ContextConfigurationError(
            f"shard names must be unique, got {', '.join(map(repr, repeated))} twice"
        )
    return names


def _shown(url: Any) -> Any:
    """``url`` as an error message may show it (without its password)."""
    return mask_url(url) if isinstance(url, str) else url


def _take_options(query: dict[str, str], options: dict[str, Any]) -> dict[str, Any]:
    """Take this store's own options (``names``, ``parallel``) out of the query and ``options``."""
    own: dict[str, Any] = {}
    if "names" in query:
        own["names"] = [n.strip() for n in query.pop("names").split(",")]
    if "parallel" in query:
        own["parallel"] = coerce_option("parallel", query.pop("parallel"), bool)
    for name in ("names", "parallel"):
        if name in options:
            own[name] = options.pop(name)
    return own


def _refuse_cluster(scheme: str, query: dict[str, str], shown: str) -> None:
    clustered = scheme.endswith("+cluster") or query.get("cluster", "").lower() in ("1", "true", "yes", "on")
    if clustered:
        raise ContextConfigurationError(
            f"sharding over Redis Cluster is not supported ({shown!r}): a cluster already spreads "
            "keys over its nodes; open 'redis+cluster://host:port,...' without 'sharded+'"
        )
