"""``BaseContextAdapter``: the store-facing half of every adapter.

An adapter wraps one data structure and a store. It validates keys against
the data (subclasses implement :meth:`BaseContextAdapter.validate_key`) and
then hands them to the store unchanged. With ``name=`` the adapter works in
its own namespace of the store, so many datasets can share one store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

from .._gc import gc_paused
from ..base_store import BaseContextStore, ContextStore, Metadata, Number, check_prefix, iter_pairs
from ..in_memory_context_store import InMemoryContextStore
from ..keys import Key

__all__ = ["ANNOTATION_KIND", "DATASET_KEY", "BaseContextAdapter"]

#: What an adapter needs of a store (checked when the adapter is made).
_STORE_METHODS = ("set", "get", "delete", "set_many", "get_many", "delete_many", "items")

#: The key of the metadata that describes the whole data structure.
DATASET_KEY: tuple[str] = ("dataset",)

#: The key kind of row annotations (:mod:`.annotations`): reserved, not a user's key.
ANNOTATION_KIND = "annotation"


class BaseContextAdapter:
    """Attach context to parts of ``data``, kept in ``context_store``.

    Args:
        data: the wrapped data structure.
        context_store: any store; a fresh :class:`InMemoryContextStore` if omitted.
            A URL string (``"sqlite:///ctx.db"``) is opened with ``open_store``.
        name: optional namespace for this dataset inside the store.
        buffer, flush_interval, cache, cache_ttl: wrap the store in a write buffer
            and/or a read cache (see :func:`context_framework.wrappers.wrap_store`);
            call :meth:`flush` (or :meth:`close`) to send buffered writes.
    """

    def __init__(
        self,
        data: Any,
        context_store: ContextStore | str | None = None,
        *,
        name: str | None = None,
        buffer: int | bool | None = None,
        flush_interval: float | None = None,
        cache: int | bool | None = None,
        cache_ttl: float | None = None,
    ) -> None:
        store: ContextStore
        if context_store is None:
            store = InMemoryContextStore()
        elif isinstance(context_store, str):
            from ..registry import open_store

            store = open_store(context_store)
        else:
            missing = [m for m in _STORE_METHODS if not callable(getattr(context_store, m, None))]
            if missing:
                raise TypeError(
                    f"context_store must be a context store (or a store URL), got "
                    f"{type(context_store).__name__} without {', '.join(missing)}"
                )
            store = context_store
        # The adapter closes what it opened: a store from a URL, and its own wrappers
        # (which leave a store passed in open).
        self._owns_store = not isinstance(context_store, BaseContextStore) and not callable(
            getattr(context_store, "set", None)
        )
        if buffer or cache or flush_interval is not None or cache_ttl is not None:
            from ..wrappers import wrap_store

            store = wrap_store(
                store,
                buffer=buffer,
                flush_interval=flush_interval,
                cache=cache,
                cache_ttl=cache_ttl,
                close_inner=self._owns_store,
            )
            self._owns_store = True
        self.data = data
        self.name = name
        self._root_store = store
        self._store: ContextStore = store.with_namespace(name) if name else store

    @property
    def context_store(self) -> ContextStore:
        """The store (bound to this adapter's namespace) that holds the context."""
        return self._store

    # ------------------------------------------------------------------ validation

    def validate_key(self, key: Key) -> Key:
        """Check ``key`` against the data; return the key to store. Subclasses override."""
        return key

    def validate_keys(self, keys: Iterable[Key]) -> list[Key]:
        """Validate many keys (all before any is used); subclasses may vectorise."""
        validate = self.validate_key
        return [validate(k) for k in keys]

    # ------------------------------------------------------------------ single keys

    def add_context(self, key: Key, metadata: Mapping[str, Any]) -> None:
        """Attach ``metadata`` to ``key`` (replacing what was there)."""
        self._store.set(self.validate_key(key), metadata)

    def get_context(self, key: Key, default: Any = None) -> Metadata | None:
        """The metadata of ``key`` (a fresh dict), or ``default`` when it has none."""
        return self._store.get(self.validate_key(key), default)

    def remove_context(self, key: Key) -> bool:
        """Remove the metadata of ``key``; return whether there was any."""
        return self._store.delete(self.validate_key(key))

    def has_context(self, key: Key) -> bool:
        """Whether ``key`` carries metadata."""
        return self._store.exists(self.validate_key(key))

    def update_context(self, key: Key, patch: Mapping[str, Any]) -> Metadata:
        """Merge ``patch`` into the metadata of ``key`` atomically; return the result."""
        return self._store.update(self.validate_key(key), patch)

    def increment_context(self, key: Key, field: str, by: Number = 1) -> Number:
        """Atomically add ``by`` to the numeric ``field`` of ``key``; return the result."""
        return self._store.increment(self.validate_key(key), field, by)

    #: Key kinds of entries the adapter keeps for itself (e.g. row annotations): left
    #: out of :meth:`list_context_keys`, :meth:`iter_context` and :meth:`count_context`.
    internal_kinds: ClassVar[tuple[str, ...]] = ()

    def list_context_keys(self, prefix: tuple[Any, ...] | None = None) -> list[Key]:
        """Every key of this adapter's namespace (under ``prefix``), types intact."""
        prefix = check_prefix(prefix)
        hidden = self._internal_under(prefix)
        if hidden == "all":
            return []
        keys = self._store.list_keys(prefix)
        return keys if hidden == "none" else [k for k in keys if not self._is_internal(k)]

    def iter_context(self, prefix: tuple[Any, ...] | None = None) -> Iterator[tuple[Key, Metadata]]:
        """Stream ``(key, metadata)`` pairs under ``prefix``."""
        prefix = check_prefix(prefix)
        hidden = self._internal_under(prefix)
        if hidden == "all":
            return iter(())
        pairs = self._store.items(prefix)
        return pairs if hidden == "none" else (p for p in pairs if not self._is_internal(p[0]))

    def count_context(self, prefix: tuple[Any, ...] | None = None) -> int:
        """How many keys carry metadata (under ``prefix``)."""
        prefix = check_prefix(prefix)
        hidden = self._internal_under(prefix)
        if hidden == "all":
            return 0
        count = self._store.count(prefix)
        if hidden == "some":  # two range counts; max(): internal entries written in between
            count = max(0, count - sum(self._store.count((kind,)) for kind in self.internal_kinds))
        return count

    def _internal_under(self, prefix: tuple[Any, ...] | None) -> str:
        """Whether ``"all"``, ``"some"`` or ``"none"`` of the keys under ``prefix`` may be internal."""
        if not self.internal_kinds:
            return "none"
        if not prefix:
            return "some"
        return "all" if isinstance(prefix[0], str) and prefix[0] in self.internal_kinds else "none"

    def _is_internal(self, key: Key) -> bool:
        return type(key) is tuple and len(key) > 0 and key[0] in self.internal_kinds

    def clear_context(self, prefix: tuple[Any, ...] | None = None) -> int:
        """Remove every key of this adapter's namespace (under ``prefix``)."""
        return self._store.clear(prefix)

    # ------------------------------------------------------------------ dataset-level

    def add_dataset_context(self, metadata: Mapping[str, Any]) -> None:
        """Attach metadata to the whole data structure (key ``("dataset",)``)."""
        self._store.set(DATASET_KEY, metadata)

    def get_dataset_context(self, default: Any = None) -> Metadata | None:
        """The metadata of the whole data structure."""
        return self._store.get(DATASET_KEY, default)

    # ------------------------------------------------------------------ batches

    def add_context_many(
        self,
        items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]],
    ) -> None:
        """Attach many ``(key, metadata)`` pairs through the store's batch path.

        Every key is validated first: one bad key stores nothing.
        """
        with gc_paused():
            pairs = list(iter_pairs(items))
            keys = self.validate_keys([k for k, _ in pairs])
            pairs = list(zip(keys, [v for _, v in pairs]))
        self._store.set_many(pairs)

    def get_context_many(self, keys: Iterable[Key]) -> list[Metadata | None]:
        """The metadata of each key in order (``None`` where absent), in one batch."""
        return self._store.get_many(self.validate_keys(keys))

    def remove_context_many(self, keys: Iterable[Key]) -> int:
        """Remove many keys in one batch; return how many had metadata."""
        return self._store.delete_many(self.validate_keys(keys))

    # ------------------------------------------------------------------ lifecycle

    def flush(self) -> None:
        """Send buffered writes to the store now (a no-op without a write buffer)."""
        flush = getattr(self._store, "flush", None)
        if flush is not None:
            flush()

    def close(self) -> None:
        """Flush buffered writes and close what this adapter opened.

        A store the adapter opened from a URL (or made itself) is closed, as are
        the buffer and cache it added; a store object passed in stays open.
        """
        if self._owns_store:
            self._root_store.close()
        else:
            self.flush()

    def __enter__(self) -> BaseContextAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        return f"{type(self).__name__}({type(self.data).__name__}, {self._store!r}{name})"
