"""``BaseContextAdapter``: the store-facing half of every adapter.

An adapter wraps one data structure and a store. It validates keys against
the data (subclasses implement :meth:`BaseContextAdapter.validate_key`) and
then hands them to the store unchanged. With ``name=`` the adapter works in
its own namespace of the store, so many datasets can share one store.

The origin's adapter shape works as it is written (``docs/custom-adapter.md``):
a subclass may call ``super().__init__(context_store)`` with the store as the
only argument and set ``self.data`` itself, and its ``validate_key`` may
raise or return nothing (``None``: the key is fine, use it as given). A store
with only ``set``/``get``/``delete``/``list_keys`` is completed by
:func:`~context_framework.wrappers.as_context_store`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

from .._gc import gc_paused
from ..base_store import BaseContextStore, ContextStore, Metadata, Number, check_prefix, iter_pairs
from ..exceptions import ContextConfigurationError, ContextKeyError
from ..in_memory_context_store import InMemoryContextStore
from ..keys import Key
from ..wrappers.minimal import CORE_METHODS, as_context_store

__all__ = ["ANNOTATION_KIND", "DATASET_KEY", "BaseContextAdapter", "cell_form_error"]

#: The key of the metadata that describes the whole data structure.
DATASET_KEY: tuple[str] = ("dataset",)

#: The key kind of row annotations (:mod:`.annotations`): reserved, not a user's key.
ANNOTATION_KIND = "annotation"


def cell_form_error(key: Any, label: Any, name: Any) -> ContextKeyError:
    """The error for a cell key written in another shape than ``("row", label, "column", name)``."""
    return ContextKeyError(
        f"a cell key is ('row', label, 'column', name): write {('row', label, 'column', name)!r}, "
        f"not {key!r}"
    )


class BaseContextAdapter:
    """Attach context to parts of ``data``, kept in ``context_store``.

    Args:
        data: the wrapped data structure. A store given as the only argument
            (``super().__init__(context_store)``) is taken as the store; the
            subclass then sets ``self.data`` itself.
        context_store: any store; a fresh :class:`InMemoryContextStore` if omitted.
            A URL string (``"sqlite:///ctx.db"``) is opened with ``open_store``; an
            object with only ``set``/``get``/``delete``/``list_keys`` is completed
            by :func:`~context_framework.wrappers.as_context_store`.
        name: optional namespace for this dataset inside the store.
        buffer, flush_interval, cache, cache_ttl: wrap the store in a write buffer
            and/or a read cache (see :func:`context_framework.wrappers.wrap_store`);
            call :meth:`flush` (or :meth:`close`) to send buffered writes.
    """

    #: Why this class's ``validate_key`` cannot work (raised when an adapter is made), or "".
    _validate_key_problem: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        validate = cls.__dict__.get("validate_key")
        if not inspect.isfunction(validate) or cls.__module__.startswith("context_framework."):
            return
        cls._validate_key_problem = _signature_problem(cls, validate)
        cls.validate_key = _none_means_as_given(validate)  # type: ignore[method-assign,assignment]

    def __init__(
        self,
        data: Any = None,
        context_store: ContextStore | str | None = None,
        *,
        name: str | None = None,
        buffer: int | bool | None = None,
        flush_interval: float | None = None,
        cache: int | bool | None = None,
        cache_ttl: float | None = None,
    ) -> None:
        if self._validate_key_problem:
            raise ContextConfigurationError(self._validate_key_problem)
        if context_store is None and _meant_as_store(data):
            # The origin's shape: super().__init__(context_store), self.data set by the subclass.
            data, context_store = None, data
        if data is None:  # keep what a subclass set before calling super().__init__
            data = self.__dict__.get("data")
        store: ContextStore
        if context_store is None:
            store = InMemoryContextStore()
        elif isinstance(context_store, str):
            from ..registry import open_store

            store = open_store(context_store)
        else:
            try:
                # A store passed in stays open when the adapter closes: so does a wrapper's store.
                store = as_context_store(context_store, close_inner=False)
            except TypeError as exc:
                raise TypeError(f"context_store must be a context store (or a store URL): {exc}") from None
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
        self._given_store = context_store
        self._root_store = store
        self._store: ContextStore = store.with_namespace(name) if name else store

    @property
    def context_store(self) -> ContextStore:
        """The store (bound to this adapter's namespace) that holds the context."""
        return self._store

    @context_store.setter
    def context_store(self, store: Any) -> None:
        # The origin's adapters may assign the store instead of calling super().__init__.
        if "_store" in self.__dict__:
            if store is self._given_store or store is self._store:
                return  # the store it already has (set by super().__init__ too)
            raise ContextConfigurationError(
                f"the store of a {type(self).__name__} is set when it is made: pass it to "
                "super().__init__(context_store) (or to the constructor), not by assignment"
            )
        BaseContextAdapter.__init__(self, None, store)

    # ------------------------------------------------------------------ validation

    def validate_key(self, key: Key) -> Key:
        """Check ``key`` against the data; return the key to store. Subclasses override.

        An override raises (a :class:`~context_framework.exceptions.ContextKeyError`)
        for a key that does not name a part of the data, and returns the key
        to store, or ``None`` for "the key as given".
        """
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
            pairs = self._checked_pairs(items if type(items) is list else list(iter_pairs(items)))
        self._store.set_many(pairs)

    def _checked_pairs(self, pairs: list[Any]) -> list[Any]:
        """``(key, metadata)`` pairs with every key validated."""
        keys = self.validate_keys([pair[0] for pair in iter_pairs(pairs)])
        return list(zip(keys, [pair[1] for pair in pairs]))

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


def _none_means_as_given(validate: Callable[[Any, Key], Any]) -> Callable[[Any, Key], Key]:
    """A subclass's ``validate_key`` that returns the key itself where the original returns ``None``."""

    @functools.wraps(validate)
    def validate_key(self: Any, key: Key) -> Key:
        valid = validate(self, key)
        return key if valid is None else valid

    return validate_key


def _signature_problem(cls: type, validate: Any) -> str:
    """Why ``validate`` cannot be called as ``validate_key(self, key)``, or ""."""
    try:
        inspect.signature(validate).bind(None, ("key",))
    except TypeError:
        return f"{cls.__name__}.validate_key must take the key to check: def validate_key(self, key)"
    except ValueError:  # no signature to inspect (a builtin): trust it
        pass
    return ""


def _meant_as_store(data: Any) -> bool:
    """Whether the only argument given is a store (the origin's ``super().__init__(context_store)``).

    An object with ``set`` and ``get`` but without the rest of the four methods is
    neither clearly data nor a store: refused, so that its writes are not silently
    kept elsewhere.
    """
    if isinstance(data, BaseContextStore):
        return True
    cls = type(data)  # methods of the class: a DataFrame's columns are attributes too
    if not (callable(getattr(cls, "set", None)) and callable(getattr(cls, "get", None))):
        return False
    missing = [m for m in CORE_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        raise TypeError(
            f"{type(data).__name__} was given as the only argument and has set() and get(), but "
            f"no {', '.join(missing)}: a context store needs set(key, value), get(key), delete(key) "
            "and list_keys(). To wrap it as data, pass a store too: (data, InMemoryContextStore())"
        )
    return True
