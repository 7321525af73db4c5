"""``InMemoryContextStore``: a thread-safe store that lives in this process.

It keeps a private copy of each value and hands out fresh copies, applies
the same key and value rules as every other store, and is the fastest
store by far. Its data is gone when the process exits; pickling it (e.g. to
send it to a worker) sends a snapshot of its data, not a shared view.

Keys are kept in a canonical form: tuples of exact ``str``/``int`` parts
(the common case) are used as they are; any other key is kept as its
encoded bytes, so ``("row", 1)``, ``("row", True)`` and ``("row", 1.0)``
never collide although Python considers them equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .base_store import (
    BaseContextStore,
    Metadata,
    Number,
    apply_increment,
    check_increment,
    check_prefix,
    iter_pairs,
)
from .exceptions import ContextStoreClosedError
from .keys import Key, decode_key, encode_key, encode_prefix, normalize_key
from .values import _INT_MAX, _INT_MIN, DEFAULT_MAX_VALUE_SIZE, dumps_json, prepare_value

__all__ = ["InMemoryContextStore"]


class _Nested:
    """A stored value that holds lists or dicts: kept as JSON, decoded on each get."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _freeze(value: Metadata) -> Metadata | _Nested:
    for v in value.values():
        if type(v) is dict or type(v) is list:
            return _Nested(dumps_json(value))
    return value


def _thaw(stored: Metadata | _Nested) -> Metadata:
    if type(stored) is dict:
        return stored.copy()
    from .values import decode_value

    return decode_value(stored.text)  # type: ignore[union-attr]


def _canonical(key: Any) -> Any:
    """The dict key for ``key``: itself for str/int tuples and scalars, else its encoding."""
    t = type(key)
    if t is tuple:
        for part in key:
            tp = type(part)
            if tp is not str and tp is not int:
                break
        else:
            return key
        norm = normalize_key(key)
        for part in norm:  # type: ignore[union-attr]
            tp = type(part)
            if tp is not str and tp is not int:
                return encode_key(norm)
        return norm
    if t is str or t is int:
        return key
    norm = normalize_key(key)
    if type(norm) is str or type(norm) is int:
        return norm
    return encode_key(norm)


def _original(ckey: Any) -> Key:
    return decode_key(ckey) if type(ckey) is bytes else ckey


class _ClosedData(dict):  # type: ignore[type-arg]
    """Stands in for the data of a closed store: every access raises."""

    def __init__(self, store: BaseContextStore) -> None:
        super().__init__()
        self._store_repr = repr(store)

    def _raise(self, *args: Any, **kwargs: Any) -> Any:
        raise ContextStoreClosedError(f"{self._store_repr} is closed; open a new store to continue")

    __setitem__ = __getitem__ = __delitem__ = get = pop = keys = values = items = _raise
    __iter__ = __len__ = __contains__ = setdefault = update = _raise


class InMemoryContextStore(BaseContextStore):
    """A thread-safe, in-process store. ``InMemoryContextStore()`` or ``open_store("memory://")``."""

    scheme = "memory"

    def __init__(
        self, *, namespace: str = "", max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE
    ) -> None:
        super().__init__(namespace=namespace, max_value_size=max_value_size)
        self._spaces: dict[str, dict[Any, Any]] = {}
        self._data: dict[Any, Any] = self._spaces.setdefault(self._namespace, {})

    def _bind_namespace(self) -> None:
        self._data = self._spaces.setdefault(self._namespace, {})

    def _mark_closed(self) -> None:
        super()._mark_closed()
        self._data = _ClosedData(self)

    def _close_backend(self) -> None:
        self._spaces.clear()

    def _config(self) -> dict[str, Any]:
        return {"max_value_size": self.max_value_size}

    def _describe(self) -> str:
        return "memory"

    # ------------------------------------------------------------------ core

    def set(self, key: Key, value: Mapping[str, Any]) -> None:
        if type(key) is tuple and len(key) == 2 and type(key[0]) is str and type(key[1]) is int:
            ckey: Any = key
        else:
            ckey = _canonical(key)
        stored: Any = None
        if type(value) is dict:
            # Inlined fast path of values.prepare_value for flat dicts of plain scalars.
            bound = 2
            for k, v in value.items():
                tv = type(v)
                if type(k) is not str:
                    break
                if tv is str:
                    bound += 6 * (len(k) + len(v)) + 6
                elif tv is int:
                    if not _INT_MIN <= v <= _INT_MAX:
                        break
                    bound += 6 * len(k) + 26
                elif tv is float:
                    if v - v != 0.0:
                        break
                    bound += 6 * len(k) + 30
                elif tv is bool or v is None:
                    bound += 6 * len(k) + 10
                else:
                    break
            else:
                max_size = self.max_value_size
                if max_size is None or bound <= max_size:
                    stored = value.copy()
        if stored is None:
            stored = _freeze(prepare_value(value, self.max_value_size))
        lock = self._lock
        lock.acquire()
        try:
            self._data[ckey] = stored
        finally:
            lock.release()

    def get(self, key: Key, default: Any = None) -> Metadata | None:
        if type(key) is tuple and len(key) == 2 and type(key[0]) is str and type(key[1]) is int:
            stored = self._data.get(key)
        else:
            stored = self._data.get(_canonical(key))
        if type(stored) is dict:
            return stored.copy()
        if stored is None:
            return default  # type: ignore[no-any-return]
        return _thaw(stored)

    def delete(self, key: Key) -> bool:
        ckey = _canonical(key)
        with self._lock:
            return self._data.pop(ckey, _MISSING) is not _MISSING

    def exists(self, key: Key) -> bool:
        return _canonical(key) in self._data

    def scan(self, prefix: tuple[Any, ...] | None = None) -> Iterator[Key]:
        prefix = check_prefix(prefix)
        snapshot = list(self._data)
        if not prefix:
            for ckey in snapshot:
                yield _original(ckey)
            return
        n = len(prefix)
        plain = all(type(p) is str or type(p) is int for p in prefix)
        encoded = encode_prefix(prefix)
        for ckey in snapshot:
            if type(ckey) is tuple:
                if plain:
                    if ckey[:n] == prefix:
                        yield ckey
                elif encode_key(ckey).startswith(encoded):
                    yield ckey
            elif type(ckey) is bytes and ckey.startswith(encoded):
                yield decode_key(ckey)

    # ------------------------------------------------------------------ batches and atomics

    def set_many(
        self, items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]]
    ) -> None:
        prepared = [
            (_canonical(k), _freeze(prepare_value(v, self.max_value_size)))
            for k, v in iter_pairs(items)
        ]
        with self._lock:
            self._data.update(prepared)

    def get_many(self, keys: Iterable[Key]) -> list[Metadata | None]:
        data = self._data
        out: list[Metadata | None] = []
        for key in keys:
            stored = data.get(_canonical(key))
            out.append(None if stored is None else _thaw(stored))
        return out

    def delete_many(self, keys: Iterable[Key]) -> int:
        ckeys = [_canonical(k) for k in keys]
        with self._lock:
            data = self._data
            return sum(1 for c in ckeys if data.pop(c, _MISSING) is not _MISSING)

    def items(self, prefix: tuple[Any, ...] | None = None) -> Iterator[tuple[Key, Metadata]]:
        for key in self.scan(prefix):
            stored = self._data.get(_canonical(key))
            if stored is not None:
                yield key, _thaw(stored)

    def count(self, prefix: tuple[Any, ...] | None = None) -> int:
        if not check_prefix(prefix):
            return len(self._data)
        return sum(1 for _ in self.scan(prefix))

    def clear(self, prefix: tuple[Any, ...] | None = None) -> int:
        if not check_prefix(prefix):
            with self._lock:
                n = len(self._data)
                self._data.clear()
                return n
        return self.delete_many(list(self.scan(prefix)))

    def update(self, key: Key, patch: Mapping[str, Any]) -> Metadata:
        patch = prepare_value(patch, self.max_value_size)
        ckey = _canonical(key)
        with self._lock:
            current = self._data.get(ckey)
            merged = {**_thaw(current), **patch} if current is not None else patch
            if current is not None:
                self._check_merged_size(merged)
            stored = _freeze(merged)
            self._data[ckey] = stored
        return _thaw(stored)

    def increment(self, key: Key, field: str, by: Number = 1) -> Number:
        check_increment(field, by)
        ckey = _canonical(key)
        with self._lock:
            current = self._data.get(ckey)
            new = apply_increment(None if current is None else _thaw(current), key, field, by)
            prepared = prepare_value(new, self.max_value_size)
            self._data[ckey] = _freeze(prepared)
            return prepared[field]  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ pickling

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as a snapshot of the data (memory cannot be shared across processes)."""
        spaces = {ns: dict(data) for ns, data in self._spaces.items()} if not self._closed else {}
        return (_restore, (self.max_value_size, self._namespace, spaces))


_MISSING = object()


def _restore(
    max_value_size: int | None, namespace: str, spaces: dict[str, dict[Any, Any]]
) -> InMemoryContextStore:
    store = InMemoryContextStore(namespace=namespace, max_value_size=max_value_size)
    store._spaces.update(spaces)
    store._bind_namespace()
    return store
