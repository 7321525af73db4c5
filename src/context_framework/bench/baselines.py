"""The spec's API written by hand, as a careful user would, with the same guarantees as ours.

``ctx bench`` compares each of our rows with one of these, in the same run:

* :class:`KeyCheck`: ``PandasContextAdapter``'s key rules (the key kinds; a
  label that is in the axis with its exact type), written the plain pandas
  way, with what can be cached cached (each axis's dtype, a ``RangeIndex`` as
  a ``range``), and dropped when the frame gets a new axis.
* :func:`private_copy`: the value rules and our no-aliasing guarantee: a
  ``dict`` with ``str`` field names whose values are ``str``, ``int``,
  ``bool``, ``None`` or finite floats is kept as a copy; anything else
  (nested lists and dicts) goes through ``json.dumps(allow_nan=False)``,
  which refuses what JSON cannot hold, and is kept as that text (the deep
  copy). Not checked, unlike ours: integers beyond 64 bits, lone
  surrogates, the 1 MiB value limit.
* :class:`DictBaselineAdapter`: a ``dict`` with both of the above, values
  copied in and out; :class:`MembershipDictAdapter`: a weaker reference
  (bare ``label in df.index``, no value check, no copies).
* :class:`RawClient`: the base of the raw clients' versions
  (:mod:`.sqlite_baseline`, :mod:`.redis_baseline`, :mod:`.sql_baseline`):
  the key check, JSON in and out, one round trip per call, plus the client's
  bulk path (:meth:`RawClient.write_many`).
* :class:`HandBuffer`: a write buffer and read cache written by hand over a
  :class:`RawClient`: every ``size`` writes one bulk write, a bounded dict
  cache filled by the writes, reads served from it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from numbers import Integral
from typing import Any

from .modes import BUFFER, CACHE

__all__ = [
    "DICT_NOTE",
    "DictBaselineAdapter",
    "HandBuffer",
    "KeyCheck",
    "MembershipDictAdapter",
    "RawClient",
    "check_read_back",
    "dumps",
    "hand_buffer_note",
    "loads",
    "private_copy",
    "MEMBERSHIP_NOTE",
]

#: Compact JSON, NaN and infinities refused (json's C encoder).
dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
loads = json.loads


DICT_NOTE = (
    "a dict; values checked (a dict with str field names whose values are str, int, bool, None or finite "
    "floats; nested values through json.dumps(allow_nan=False)) and copied in and out, so nothing aliases, "
    "as ours (not checked, unlike ours: ints beyond 64 bits, lone surrogates, the 1 MiB limit). The "
    "baseline of InMemoryContextStore per-call and buffered (in memory a buffer has nothing to save); "
    "in batch mode, add_context_many/get_context_many are loops over the same calls."
)
MEMBERSHIP_NOTE = (
    "reference, no ratio: a dict with bare `label in df.index` tests, no value check and no copies; "
    "it accepts keys ours refuses (('row', True), ('row', 1.0), unknown kinds) and hands out the "
    "stored dicts."
)


def hand_buffer_note(raw: str, bulk: str) -> str:
    """The footnote of a :class:`HandBuffer` row over ``raw`` whose bulk write is ``bulk``."""
    return (
        f"the {raw} table/keys behind a buffer written by hand: each write checked as the dict baseline "
        f"does, encoded, kept in a list and in a dict cache of {CACHE:,} entries (copies in and out); "
        f"every {BUFFER:,} writes {bulk}; the final flush is inside the add time and gets are served from "
        "the cache. Fewer guarantees than ours: one thread, flushes in the caller, no retry, no flush at "
        "exit, no invalidation by other processes."
    )


def _check_label(label: Any, labels: Any, kind: str) -> None:
    """Plain pandas version of the adapter's rule: the label is in the axis, type included."""
    if isinstance(label, bool) and kind != "b":
        raise KeyError(label)
    if kind in "iu" and isinstance(label, float):
        raise KeyError(label)
    if kind == "f" and isinstance(label, Integral) and not isinstance(label, bool):
        raise KeyError(label)
    if label not in labels:
        raise KeyError(label)


class KeyCheck:
    """The adapter's key rules by hand; :meth:`check` raises ``KeyError`` for a key it refuses.

    ``index`` is the axis it last saw and ``rows`` that axis as a ``range``
    when it is a ``RangeIndex`` (else empty), for the hot loops that inline
    the common case, as our adapter does: ``key`` is ``("row", int)``,
    ``df.index is check.index`` and ``key[1] in check.rows``; anything else
    goes to :meth:`check`.
    """

    def __init__(self, df: Any) -> None:
        self._df = df
        self.index: Any = None
        self.rows = range(0)
        self._index_kind = ""
        self._columns: Any = None
        self._columns_kind = ""

    def check(self, key: Any) -> None:
        if type(key) is tuple and len(key) == 2 and key[0] == "row":
            index = self._df.index
            if index is not self.index:
                self._learn_index(index)
            if type(key[1]) is int and self.rows:
                if key[1] not in self.rows:
                    raise KeyError(key)
                return
            _check_label(key[1], index, self._index_kind)
            return
        self._check_other(key)

    def _learn_index(self, index: Any) -> None:
        import pandas as pd

        self.rows = range(index.start, index.stop, index.step) if type(index) is pd.RangeIndex else range(0)
        self._index_kind = index.dtype.kind
        self.index = index

    def _row(self, label: Any) -> None:
        index = self._df.index
        if index is not self.index:
            self._learn_index(index)
        _check_label(label, index, self._index_kind)

    def _column(self, name: Any) -> None:
        columns = self._df.columns
        if columns is not self._columns:
            self._columns_kind = columns.dtype.kind
            self._columns = columns
        _check_label(name, columns, self._columns_kind)

    def _check_other(self, key: Any) -> None:
        if not isinstance(key, tuple) or not key:
            raise KeyError(key)
        kind = key[0]
        if kind == "row":
            if len(key) == 2:
                self._row(key[1])
            elif len(key) == 4 and key[2] == "column":
                self._row(key[1])
                self._column(key[3])
            else:
                raise KeyError(key)
        elif kind == "column" and len(key) == 2:
            self._column(key[1])
        elif kind != "dataset" or len(key) != 1:
            raise KeyError(key)


def private_copy(value: Any) -> dict[str, Any] | str:
    """What a careful store keeps of ``value``: a checked copy of a flat dict, else its JSON text.

    ``TypeError``/``ValueError`` for what ours refuses too (not a mapping, a
    non-``str`` field name, NaN or infinity, a set or other non-JSON value).
    """
    if type(value) is not dict:
        if not isinstance(value, Mapping):
            raise TypeError(f"metadata must be a dict, got {type(value).__name__}")
        value = dict(value)
    nested = False
    for k, v in value.items():
        if type(k) is not str:
            raise TypeError(f"field names must be str, got {k!r}")
        tv = type(v)
        if tv is float:
            if v - v != 0.0:
                raise ValueError(f"field {k!r} is {v!r}, which JSON cannot hold")
        elif not (tv is str or tv is int or tv is bool or v is None):
            nested = True
    return dumps(value) if nested else value.copy()


def check_read_back(adapter: Any, n: int, what: str) -> None:
    """``AssertionError`` unless ``adapter`` gives back the first, middle and last of ``n`` writes."""
    for i in {0, n // 2, n - 1} if n else ():
        if adapter.get_context(("row", i)) != {"meta": f"value_{i}"}:
            raise AssertionError(f"{what} read back the wrong value for ('row', {i})")


class MembershipDictAdapter:
    """A dict plus bare membership tests (``label in df.index``): weaker checks than ours.

    It accepts keys that ``PandasContextAdapter`` refuses (``("row", True)``,
    ``("row", 1.0)`` on an integer index, unknown kinds), checks no value and
    hands out the stored dicts themselves, so it is shown for reference
    only, without a ratio.
    """

    def __init__(self, df: Any) -> None:
        self.df = df
        self._data: dict[Any, Any] = {}

    def _validate(self, key: Any) -> None:
        if not isinstance(key, tuple) or not key:
            raise KeyError(key)
        if key[0] == "row":
            if key[1] not in self.df.index:
                raise KeyError(key)
        elif key[0] == "column" and key[1] not in self.df.columns:
            raise KeyError(key)

    def add_context(self, key: Any, metadata: dict[str, Any]) -> None:
        self._validate(key)
        self._data[key] = metadata

    def get_context(self, key: Any) -> dict[str, Any] | None:
        self._validate(key)
        return self._data.get(key)


class DictBaselineAdapter:
    """The spec's API on a ``dict`` with the same key and value guarantees as ours (module docstring)."""

    def __init__(self, df: Any) -> None:
        self.df = df
        self._keys = KeyCheck(df)
        self._data: dict[Any, Any] = {}
        self._keep = self._data.__setitem__  # what add_context does with the checked copy

    def add_context(self, key: Any, metadata: dict[str, Any]) -> None:
        keys = self._keys  # the common case inline (see KeyCheck), the rest in check()
        hot = type(key) is tuple and len(key) == 2 and type(key[1]) is int and key[0] == "row"
        if not (hot and self.df.index is keys.index and key[1] in keys.rows):
            keys.check(key)
        self._keep(key, private_copy(metadata))

    def get_context(self, key: Any) -> dict[str, Any] | None:
        keys = self._keys
        hot = type(key) is tuple and len(key) == 2 and type(key[1]) is int and key[0] == "row"
        if not (hot and self.df.index is keys.index and key[1] in keys.rows):
            keys.check(key)
        entry = self._data.get(key)
        if entry is None:
            return self._miss(key)
        return entry.copy() if type(entry) is dict else loads(entry)  # type: ignore[no-any-return]

    def _miss(self, key: Any) -> dict[str, Any] | None:
        return None

    def add_context_many(self, items: Iterable[tuple[Any, dict[str, Any]]]) -> None:
        """The batch form, as the loop it replaces."""
        add = self.add_context
        for key, metadata in items:
            add(key, metadata)

    def get_context_many(self, keys: Iterable[Any]) -> list[dict[str, Any] | None]:
        get = self.get_context
        return [get(key) for key in keys]


class RawClient:
    """The spec's API by hand over one raw client; subclasses talk to the server.

    ``add_context``/``get_context`` check the key (:class:`KeyCheck`), send
    ``repr(key)`` and ``dumps(metadata)``, and decode what comes back;
    :meth:`write_many` is the client's bulk path for ``(repr(key), json)``
    pairs, which :class:`HandBuffer` uses.
    """

    def __init__(self, df: Any) -> None:
        self.df = df
        self._check = KeyCheck(df).check

    def add_context(self, key: Any, metadata: dict[str, Any]) -> None:
        raise NotImplementedError

    def get_context(self, key: Any) -> dict[str, Any] | None:
        raise NotImplementedError

    def write_many(self, pairs: list[tuple[str, str]]) -> None:
        raise NotImplementedError


class HandBuffer(DictBaselineAdapter):
    """A write buffer and a read cache written by hand over ``client``'s bulk path.

    Each write is checked (key and value, as :class:`DictBaselineAdapter`),
    encoded, kept in a list and in a dict cache of at most ``cache`` entries
    (the oldest goes first); every ``size`` writes the list goes to
    ``client.write_many``. Reads are served from the cache; a miss flushes
    first (so a read never overtakes a buffered write) and asks the client.
    """

    def __init__(self, df: Any, client: RawClient, size: int = BUFFER, cache: int = CACHE) -> None:
        super().__init__(df)
        self._client = client
        self._size = size
        self._cache_size = cache
        self._pending: list[tuple[str, str]] = []
        self._keep = self._buffer

    def _buffer(self, key: Any, entry: dict[str, Any] | str) -> None:
        """A checked write: into the list and the cache; the list goes out when it is full."""
        pending = self._pending
        pending.append((repr(key), entry if type(entry) is str else dumps(entry)))
        self._remember(key, entry)
        if len(pending) >= self._size:
            self.flush()

    def _remember(self, key: Any, entry: Any) -> None:
        cache = self._data
        if len(cache) >= self._cache_size and key not in cache:
            del cache[next(iter(cache))]
        cache[key] = entry

    def flush(self) -> None:
        if self._pending:
            self._client.write_many(self._pending)
            self._pending = []

    def _miss(self, key: Any) -> dict[str, Any] | None:
        self.flush()  # a read never overtakes a buffered write
        value = self._client.get_context(key)
        if value is not None:
            self._remember(key, private_copy(value))
        return value
