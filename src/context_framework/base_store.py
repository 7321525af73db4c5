"""The store protocol (:class:`ContextStore`) and the base class every store builds on.

A store persists ``key -> metadata dict``. It never interprets keys (that is
the adapters' job); it only encodes them with :mod:`context_framework.keys`
and checks metadata with :mod:`context_framework.values`.

A new backend subclasses :class:`BaseContextStore` and implements four
methods — :meth:`~BaseContextStore.set`, :meth:`~BaseContextStore.get`,
:meth:`~BaseContextStore.delete` and :meth:`~BaseContextStore.scan` — plus
:meth:`~BaseContextStore._close_backend` and :meth:`~BaseContextStore._config`.
Everything else (batches, ``count``, ``update``, ``increment``, namespaces,
pickling, context-manager use) has a working default that a backend may
override with its native path. The defaults of ``update``/``increment`` are
atomic only within one process (a lock); backends shared between processes
override them.

Namespaces: every store instance is bound to a namespace, a ``/``-separated
path; ``""`` is the root. :meth:`~BaseContextStore.with_namespace` returns a
view on the same backend (same connection, same data) bound to a sub-path.
Closing a view closes only the view; closing the store that created the
backend closes every view of it.
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from numbers import Real
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from .exceptions import (
    ContextConfigurationError,
    ContextSerializationError,
    ContextStoreClosedError,
    ContextValueError,
    UnsupportedKeyError,
)
from .keys import Key, encode_key
from .urls import COMMON_OPTIONS, coerce_option, mask_url, read_options, split_options
from .values import DEFAULT_MAX_VALUE_SIZE, check_size, dumps_json, prepare_value

__all__ = [
    "BaseContextStore",
    "ContextStore",
    "Metadata",
    "Number",
    "apply_increment",
    "check_namespace",
    "increment_result",
]

Metadata = dict[str, Any]
Number = int | float
S = TypeVar("S", bound="BaseContextStore")


@runtime_checkable
class ContextStore(Protocol):
    """What every store offers. Keys are typed (see :mod:`context_framework.keys`).

    A store written as the origin's documentation teaches may subclass this
    protocol and implement only ``set(key, value)``, ``get(key)``,
    ``delete(key)`` and ``list_keys()``: every other method then works, built
    on those four by :func:`context_framework.wrappers.as_context_store`
    (which the adapters apply to such a store anyway). A core method left out
    raises ``NotImplementedError`` naming it; nothing returns ``None`` silently.
    """

    @property
    def namespace(self) -> str:
        return ""

    def set(self, key: Key, value: Mapping[str, Any]) -> None:
        raise _not_implemented(self, "set(key, value)")

    def get(self, key: Key, default: Any = None) -> Metadata | None:
        raise _not_implemented(self, "get(key)")

    def delete(self, key: Key) -> bool:
        raise _not_implemented(self, "delete(key)")

    def list_keys(self, prefix: tuple[Any, ...] | None = None) -> list[Key]:
        raise _not_implemented(self, "list_keys()")

    def set_many(
        self, items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]]
    ) -> None:
        _completed(self).set_many(items)

    def get_many(self, keys: Iterable[Key]) -> list[Metadata | None]:
        return _completed(self).get_many(keys)  # type: ignore[no-any-return]

    def delete_many(self, keys: Iterable[Key]) -> int:
        return _completed(self).delete_many(keys)  # type: ignore[no-any-return]

    def scan(self, prefix: tuple[Any, ...] | None = None) -> Iterator[Key]:
        return _completed(self).scan(prefix)  # type: ignore[no-any-return]

    def items(self, prefix: tuple[Any, ...] | None = None) -> Iterator[tuple[Key, Metadata]]:
        return _completed(self).items(prefix)  # type: ignore[no-any-return]

    def count(self, prefix: tuple[Any, ...] | None = None) -> int:
        return _completed(self).count(prefix)  # type: ignore[no-any-return]

    def exists(self, key: Key) -> bool:
        return _completed(self).exists(key)  # type: ignore[no-any-return]

    def update(self, key: Key, patch: Mapping[str, Any]) -> Metadata:
        return _completed(self).update(key, patch)  # type: ignore[no-any-return]

    def increment(self, key: Key, field: str, by: Number = 1) -> Number:
        return _completed(self).increment(key, field, by)  # type: ignore[no-any-return]

    def clear(self, prefix: tuple[Any, ...] | None = None) -> int:
        return _completed(self).clear(prefix)  # type: ignore[no-any-return]

    def with_namespace(self, name: str) -> ContextStore:
        return _completed(self).with_namespace(name)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Nothing to release by default."""

    @property
    def closed(self) -> bool:
        return False


def _not_implemented(store: Any, method: str) -> NotImplementedError:
    return NotImplementedError(
        f"{type(store).__name__} must implement {method}: a store needs set(key, value), get(key), "
        "delete(key) and list_keys() (see docs/custom-store.md)"
    )


def _completed(store: Any) -> Any:
    """``store`` (a protocol subclass with the four core methods) as a whole store."""
    from .wrappers.minimal import MinimalStoreWrapper

    return MinimalStoreWrapper(store, close_inner=False)


def check_namespace(name: Any) -> str:
    """Validate one namespace name (or a ``/`` path) and return it."""
    if not isinstance(name, str):
        raise ContextConfigurationError(
            f"a namespace must be a string, got {type(name).__name__} {name!r}"
        )
    if "\x00" in name:
        raise ContextConfigurationError(f"a namespace cannot contain NUL characters: {name!r}")
    parts = [p for p in name.split("/") if p]
    return "/".join(parts)


def join_namespace(parent: str, child: str) -> str:
    child = check_namespace(child)
    if not child:
        raise ContextConfigurationError("a child namespace name must not be empty")
    return f"{parent}/{child}" if parent else child


def iter_pairs(
    items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]],
) -> Iterator[tuple[Key, Mapping[str, Any]]]:
    """Yield ``(key, value)`` from a mapping or an iterable of pairs, with a clear error."""
    if isinstance(items, Mapping):
        yield from items.items()
        return
    if type(items) is list:
        for pair in items:
            if type(pair) is not tuple or len(pair) != 2:
                break
        else:
            yield from items
            return
    for i, pair in enumerate(items):
        if type(pair) is not tuple or len(pair) != 2:
            raise ContextSerializationError(
                f"set_many item {i} must be a (key, metadata) pair, got {pair!r:.80}"
            )
        yield pair


def check_prefix(prefix: Any) -> tuple[Any, ...] | None:
    """Validate a scan prefix: ``None`` (everything) or a tuple."""
    if prefix is None or type(prefix) is tuple:
        return prefix
    if isinstance(prefix, tuple):
        return tuple(prefix)
    raise UnsupportedKeyError(
        f"a key prefix must be a tuple or None, got {type(prefix).__name__} {prefix!r}; "
        f"write ({prefix!r},) for the keys that start with it"
    )


def check_increment(field: Any, by: Any) -> None:
    if not isinstance(field, str):
        raise ContextValueError(f"increment field must be a string, got {field!r}")
    if isinstance(by, bool) or not isinstance(by, Real) or by != by or by - by != 0:
        raise ContextValueError(f"increment 'by' must be a finite int or float, got {by!r}")


def apply_increment(current: Metadata | None, key: Key, field: str, by: Number) -> Metadata:
    """Return ``current`` with ``field`` incremented by ``by`` (created at 0 when absent)."""
    new = dict(current) if current is not None else {}
    old = new.get(field, 0)
    if isinstance(old, bool) or not isinstance(old, (int, float)):
        raise ContextValueError(
            f"cannot increment field {field!r} of {key!r}: it holds {old!r}, not a number"
        )
    new[field] = old + (by if type(by) in (int, float) else float(by))
    return new


def increment_result(new: Metadata, key: Key, field: str) -> Number:
    """``new[field]`` after :func:`apply_increment`; ContextValueError when it cannot be stored."""
    result: Number = new[field]
    if type(result) is int and not -(1 << 63) <= result < (1 << 64):
        raise ContextValueError(
            f"cannot increment field {field!r} of {key!r}: the result {result} is outside "
            "the integer range metadata can hold, [-2**63, 2**64)"
        )
    if type(result) is float and result - result != 0.0:
        raise ContextValueError(f"cannot increment field {field!r} of {key!r}: the result is not finite")
    return result


class BaseContextStore(ABC):
    """Base class with working defaults for everything but the four core methods."""

    #: URL scheme(s) this store answers to, e.g. ``"memory"``.
    scheme: ClassVar[str] = ""


    def __init__(
        self, *, namespace: str = "", max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE
    ) -> None:
        if max_value_size is not None and (
            not isinstance(max_value_size, int) or max_value_size <= 0
        ):
            raise ContextConfigurationError(
                f"max_value_size must be a positive int or None, got {max_value_size!r}"
            )
        self._namespace = check_namespace(namespace)
        self.max_value_size = max_value_size
        self._closed = False
        self._is_view = False
        self._views: weakref.WeakSet[BaseContextStore] = weakref.WeakSet()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ core (abstract)

    @abstractmethod
    def set(self, key: Key, value: Mapping[str, Any]) -> None:
        """Store ``value`` under ``key``, replacing what was there."""

    @abstractmethod
    def get(self, key: Key, default: Any = None) -> Metadata | None:
        """Return a fresh copy of the metadata under ``key``, or ``default``."""

    @abstractmethod
    def delete(self, key: Key) -> bool:
        """Remove ``key``; return whether it existed."""

    @abstractmethod
    def scan(self, prefix: tuple[Any, ...] | None = None) -> Iterator[Key]:
        """Yield every key of this namespace that starts with ``prefix`` (all if None)."""

    @abstractmethod
    def _close_backend(self) -> None:
        """Release connections/files. Called once, by the store that owns the backend."""

    @abstractmethod
    def _config(self) -> dict[str, Any]:
        """Constructor keyword arguments that reopen this store (used by pickling)."""

    # ------------------------------------------------------------------ defaults

    def set_many(
        self, items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]]
    ) -> None:
        """Store many entries. All keys and values are validated before anything is written."""
        pairs = list(iter_pairs(items))
        for key, value in pairs:
            encode_key(key)
            self._check_value(value)
        for key, value in pairs:
            self.set(key, value)

    def get_many(self, keys: Iterable[Key]) -> list[Metadata | None]:
        """Return the metadata of each key, in order, with ``None`` where absent."""
        return [self.get(k) for k in keys]

    def delete_many(self, keys: Iterable[Key]) -> int:
        """Delete many keys; return how many existed. All keys are validated first."""
        keys = list(keys)
        for key in keys:
            encode_key(key)
        return sum(1 for k in keys if self.delete(k))

    def items(self, prefix: tuple[Any, ...] | None = None) -> Iterator[tuple[Key, Metadata]]:
        """Yield ``(key, metadata)`` for every key under ``prefix``."""
        for key in self.scan(prefix):
            value = self.get(key)
            if value is not None:
                yield key, value

    def count(self, prefix: tuple[Any, ...] | None = None) -> int:
        """Number of keys under ``prefix`` (all keys of the namespace if None)."""
        return sum(1 for _ in self.scan(prefix))

    def list_keys(self, prefix: tuple[Any, ...] | None = None) -> list[Key]:
        """All keys under ``prefix`` as a list, types intact."""
        return list(self.scan(prefix))

    def exists(self, key: Key) -> bool:
        """Whether ``key`` holds metadata."""
        return self.get(key) is not None

    def __contains__(self, key: Key) -> bool:
        return self.exists(key)

    def clear(self, prefix: tuple[Any, ...] | None = None) -> int:
        """Delete every key under ``prefix`` in this namespace; return how many."""
        return self.delete_many(list(self.scan(prefix)))

    def update(self, key: Key, patch: Mapping[str, Any]) -> Metadata:
        """Merge the fields of ``patch`` into the metadata of ``key`` (created if absent).

        Returns the merged metadata. The default is atomic within this process.
        """
        patch = self._check_value(patch)
        with self._lock:
            current = self.get(key)
            merged = {**current, **patch} if current is not None else patch
            self.set(key, merged)
            return merged

    def increment(self, key: Key, field: str, by: Number = 1) -> Number:
        """Add ``by`` to the numeric ``field`` of ``key`` (0 when absent); return the result."""
        check_increment(field, by)
        with self._lock:
            new = apply_increment(self.get(key), key, field, by)
            result = increment_result(new, key, field)
            self.set(key, new)
            return result

    # ------------------------------------------------------------------ checking writes

    def check_write(self, key: Key, value: Any) -> None:
        """Raise what ``set(key, value)`` would raise because of ``key`` or ``value``; write nothing.

        Nothing is sent to the backend, so this never raises a backend failure.
        Write-behind wrappers (``BufferedStore``) call it when a write enters the
        buffer, so that a write the store will refuse fails in the caller at once.
        The default checks the key (:meth:`check_write_key`), then the value (the
        rules of :mod:`~context_framework.values` and ``max_value_size``). A store
        with a key limit overrides :meth:`check_write_key` (and sets
        :attr:`max_key_size`); one with value rules of its own overrides this.
        """
        self.check_write_key(key)
        self._check_value(value)

    @property
    def max_key_size(self) -> int | None:
        """The longest key (bytes of :func:`~context_framework.keys.encode_key`, namespace not
        counted) that :meth:`check_write_key` accepts; ``None``: every encodable key.

        A store whose backend limits keys overrides it, so that wrappers can skip the
        check for keys that surely fit.
        """
        return None

    def check_write_key(self, key: Key) -> None:
        """The key part of :meth:`check_write`: raise UnsupportedKeyError if a write of ``key``
        would be refused because of the key (not encodable, or over :attr:`max_key_size`)."""
        encoded = encode_key(key)
        limit = self.max_key_size
        if limit is not None and len(encoded) > limit:
            raise UnsupportedKeyError(
                f"cannot use {key!r:.100} as a context key here: it encodes to {len(encoded):,} bytes, "
                f"over the {limit:,}-byte key limit of {self!r}"
            )

    # ------------------------------------------------------------------ helpers

    def _check_value(self, value: Any) -> Metadata:
        """Validate ``value`` (same rules as ``set``) and return a private copy."""
        return prepare_value(value, self.max_value_size)

    def _check_merged_size(self, merged: Metadata) -> None:
        check_size(dumps_json(merged), self.max_value_size)

    def _closed_error(self) -> ContextStoreClosedError:
        return ContextStoreClosedError(f"{self!r} is closed; open a new store to continue")

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    # ------------------------------------------------------------------ namespaces

    @property
    def namespace(self) -> str:
        """The namespace this instance is bound to (``""`` is the root)."""
        return self._namespace

    def with_namespace(self: S, name: str) -> S:
        """A view of this store bound to the sub-namespace ``name`` (same backend)."""
        self._check_open()
        # A plain shallow copy: copy.copy() would go through __reduce__, which
        # reopens the store (a new connection, or an in-memory snapshot), so the
        # "view" would not share the backend at all.
        child = object.__new__(type(self))
        child.__dict__.update(self.__dict__)
        child._namespace = join_namespace(self._namespace, name)
        child._is_view = True
        self._views.add(child)
        child._bind_namespace()
        return child

    def _bind_namespace(self) -> None:
        """Hook: a view was just bound to ``self._namespace``."""

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the store. A view closes itself only; the owner closes every view too."""
        if self._closed:
            return
        if not self._is_view:
            for view in list(self._views):
                view._mark_closed()
            try:
                self._close_backend()
            finally:
                self._mark_closed()
        else:
            self._mark_closed()

    def _mark_closed(self) -> None:
        """Hook: make every later operation on this instance raise ContextStoreClosedError."""
        self._closed = True

    def __enter__(self: S) -> S:
        self._check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ URLs

    #: Query options this store accepts in its URL, with their types.
    url_options: ClassVar[dict[str, type]] = {}

    @classmethod
    def from_url(cls: type[S], url: str, **options: Any) -> S:
        """Open the store described by ``url``; keyword ``options`` override the query."""
        base, query = split_options(url)
        kwargs = cls._parse_url(base)
        kwargs.update(read_options(query, cls._url_option_types(), cls.__name__))
        kwargs.update(options)
        return cls(**kwargs)

    @classmethod
    def _url_option_types(cls) -> dict[str, type]:
        """Every query option this store's URL takes, with its type."""
        return {**COMMON_OPTIONS, **cls.url_options}

    @classmethod
    def _parse_url(cls, base: str) -> dict[str, Any]:
        """Constructor arguments from the URL without its query (host, path...).

        This default is for stores that live nowhere in particular (memory):
        their URL is ``scheme://`` and options, nothing else.
        """
        scheme, _, rest = base.partition("://")
        if rest not in ("", "/"):
            raise ContextConfigurationError(
                f"a {cls.__name__} URL has no host, credentials or path: write {scheme}://?namespace=..., "
                f"got {mask_url(base)!r}"
            )
        return {}

    # ------------------------------------------------------------------ pickling / repr

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (type(self), self._config(), self._namespace))

    def _describe(self) -> str:
        """Where the data lives, without credentials (used by repr and errors)."""
        return ""

    def __repr__(self) -> str:
        where = self._describe()
        parts = [where] if where else []
        if self._namespace:
            parts.append(f"namespace={self._namespace!r}")
        if self._closed:
            parts.append("closed")
        return f"{type(self).__name__}({', '.join(parts)})"


def _reopen(cls: type[BaseContextStore], config: dict[str, Any], namespace: str) -> Any:
    config = dict(config)
    config["namespace"] = namespace
    return cls(**config)


_coerce_option = coerce_option  # the old name, kept for code that imported it
