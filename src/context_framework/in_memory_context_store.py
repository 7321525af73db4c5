"""``InMemoryContextStore``: a thread-safe store that lives in this process.

It keeps a private copy of each value and hands out fresh copies, applies
the same key and value rules as every other store, and is the fastest store
by far. Its data is gone when the process exits; pickling it (e.g. to send
it to a worker) sends a snapshot of its data, not a shared view.

Keys are kept in a canonical form: tuples of exact ``str``/``int`` parts (the
common case) are used as they are; any other key is kept as its encoded
bytes, so ``("row", 1)``, ``("row", True)`` and ``("row", 1.0)`` never collide
although Python considers them equal.

Concurrency model. Every entry is a private ``dict`` that only this module
touches. ``set``/``set_many``/``delete`` replace or remove whole entries with
one dict operation each, which is atomic, so they need no lock. ``update``
and ``increment`` are serialised by a lock and change the entry *in place*
with one ``dict.update`` call (or insert it with ``setdefault``). A ``set``
racing an ``update`` therefore either replaces the entry before the update
reads it (the update applies on top) or after (the update's effect is
overwritten, as if it ran first): every interleaving is some serial order,
and no write is lost.

Fields holding lists or dicts are kept as JSON text (``_Json``) inside the
entry, flagged by the reserved non-string key ``None``; ``get`` decodes them
into fresh objects, so nested values never alias either.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ._gc import gc_paused
from .base_store import (
    BaseContextStore,
    Metadata,
    Number,
    apply_increment,
    check_increment,
    check_prefix,
    increment_result,
    iter_pairs,
)
from .exceptions import ContextStoreClosedError
from .keys import Key, decode_key, encode_key, encode_prefix, has_prefix, normalize_key
from .values import (
    _INT_MAX,
    _INT_MIN,
    DEFAULT_MAX_VALUE_SIZE,
    check_size,
    dumps_json,
    loads_json,
    prepare_value,
)

__all__ = ["InMemoryContextStore"]


class _Json:
    """A nested field (list or dict) kept as JSON text inside an entry."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Json, (self.text,))


def _freeze(value: Metadata) -> dict[Any, Any]:
    """Entry for a validated value: itself if flat, else with nested fields as JSON."""
    for v in value.values():
        if type(v) is dict or type(v) is list:
            break
    else:
        return value
    entry: dict[Any, Any] = {
        k: (_Json(dumps_json(v)) if type(v) is dict or type(v) is list else v)
        for k, v in value.items()
    }
    entry[None] = True
    return entry


def _thaw(entry: dict[Any, Any]) -> Metadata:
    """A fresh, independent copy of the value an entry holds."""
    if None not in entry:
        return entry.copy()
    return {
        k: (loads_json(v.text) if type(v) is _Json else v) for k, v in entry.items() if k is not None
    }


# Ints the key codec can encode (at most 255 bytes of magnitude): |n| < 2**2040.
_INT_LIMIT = 1 << 2040


def _plain(part: Any) -> bool:
    """A key part kept as is: an ASCII str (always encodable) or an encodable int."""
    tp = type(part)
    if tp is str:
        return part.isascii()  # type: ignore[no-any-return]
    return tp is int and -_INT_LIMIT < part < _INT_LIMIT


def _canonical(key: Any) -> Any:
    """The dict key for ``key``: itself for plain str/int tuples and scalars, else its encoding.

    Anything not plain goes through the codec, so the in-memory store refuses
    exactly the keys every encoding store refuses.
    """
    t = type(key)
    if t is tuple:
        for part in key:
            if not _plain(part):
                break
        else:
            return key
        norm = normalize_key(key)
        encoded = encode_key(norm)  # validates every part
        for part in norm:  # type: ignore[union-attr]
            if not _plain(part):
                return encoded
        return norm
    if _plain(key):
        return key
    norm = normalize_key(key)
    encoded = encode_key(norm)
    if _plain(norm):
        return norm
    if type(norm) is tuple:  # a tuple subclass (namedtuple): canonical as the plain tuple
        return _canonical(norm)
    return encoded


def _size_bound(ckey: Any) -> int:
    """An upper bound of the length of ``encode_key`` of a key in canonical form, without encoding it.

    Exact for the encoded-bytes form; for plain parts, an ASCII str takes at most
    ``2 * len + 2`` bytes (a NUL is escaped) and an int ``bit_length // 8 + 3``.
    """
    t = type(ckey)
    if t is bytes:
        return len(ckey)
    if t is tuple:
        n = 1
        for part in ckey:
            n += 2 * len(part) + 2 if type(part) is str else (part.bit_length() >> 3) + 3
        return n
    if t is str:
        return 2 * len(ckey) + 3
    return (ckey.bit_length() >> 3) + 4  # type: ignore[no-any-return]


def _checked(new: Metadata, key: Key, field: str) -> Metadata:
    increment_result(new, key, field)
    return new


def _original(ckey: Any) -> Key:
    return decode_key(ckey) if type(ckey) is bytes else ckey


def _fast_entry(value: Any, limit: int) -> dict[str, Any] | None:
    """A private copy of ``value`` if it qualifies for the fast path, else ``None``.

    The fast path (mirrored inline in ``PandasContextAdapter.add_context``): a plain
    dict of at most ``FAST_FIELDS`` fields whose names and values are ASCII ``str``
    of at most ``limit`` characters (:func:`fast_str_limit`), 64-bit ``int``,
    finite ``float``, ``bool`` or ``None``. Such a dict is valid and its JSON is
    within ``max_value_size``, so a shallow copy is a complete, private copy.
    """
    if type(value) is not dict or len(value) > FAST_FIELDS:
        return None
    for k, v in value.items():
        tv = type(v)
        if tv is str:
            if len(v) > limit or not v.isascii():
                return None
        elif tv is int:
            if not _INT_MIN <= v <= _INT_MAX:
                return None
        elif tv is float:
            if v - v != 0.0:
                return None
        elif not (tv is bool or v is None):
            return None
        if type(k) is not str or len(k) > limit or not k.isascii():
            return None
    return value.copy()


def _canonical_batch(keys: Iterable[Any]) -> list[Any]:
    """:func:`_canonical` of many keys, with the ``("row", 7)`` shape inlined."""
    out: list[Any] = []
    append = out.append
    for key in keys:
        if (
            type(key) is tuple
            and len(key) == 2
            and type(key[0]) is str
            and type(key[1]) is int
            and key[0].isascii()
            and -_INT_LIMIT < key[1] < _INT_LIMIT
        ):
            append(key)
        else:
            append(_canonical(key))
    return out


class _NotRows(Exception):
    """A pair that is not ``(("row", n), value)`` of the rows asked for, with the pairs read so far."""

    def __init__(self, read: list[Any]) -> None:
        super().__init__()
        self.read = read


def _entries(
    pairs: Iterable[Any], store: InMemoryContextStore, rows: range | None = None
) -> tuple[list[Any], list[Any]]:
    """``(canonical keys, entries)`` for ``(key, value)`` pairs, every one validated.

    With ``rows`` (an adapter's fast path), every key must be ``("row", n)`` with an
    ``int`` ``n`` in ``rows``, which is canonical as it is: :class:`_NotRows` as soon
    as one is not (the caller then takes the general path). One pass over the pairs,
    the checks inlined; two flat lists, not a dict, so that storing them is one
    ``dict.update(zip(...))`` (in which the last value of a repeated key wins).
    """
    limit, max_size = store._fast_len, store.max_value_size
    keys: list[Any] = []
    entries: list[Any] = []
    add_key, add_entry = keys.append, entries.append
    for pair in pairs:
        if type(pair) is not tuple or len(pair) != 2:
            if rows is not None:
                raise _NotRows([*zip(keys, entries), pair])
            list(iter_pairs(pairs))  # raises the error that names the item
        key, value = pair
        if rows is not None:
            if not (
                type(key) is tuple
                and len(key) == 2
                and type(key[1]) is int
                and key[0] is _ROW
                and key[1] in rows
            ):
                raise _NotRows([*zip(keys, entries), pair])
        elif not (
            type(key) is tuple
            and len(key) == 2
            and type(key[0]) is str
            and type(key[1]) is int
            and key[0].isascii()
            and -_INT_LIMIT < key[1] < _INT_LIMIT
        ):
            key = _canonical(key)
        if type(value) is dict and len(value) <= FAST_FIELDS:
            for k, v in value.items():  # _fast_entry, inlined
                tv = type(v)
                if tv is str:
                    if len(v) > limit or not v.isascii():
                        break
                elif tv is int:
                    if not _INT_MIN <= v <= _INT_MAX:
                        break
                elif tv is float:
                    if v - v != 0.0:
                        break
                elif not (tv is bool or v is None):
                    break
                if type(k) is not str or len(k) > limit or not k.isascii():
                    break
            else:
                add_key(key)
                add_entry(value.copy())
                continue
        add_key(key)
        add_entry(_freeze(prepare_value(value, max_size)))
    return keys, entries


class _ClosedData(dict):  # type: ignore[type-arg]
    """Stands in for the data of a closed store: every access raises."""

    def __init__(self, store: BaseContextStore) -> None:
        super().__init__()
        self._store_repr = repr(store)

    def _raise(self, *args: Any, **kwargs: Any) -> Any:
        raise ContextStoreClosedError(f"{self._store_repr} is closed; open a new store to continue")

    __setitem__ = __getitem__ = __delitem__ = get = pop = keys = values = items = _raise
    __iter__ = __len__ = __contains__ = setdefault = update = clear = _raise


_MISSING = object()

#: The key kind of the adapters' row fast path: compared by identity, so that a ``str``
#: subclass (a numpy string) takes the general path, which normalises it.
_ROW = "row"

#: The in-memory fast path takes dicts of at most this many fields.
FAST_FIELDS = 16


def fast_str_limit(max_value_size: int | None) -> int:
    """Longest ASCII string (field name or value) the fast path accepts without measuring.

    Chosen so that ``FAST_FIELDS`` fields of such strings always encode within
    ``max_value_size`` bytes of JSON (escapes take at most 6 bytes a character,
    a number at most 26). -1 when the limit is too small for any fast path.
    """
    if max_value_size is None:
        return 1 << 62
    return max(-1, (max_value_size - 2 - 32 * FAST_FIELDS) // (12 * FAST_FIELDS))


class InMemoryContextStore(BaseContextStore):
    """A thread-safe, in-process store. ``InMemoryContextStore()`` or ``open_store("memory://")``."""

    scheme = "memory"

    def __init__(
        self, *, namespace: str = "", max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE
    ) -> None:
        super().__init__(namespace=namespace, max_value_size=max_value_size)
        self._spaces: dict[str, dict[Any, Any]] = {}
        self._data: dict[Any, Any] = self._spaces.setdefault(self._namespace, {})

    @property
    def max_value_size(self) -> int | None:
        """Largest accepted value, in bytes of encoded JSON (``None``: no limit)."""
        return self._max_value_size

    @max_value_size.setter
    def max_value_size(self, size: int | None) -> None:
        self._max_value_size = size
        self._fast_len = fast_str_limit(size)

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
        if (
            type(key) is tuple
            and len(key) == 2
            and type(key[0]) is str
            and type(key[1]) is int
            and key[0].isascii()
            and -_INT_LIMIT < key[1] < _INT_LIMIT
        ):
            self._set_normalized(key, value)
        else:
            self._set_normalized(_canonical(key), value)

    def _set_normalized(self, ckey: Any, value: Mapping[str, Any]) -> None:
        """``set`` for a key already in canonical form (adapters call this directly)."""
        entry = _fast_entry(value, self._fast_len)
        if entry is None:
            entry = _freeze(prepare_value(value, self.max_value_size))
        self._data[ckey] = entry

    def get(self, key: Key, default: Any = None) -> Metadata | None:
        if (
            type(key) is tuple
            and len(key) == 2
            and type(key[0]) is str
            and type(key[1]) is int
            and key[0].isascii()
            and -_INT_LIMIT < key[1] < _INT_LIMIT
        ):
            entry = self._data.get(key)
        else:
            entry = self._data.get(_canonical(key))
        if entry is None:
            return default  # type: ignore[no-any-return]
        if None in entry:
            return _thaw(entry)
        return entry.copy()  # type: ignore[no-any-return]

    def _get_normalized(self, ckey: Any, default: Any = None) -> Metadata | None:
        """``get`` for a key already in canonical form (adapters call this directly)."""
        entry = self._data.get(ckey)
        if entry is None:
            return default  # type: ignore[no-any-return]
        if None in entry:
            return _thaw(entry)
        return entry.copy()  # type: ignore[no-any-return]

    def delete(self, key: Key) -> bool:
        return self._data.pop(_canonical(key), _MISSING) is not _MISSING

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
                elif has_prefix(encode_key(ckey), encoded):
                    yield ckey
            elif type(ckey) is bytes and has_prefix(ckey, encoded):
                yield decode_key(ckey)

    # ------------------------------------------------------------------ batches and atomics

    def set_many(
        self, items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]]
    ) -> None:
        """Store many entries in one atomic step; nothing is stored if any key or value is bad.

        One loop with the ``("row", int)`` key shape and :func:`_fast_entry`'s value
        checks inlined (no call per entry on the common path).
        """
        with gc_paused():
            keys, entries = _entries(items if type(items) is list else list(iter_pairs(items)), self)
            self._data.update(zip(keys, entries))  # one atomic step: all or nothing

    def _set_rows(self, pairs: Iterable[Any], rows: range) -> list[Any] | None:
        """``set_many`` of ``(("row", n), value)`` pairs with every ``n`` an ``int`` in ``rows``
        (a pandas adapter's RangeIndex), in one pass over ``pairs`` (a generator is not
        first copied into a list). ``None`` when stored; when a pair is not of that form,
        nothing is stored and every pair is returned, as a list, for the general path."""
        items = iter(pairs)
        with gc_paused():
            try:
                keys, entries = _entries(items, self, rows)
            except _NotRows as stop:
                return stop.read + list(items)
            self._data.update(zip(keys, entries))  # one atomic step: all or nothing
        return None

    def _get_rows(self, keys: Iterable[Any], rows: range) -> tuple[list[Metadata | None] | None, list[Any]]:
        """``get_many`` of ``("row", n)`` keys with every ``n`` an ``int`` in ``rows``, in one pass
        over ``keys``: ``(values, [])``; when a key is not of that form, ``(None, every key)``."""
        get = self._data.get
        out: list[Metadata | None] = []
        append = out.append
        seen: list[Any] = []
        see = seen.append
        items = iter(keys)
        with gc_paused():
            for key in items:
                if not (
                    type(key) is tuple
                    and len(key) == 2
                    and type(key[1]) is int
                    and key[0] is _ROW
                    and key[1] in rows
                ):
                    return None, [*seen, key, *items]
                see(key)
                entry = get(key)
                if entry is None:
                    append(None)
                elif None in entry:
                    append(_thaw(entry))
                else:
                    append(entry.copy())
        return out, []

    def get_many(self, keys: Iterable[Key]) -> list[Metadata | None]:
        data = self._data
        get = data.get
        out: list[Metadata | None] = []
        append = out.append
        with gc_paused():
            for key in keys:
                if not (
                    type(key) is tuple
                    and len(key) == 2
                    and type(key[0]) is str
                    and type(key[1]) is int
                    and key[0].isascii()
                    and -_INT_LIMIT < key[1] < _INT_LIMIT
                ):
                    key = _canonical(key)
                entry = get(key)
                if entry is None:
                    append(None)
                elif None in entry:
                    append(_thaw(entry))
                else:
                    append(entry.copy())
        return out

    def delete_many(self, keys: Iterable[Key]) -> int:
        ckeys = _canonical_batch(keys)
        data = self._data
        return sum(1 for c in ckeys if data.pop(c, _MISSING) is not _MISSING)

    def items(self, prefix: tuple[Any, ...] | None = None) -> Iterator[tuple[Key, Metadata]]:
        data = self._data
        for key in self.scan(prefix):
            entry = data.get(_canonical(key))
            if entry is not None:
                yield key, _thaw(entry)

    def count(self, prefix: tuple[Any, ...] | None = None) -> int:
        if not check_prefix(prefix):
            return len(self._data)
        return sum(1 for _ in self.scan(prefix))

    def clear(self, prefix: tuple[Any, ...] | None = None) -> int:
        if not check_prefix(prefix):
            data = self._data
            n = len(data)
            data.clear()
            return n
        return self.delete_many(list(self.scan(prefix)))

    def _modify(self, ckey: Any, change: Any) -> Metadata:
        """Apply ``change(current value or None) -> new value`` to one entry atomically.

        Caller holds ``self._lock``. The entry is changed in place (one
        ``dict.update``) or inserted with ``setdefault``, so a concurrent lock-free
        ``set`` is never lost (see the module docstring).
        """
        data = self._data
        while True:
            entry = data.get(ckey)
            new = prepare_value(change(None if entry is None else _thaw(entry)), self.max_value_size)
            frozen = _freeze(new)
            if frozen is new:  # flat: the entry must not be the dict handed back
                frozen = new.copy()
            if entry is None:
                if data.setdefault(ckey, frozen) is frozen:
                    return new
                continue  # a concurrent set inserted first: apply on top of it
            # update and increment only add or change fields, so one in-place
            # dict.update (atomic) moves the entry from its old to its new value.
            entry.update(frozen)
            return new

    def update(self, key: Key, patch: Mapping[str, Any]) -> Metadata:
        patch = prepare_value(patch, self.max_value_size)
        ckey = _canonical(key)
        with self._lock:
            return self._modify(ckey, lambda cur: patch if cur is None else {**cur, **patch})

    def increment(self, key: Key, field: str, by: Number = 1) -> Number:
        check_increment(field, by)
        ckey = _canonical(key)
        with self._lock:
            new = self._modify(
                ckey, lambda cur: _checked(apply_increment(cur, key, field, by), key, field)
            )
        return new[field]  # type: ignore[no-any-return]

    def _check_merged_size(self, merged: Metadata) -> None:
        check_size(dumps_json(merged), self.max_value_size)

    # ------------------------------------------------------------------ pickling

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as a snapshot of the data (memory cannot be shared across processes)."""
        self._check_open()
        spaces = {ns: {k: dict(e) for k, e in data.items()} for ns, data in self._spaces.items()}
        return (_restore, (self.max_value_size, self._namespace, spaces))


def _restore(
    max_value_size: int | None, namespace: str, spaces: dict[str, dict[Any, Any]]
) -> InMemoryContextStore:
    store = InMemoryContextStore(namespace=namespace, max_value_size=max_value_size)
    store._spaces.update(spaces)
    store._bind_namespace()
    return store
