"""``MinimalStoreWrapper``: a whole context store around one that has only four methods.

A store written as the origin's documentation teaches is a class with
``set(key, value)``, ``get(key)``, ``delete(key)`` and ``list_keys()``
(``docs/custom-store.md``). :func:`as_context_store` wraps such an object in
a :class:`MinimalStoreWrapper`, which supplies everything else from those four
calls — batches, ``count``, ``exists``, prefix scans, ``update`` and
``increment``, namespaces, closing, pickling — and applies the rules every
store applies, so that moving to another store brings no surprise:

* keys are normalised and checked by the key codec (``numpy.int64(3)``
  reaches the user's store as ``3``; a list is refused); values are checked
  and copied by the value rules (``max_value_size`` included), on the way in
  and on the way out;
* the user's methods are called with *their* signatures: ``get(key)`` without
  a default, ``list_keys()`` without a prefix (prefixes are applied here);
  keys that ``list_keys()`` returns come back exactly as it gave them;
* ``update`` and ``increment`` are atomic within this process: every write
  through any wrapper of the same object takes one lock;
* namespaces are a key-prefix scheme: in namespace ``"a/b"`` the key ``k`` is
  stored as ``("__namespace__", "a/b", k)``; the root namespace lists and
  clears only its own keys, and refuses keys that start with
  ``"__namespace__"``. Namespaces therefore need a store whose ``list_keys()``
  returns the tuples it was given.

The adapters and the store wrappers apply :func:`as_context_store` to any
store object that lacks the full API, so a four-method store can be passed
wherever a store is expected.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..base_store import (
    BaseContextStore,
    ContextStore,
    Metadata,
    Number,
    apply_increment,
    check_increment,
    check_prefix,
    increment_result,
    iter_pairs,
)
from ..exceptions import ContextError, ContextKeyError, ContextStoreError
from ..keys import Key, decode_key, encode_key, encode_prefix, has_prefix, normalize_key
from ..values import DEFAULT_MAX_VALUE_SIZE, prepare_value

__all__ = [
    "CORE_METHODS",
    "FULL_API",
    "NAMESPACE_MARK",
    "MinimalStoreWrapper",
    "as_context_store",
    "complete_store",
    "is_full_store",
]

#: The four methods a user's store must have.
CORE_METHODS = ("set", "get", "delete", "list_keys")
#: What an object needs (as its own methods, not the ``ContextStore`` protocol's
#: defaults) to be used as a store without a wrapper.
FULL_API = (
    *CORE_METHODS, "set_many", "get_many", "delete_many", "scan", "items", "count",
    "exists", "clear", "update", "increment", "with_namespace", "close",
)  # fmt: skip
#: First element of the keys that hold a namespace's entries in the user's store.
NAMESPACE_MARK = "__namespace__"

# One lock per user store object, shared by every wrapper of it in this process.
_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_locks_by_id: dict[int, threading.Lock] = {}  # for unhashable stores (a dataclass), while they live
_locks_guard = threading.Lock()


def _lock_for(store: Any) -> threading.Lock:
    with _locks_guard:
        try:
            return _locks.setdefault(store, threading.Lock())
        except TypeError:
            pass
        lock = _locks_by_id.get(id(store))
        if lock is None:
            lock = threading.Lock()
            try:
                weakref.finalize(store, _locks_by_id.pop, id(store), None)
            except TypeError:  # not weakly referenceable either: a lock per wrapper
                return lock
            _locks_by_id[id(store)] = lock
        return lock


def is_full_store(obj: Any) -> bool:
    """Whether ``obj`` offers the whole store API itself (no wrapper needed)."""
    if isinstance(obj, BaseContextStore):
        return True
    cls = type(obj)
    for name in FULL_API:
        if not callable(getattr(obj, name, None)):
            return False
        if getattr(cls, name, None) is getattr(ContextStore, name, None):
            return False  # the protocol's default: built on the four methods by a wrapper
    return True


def as_context_store(
    store: Any,
    *,
    max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE,
    close_inner: bool = True,
) -> Any:
    """``store`` itself if it is a whole context store, else a :class:`MinimalStoreWrapper` of it.

    ``max_value_size`` and ``close_inner`` apply to a new wrapper only.
    Raises ``TypeError`` naming the missing methods when ``store`` lacks one of
    ``set``, ``get``, ``delete`` and ``list_keys``.
    """
    if is_full_store(store):
        return store
    return MinimalStoreWrapper(store, max_value_size=max_value_size, close_inner=close_inner)


def complete_store(store: Any, *, close_inner: bool = True) -> Any:
    """``store`` wrapped if it has the four core methods but not the full API, else unchanged.

    For callers that report a store lacking the core methods in their own words.
    """
    if is_full_store(store) or not all(callable(getattr(store, m, None)) for m in CORE_METHODS):
        return store
    return MinimalStoreWrapper(store, close_inner=close_inner)


def _stored_copy(raw: Any, store: Any, key: Any) -> Metadata:
    """A fresh copy of what the user's ``get`` returned, checked by the value rules."""
    if not isinstance(raw, Mapping):
        raise ContextStoreError(
            f"{type(store).__name__}.get({key!r}) returned {type(raw).__name__} {raw!r:.80}; "
            "a store's get returns the dict it was given, or None"
        )
    return prepare_value(raw, None)


class MinimalStoreWrapper(BaseContextStore):
    """The whole store API over a user's ``set``/``get``/``delete``/``list_keys``.

    See the module docstring. Args:
        store: the user's object.
        namespace: the namespace this wrapper is bound to (``""``: the root).
        max_value_size: largest accepted value, in bytes of JSON (``None``: no limit).
        close_inner: whether :meth:`close` calls the user's ``close()`` (if it has one).
    """

    def __init__(
        self,
        store: Any,
        *,
        namespace: str = "",
        max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE,
        close_inner: bool = True,
    ) -> None:
        missing = [m for m in CORE_METHODS if not callable(getattr(store, m, None))]
        if missing:
            raise TypeError(
                f"a context store needs set(key, value), get(key), delete(key) and list_keys(); "
                f"got {type(store).__name__} without {', '.join(missing)}"
            )
        super().__init__(namespace=namespace, max_value_size=max_value_size)
        self.inner = store
        self.close_inner = close_inner
        self._lock = _lock_for(store)

    # ------------------------------------------------------------------ keys

    def _stored_key(self, key: Any) -> Any:
        """The key the user's store holds for the (canonical) ``key`` of this namespace."""
        if self._namespace:
            return (NAMESPACE_MARK, self._namespace, key)
        if type(key) is tuple and key and key[0] == NAMESPACE_MARK:
            raise ContextKeyError(
                f"keys starting with {NAMESPACE_MARK!r} hold the namespaces of this store, got {key!r}; "
                "use with_namespace() (an adapter's name=) instead"
            )
        return key

    def _key(self, key: Any) -> Any:
        """``key`` normalised, checked by the key codec, and mapped to the user's store."""
        norm = normalize_key(key)
        encode_key(norm)
        return self._stored_key(norm)

    def _listed(self) -> Iterator[tuple[Any, Any]]:
        """``(key in the user's store, key of this namespace)`` for every key of this namespace."""
        self._check_open()
        keys = self.inner.list_keys()
        if keys is None:
            raise ContextStoreError(f"{type(self.inner).__name__}.list_keys() returned None, not a list")
        namespace = self._namespace
        for raw in list(keys):
            held = type(raw) is tuple and len(raw) == 3 and type(raw[0]) is str and raw[0] == NAMESPACE_MARK
            if not namespace:
                if not held:
                    yield raw, raw
            elif held and raw[1] == namespace:
                yield raw, raw[2]

    def _under(self, prefix: tuple[Any, ...] | None) -> Iterator[tuple[Any, Any]]:
        """:meth:`_listed` restricted to the keys under ``prefix`` (type-exact, as every store)."""
        prefix = check_prefix(prefix)
        if not prefix:
            yield from self._listed()
            return
        encoded = encode_prefix(prefix)
        for raw, key in self._listed():
            if isinstance(key, tuple):
                try:
                    if has_prefix(encode_key(key), encoded):
                        yield raw, key
                except ContextError:  # a key the codec cannot encode is under no prefix
                    pass

    # ------------------------------------------------------------------ core

    def set(self, key: Key, value: Mapping[str, Any]) -> None:
        self._check_open()
        stored, value = self._key(key), self._check_value(value)
        with self._lock:
            self.inner.set(stored, value)

    def _set_normalized(self, ckey: Any, value: Mapping[str, Any]) -> None:
        """``set`` for a key already in canonical form (adapters and caches call this directly)."""
        self._check_open()
        stored = self._stored_key(decode_key(ckey) if type(ckey) is bytes else ckey)
        value = self._check_value(value)
        with self._lock:
            self.inner.set(stored, value)

    def get(self, key: Key, default: Any = None) -> Metadata | None:
        self._check_open()
        return self._read(self._key(key), key, default)

    def _get_normalized(self, ckey: Any, default: Any = None) -> Metadata | None:
        """``get`` for a key already in canonical form (adapters and caches call this directly)."""
        self._check_open()
        return self._read(self._stored_key(decode_key(ckey) if type(ckey) is bytes else ckey), ckey, default)

    def _read(self, stored: Any, key: Any, default: Any) -> Metadata | None:
        raw = self.inner.get(stored)
        return default if raw is None else _stored_copy(raw, self.inner, key)  # type: ignore[no-any-return]

    def delete(self, key: Key) -> bool:
        self._check_open()
        stored = self._key(key)
        with self._lock:
            return self._delete_stored(stored)

    def _delete_stored(self, stored: Any) -> bool:
        """Delete one key of the user's store (caller holds the lock); whether it was there."""
        if self.inner.get(stored) is None:
            return False  # never ask a store to delete what it does not hold (it may raise)
        self.inner.delete(stored)
        return True

    def scan(self, prefix: tuple[Any, ...] | None = None) -> Iterator[Key]:
        for _, key in self._under(prefix):
            yield key

    # ------------------------------------------------------------------ batches

    def set_many(
        self, items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]]
    ) -> None:
        """Store many entries; every key and value is checked before the first is written."""
        self._check_open()
        checked = [(self._key(k), self._check_value(v)) for k, v in iter_pairs(items)]
        with self._lock:
            for stored, value in checked:
                self.inner.set(stored, value)

    def delete_many(self, keys: Iterable[Key]) -> int:
        self._check_open()
        stored = [self._key(k) for k in keys]
        with self._lock:
            return sum(1 for s in stored if self._delete_stored(s))

    def exists(self, key: Key) -> bool:
        self._check_open()
        return self.inner.get(self._key(key)) is not None

    def count(self, prefix: tuple[Any, ...] | None = None) -> int:
        return sum(1 for _ in self._under(prefix))

    def clear(self, prefix: tuple[Any, ...] | None = None) -> int:
        """Delete every key of this namespace under ``prefix``, as the user's store listed it."""
        doomed = [raw for raw, _ in self._under(prefix)]
        with self._lock:
            return sum(1 for raw in doomed if self._delete_stored(raw))

    # ------------------------------------------------------------------ atomic changes

    def update(self, key: Key, patch: Mapping[str, Any]) -> Metadata:
        self._check_open()
        stored, patch = self._key(key), self._check_value(patch)
        with self._lock:
            raw = self.inner.get(stored)
            merged = patch if raw is None else {**_stored_copy(raw, self.inner, key), **patch}
            self._check_merged_size(merged)
            self.inner.set(stored, merged)
        return prepare_value(merged, None)

    def increment(self, key: Key, field: str, by: Number = 1) -> Number:
        self._check_open()
        check_increment(field, by)
        stored = self._key(key)
        with self._lock:
            raw = self.inner.get(stored)
            current = None if raw is None else _stored_copy(raw, self.inner, key)
            new = apply_increment(current, key, field, by)
            result = increment_result(new, key, field)
            self._check_merged_size(new)
            self.inner.set(stored, new)
        return result

    # ------------------------------------------------------------------ lifecycle, pickling, repr

    def _close_backend(self) -> None:
        close = getattr(self.inner, "close", None)
        if self.close_inner and callable(close):
            close()

    def _config(self) -> dict[str, Any]:
        return {"store": self.inner, "max_value_size": self.max_value_size, "close_inner": self.close_inner}

    def _describe(self) -> str:
        return type(self.inner).__name__  # never the user's repr: it may show a password
