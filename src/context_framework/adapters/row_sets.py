"""Compact sets of row ids (integer labels or row positions), numpy-based.

A :class:`RowSet` holds distinct ``int64`` ids in the smallest of three forms:

========  =============================================  ===========================
form      holds                                          costs (before zlib)
========  =============================================  ===========================
ranges    runs ``[start, stop)``                         2 numbers per run
bitmap    one bit per id from the first to the last id   1/8 byte per id spanned
values    the sorted ids                                 1 number per id
========  =============================================  ===========================

A slice or any contiguous selection is a handful of ranges; a random mask over
10,000,000 rows is a 1.25 MB bitmap; a sparse selection over a wide span of
labels keeps its values. Numbers are stored as deltas in the narrowest
unsigned width that holds them, so a slice with a step or evenly spaced labels
compress to almost nothing.

:meth:`RowSet.encode` cuts a set into JSON-ready chunks (``dict`` with the
bytes as base64 text of zlib data) of at most a given raw size, and
:func:`decode` puts them back together. Membership tests are ``bisect`` or a
bit test for one id and ``np.searchsorted`` or a vectorised bit test for many.
"""

from __future__ import annotations

import base64
import zlib
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["RowSet", "decode", "empty", "from_mask", "from_ranges", "from_sorted", "sorted_unique"]

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
# Below this many runs or values, scalar membership uses Python lists/sets (faster than numpy).
_SMALL = 1 << 16
_WIDTHS = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.uint64))


def _width(largest: int) -> np.dtype[Any]:
    """The narrowest unsigned dtype holding every number up to ``largest``."""
    for dtype in _WIDTHS:
        if largest <= np.iinfo(dtype).max:
            return dtype
    raise ValueError(f"row ids span {largest}, more than 64 bits")


def _is_id(x: Any) -> bool:
    return type(x) is int and _I64_MIN <= x <= _I64_MAX


def _window(ascending: np.ndarray, offset: int, n: int) -> tuple[int, int]:
    """``[i, j)``: the entries of the sorted ``ascending`` within ``[offset, offset + n)`` (``n > 0``)."""
    last = min(offset + n - 1, _I64_MAX)
    return int(np.searchsorted(ascending, offset)), int(np.searchsorted(ascending, last, side="right"))


class RowSet:
    """An immutable set of ``int64`` row ids. Build one with the module's functions."""

    kind = ""
    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def __contains__(self, x: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Vectorised membership: a boolean array, one entry per id of ``ids`` (int64)."""
        raise NotImplementedError  # pragma: no cover

    def to_values(self) -> np.ndarray:
        """Every id, sorted, as an ``int64`` array."""
        raise NotImplementedError  # pragma: no cover

    def to_mask(self, n: int, offset: int = 0) -> np.ndarray:
        """A boolean array of length ``n`` whose entry ``i`` says whether ``offset + i`` is in the set."""
        values = self.to_values() - offset
        mask = np.zeros(n, dtype=bool)
        mask[values[(values >= 0) & (values < n)]] = True
        return mask

    def difference(self, ids: np.ndarray) -> RowSet:
        """This set without ``ids`` (sorted, distinct ``int64``)."""
        raise NotImplementedError  # pragma: no cover

    def encode(self, max_bytes: int) -> list[dict[str, Any]]:
        """JSON-ready chunks whose raw (pre-base64) data is at most ``max_bytes`` each."""
        raise NotImplementedError  # pragma: no cover

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RowSet):
            return NotImplemented
        return self.count == other.count and bool(np.array_equal(self.to_values(), other.to_values()))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<RowSet {self.kind} of {self.count:,} ids>"


# --------------------------------------------------------------------------- the three forms


class _Ranges(RowSet):
    kind = "ranges"
    __slots__ = ("_starts_list", "_stops_list", "starts", "stops")

    def __init__(self, starts: np.ndarray, stops: np.ndarray) -> None:
        super().__init__(int((stops - starts).sum()))
        self.starts, self.stops = starts, stops
        small = len(starts) <= _SMALL
        self._starts_list: list[int] | None = starts.tolist() if small else None
        self._stops_list: list[int] | None = stops.tolist() if small else None

    def __contains__(self, x: Any) -> bool:
        if not _is_id(x):
            return False
        if self._starts_list is not None:
            i = bisect_right(self._starts_list, x) - 1
            return i >= 0 and x < self._stops_list[i]  # type: ignore[index]
        i = int(np.searchsorted(self.starts, x, side="right")) - 1
        return i >= 0 and x < int(self.stops[i])

    def contains(self, ids: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.starts, ids, side="right") - 1
        out = i >= 0
        out[out] = ids[out] < self.stops[i[out]]
        return out

    def to_values(self) -> np.ndarray:
        lengths = self.stops - self.starts
        firsts = np.cumsum(lengths) - lengths
        return np.arange(self.count, dtype=np.int64) + np.repeat(self.starts - firsts, lengths)

    def to_mask(self, n: int, offset: int = 0) -> np.ndarray:
        if n <= 0:
            return np.zeros(0, dtype=bool)
        # The runs that overlap the window: stop > offset and start < offset + n.
        first = int(np.searchsorted(self.stops, offset, side="right"))
        end = _window(self.starts, offset, n)[1]
        starts = np.clip(self.starts[first:end] - offset, 0, n)
        stops = np.clip(self.stops[first:end] - offset, 0, n)
        edges = np.zeros(n + 1, dtype=np.int32)
        np.add.at(edges, starts, 1)
        np.add.at(edges, stops, -1)
        return np.cumsum(edges[:n]) > 0

    def difference(self, ids: np.ndarray) -> RowSet:
        ids = ids[self.contains(ids)] if len(ids) else ids
        if not len(ids):
            return self
        # Every removed id p splits its run: [start, p) and [p + 1, stop); empty pieces drop out.
        starts = np.sort(np.concatenate([self.starts, ids + 1]))
        stops = np.sort(np.concatenate([self.stops, ids]))
        keep = starts < stops
        return from_ranges(starts[keep], stops[keep])

    def encode(self, max_bytes: int) -> list[dict[str, Any]]:
        # [len0, gap1, len1, gap2, len2, ...]: gaps are start[i] - stop[i-1] (>= 1).
        # Unsigned arithmetic: a gap between labels near both ends of int64 exceeds 2**63.
        starts, stops = self.starts.view(np.uint64), self.stops.view(np.uint64)
        numbers = np.empty(2 * len(starts) - 1, dtype=np.uint64)
        numbers[0::2] = stops - starts
        numbers[1::2] = starts[1:] - stops[:-1]
        dtype = _width(int(numbers.max()))
        per_chunk = max(1, (max_bytes // dtype.itemsize + 1) // 2)  # runs per chunk
        chunks = []
        for run in range(0, len(self.starts), per_chunk):
            end = min(run + per_chunk, len(self.starts))
            part = numbers[2 * run : 2 * end - 1]
            chunks.append(_chunk("ranges", int(self.starts[run]), end - run, part.astype(dtype)))
        return chunks


class _Bitmap(RowSet):
    kind = "bitmap"
    __slots__ = ("array", "bits", "lo", "nbits")

    def __init__(self, lo: int, nbits: int, bits: bytes, count: int | None = None) -> None:
        array = np.frombuffer(bits, dtype=np.uint8)
        if count is None:
            count = int(np.unpackbits(array, count=nbits).sum(dtype=np.int64))
        super().__init__(count)
        self.lo, self.nbits, self.bits, self.array = lo, nbits, bits, array

    def __contains__(self, x: Any) -> bool:
        if not _is_id(x):
            return False
        b = x - self.lo
        return 0 <= b < self.nbits and bool(self.bits[b >> 3] & (0x80 >> (b & 7)))

    def contains(self, ids: np.ndarray) -> np.ndarray:
        b = ids - self.lo
        inside = (b >= 0) & (b < self.nbits)
        out = np.zeros(len(ids), dtype=bool)
        bi = b[inside]
        out[inside] = (self.array[bi >> 3] >> (7 - (bi & 7)).astype(np.uint8)) & 1
        return out

    def to_values(self) -> np.ndarray:
        return np.flatnonzero(np.unpackbits(self.array, count=self.nbits)).astype(np.int64) + self.lo

    def to_mask(self, n: int, offset: int = 0) -> np.ndarray:
        mask = np.zeros(max(n, 0), dtype=bool)
        first = self.lo - offset  # where bit 0 of the bitmap falls in the mask
        lo, hi = max(first, 0), min(first + self.nbits, n)
        if lo < hi:
            a, b = lo - first, hi - first  # the bits needed, of only the bytes that hold them
            bits = np.unpackbits(self.array[a >> 3 : (b + 7) >> 3]).view(bool)
            mask[lo:hi] = bits[a & 7 : (a & 7) + (hi - lo)]
        return mask

    def difference(self, ids: np.ndarray) -> RowSet:
        ids = ids[self.contains(ids)] if len(ids) else ids
        if not len(ids):
            return self
        b = ids - self.lo
        array = self.array.copy()
        byte, bit = b >> 3, (0x80 >> (b & 7)).astype(np.uint8)
        firsts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])  # ids are sorted
        array[byte[firsts]] &= ~np.add.reduceat(bit, firsts).astype(np.uint8)
        count = self.count - len(ids)
        if not count:
            return empty()
        return _Bitmap(self.lo, self.nbits, array.tobytes(), count)

    def encode(self, max_bytes: int) -> list[dict[str, Any]]:
        per_chunk = max(1, max_bytes)
        chunks = []
        for first in range(0, len(self.array), per_chunk):
            part = self.array[first : first + per_chunk]
            nbits = min(8 * len(part), self.nbits - 8 * first)
            chunks.append(_chunk("bitmap", self.lo + 8 * first, nbits, part))
        return chunks


class _Values(RowSet):
    kind = "values"
    __slots__ = ("_set", "values")

    def __init__(self, values: np.ndarray) -> None:
        super().__init__(len(values))
        self.values = values
        self._set: frozenset[int] | None = frozenset(values.tolist()) if len(values) <= _SMALL else None

    def __contains__(self, x: Any) -> bool:
        if self._set is not None:
            return x in self._set and _is_id(x)
        if not _is_id(x):
            return False
        i = int(np.searchsorted(self.values, x))
        return i < self.count and int(self.values[i]) == x

    def contains(self, ids: np.ndarray) -> np.ndarray:
        if not self.count:
            return np.zeros(len(ids), dtype=bool)
        i = np.minimum(np.searchsorted(self.values, ids), self.count - 1)
        return self.values[i] == ids  # type: ignore[no-any-return]

    def to_values(self) -> np.ndarray:
        return self.values

    def to_mask(self, n: int, offset: int = 0) -> np.ndarray:
        mask = np.zeros(max(n, 0), dtype=bool)
        if n > 0:
            i, j = _window(self.values, offset, n)
            mask[self.values[i:j] - offset] = True
        return mask

    def difference(self, ids: np.ndarray) -> RowSet:
        if not len(ids) or not self.count:
            return self
        return from_sorted(self.values[~np.isin(self.values, ids, assume_unique=True)])

    def encode(self, max_bytes: int) -> list[dict[str, Any]]:
        if not self.count:
            return []
        deltas = np.diff(self.values.view(np.uint64))  # unsigned: deltas may exceed 2**63
        dtype = _width(int(deltas.max()) if len(deltas) else 0)
        per_chunk = max(1, max_bytes // dtype.itemsize)
        chunks = []
        for first in range(0, self.count, per_chunk):
            part = deltas[first : first + per_chunk - 1]  # the chunk's first value is its lo
            chunks.append(_chunk("values", int(self.values[first]), len(part) + 1, part.astype(dtype)))
        return chunks


# --------------------------------------------------------------------------- building sets


def empty() -> RowSet:
    """The empty set."""
    return _Values(np.empty(0, dtype=np.int64))


def _choose(count: int, span: int, runs: int) -> str:
    """The smallest form for ``count`` ids in ``runs`` runs spanning ``span`` ids."""
    itemsize = _width(min(span, (1 << 64) - 1)).itemsize
    sizes = {"ranges": 2 * runs * itemsize, "bitmap": (span + 7) // 8, "values": count * itemsize}
    return min(sizes, key=lambda form: sizes[form])  # ties: ranges, then bitmap


def from_mask(mask: np.ndarray, offset: int = 0) -> RowSet:
    """The ids ``offset + i`` for every ``i`` where the boolean ``mask`` is true."""
    mask = np.asarray(mask, dtype=bool)
    count = int(np.count_nonzero(mask))
    if not count:
        return empty()
    first = int(np.argmax(mask))
    last = len(mask) - 1 - int(np.argmax(mask[::-1]))
    sub = mask[first : last + 1]
    changes = sub[1:] != sub[:-1]
    lo = offset + first
    form = _choose(count, len(sub), int(np.count_nonzero(changes)) // 2 + 1)  # sub starts and ends on True
    if form == "ranges":
        edges = np.flatnonzero(changes) + 1
        starts = np.concatenate([[0], edges[1::2]]).astype(np.int64) + lo
        stops = np.concatenate([edges[0::2], [len(sub)]]).astype(np.int64) + lo
        return _Ranges(starts, stops)
    if form == "bitmap":
        return _Bitmap(lo, len(sub), np.packbits(sub).tobytes(), count)
    return _Values(np.flatnonzero(sub).astype(np.int64) + lo)


def sorted_unique(ids: Any) -> np.ndarray:
    """``ids`` as sorted, distinct ``int64`` (a sort, skipped when already sorted; no hashing)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) > 1 and not bool((ids[1:] > ids[:-1]).all()):
        ids = np.sort(ids)
        ids = ids[np.concatenate([[True], ids[1:] != ids[:-1]])]
    return ids


def from_sorted(values: np.ndarray) -> RowSet:
    """The set of ``values``: sorted, distinct ``int64`` ids."""
    values = np.asarray(values, dtype=np.int64)
    count = len(values)
    if not count:
        return empty()
    lo, hi = int(values[0]), int(values[-1])
    breaks = np.flatnonzero(np.diff(values) != 1) + 1
    form = _choose(count, hi - lo + 1, len(breaks) + 1)
    if form == "ranges":
        starts = values[np.concatenate([[0], breaks])]
        stops = values[np.concatenate([breaks - 1, [count - 1]])] + 1
        return _Ranges(starts, stops)
    if form == "bitmap":
        b = values - lo
        byte, bit = b >> 3, (0x80 >> (b & 7)).astype(np.uint8)
        firsts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
        array = np.zeros((hi - lo) // 8 + 1, dtype=np.uint8)
        array[byte[firsts]] = np.add.reduceat(bit, firsts)  # distinct bits of one byte: + is |
        return _Bitmap(lo, hi - lo + 1, array.tobytes(), count)
    return _Values(values)


def from_ranges(starts: Any, stops: Any) -> RowSet:
    """The ids of the sorted, disjoint, non-empty runs ``[starts[i], stops[i])``."""
    starts = np.asarray(starts, dtype=np.int64)
    stops = np.asarray(stops, dtype=np.int64)
    if not len(starts):
        return empty()
    joined = np.flatnonzero(starts[1:] == stops[:-1])  # touching runs become one
    if len(joined):
        starts = np.delete(starts, joined + 1)
        stops = np.delete(stops, joined)
    count = int((stops - starts).sum())
    span = int(stops[-1]) - int(starts[0])
    if _choose(count, span, len(starts)) == "ranges":
        return _Ranges(starts, stops)
    return from_sorted(_Ranges(starts, stops).to_values())


# --------------------------------------------------------------------------- chunks


def _chunk(kind: str, lo: int, n: int, array: np.ndarray) -> dict[str, Any]:
    raw = array.tobytes()
    packed = zlib.compress(raw, 1)
    compressed = len(packed) < len(raw)
    data = packed if compressed else raw
    return {
        "kind": kind,
        "lo": lo,
        "n": n,
        "w": array.dtype.itemsize,
        "z": int(compressed),
        "data": base64.b64encode(data).decode("ascii"),
    }


def _chunk_array(chunk: Mapping[str, Any]) -> np.ndarray:
    data = base64.b64decode(chunk["data"], validate=True)
    if chunk["z"]:
        data = zlib.decompress(data)
    dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[chunk["w"]]
    return np.frombuffer(data, dtype=dtype)


def _unsigned(lo: Any) -> np.uint64:
    lo = int(lo)
    if not _I64_MIN <= lo <= _I64_MAX:
        raise ValueError(f"chunk start {lo} is outside int64")
    return np.uint64(lo % (1 << 64))


def decode(chunks: Sequence[Mapping[str, Any]]) -> RowSet:
    """The set that :meth:`RowSet.encode` cut into ``chunks`` (in order).

    Raises :class:`ValueError` when the chunks are not a valid encoding.
    """
    if not chunks:
        return empty()
    try:
        kinds = {c["kind"] for c in chunks}
        if len(kinds) != 1:
            raise ValueError(f"chunks of mixed forms {sorted(kinds)}")
        kind = kinds.pop()
        arrays = [_chunk_array(c) for c in chunks]
        if kind == "bitmap":
            pos = int(chunks[0]["lo"])
            for c, a in zip(chunks, arrays):
                if int(c["lo"]) != pos or not 0 < int(c["n"]) <= 8 * len(a):
                    raise ValueError("bitmap chunks are not contiguous")
                pos += int(c["n"])
            lo = int(chunks[0]["lo"])
            return _Bitmap(lo, pos - lo, b"".join(a.tobytes() for a in arrays))
        if kind == "values":
            parts = []
            for c, a in zip(chunks, arrays):
                if len(a) != int(c["n"]) - 1:
                    raise ValueError("values chunk has the wrong length")
                part = np.empty(len(a) + 1, dtype=np.uint64)
                part[0] = 0
                np.cumsum(a.astype(np.uint64), out=part[1:])
                part += _unsigned(c["lo"])
                parts.append(part.view(np.int64))
            values = np.concatenate(parts)
            if not bool((values[1:] > values[:-1]).all()):
                raise ValueError("values chunks are not sorted")
            return _Values(values)
        if kind == "ranges":
            starts_parts, stops_parts = [], []
            for c, a in zip(chunks, arrays):
                runs = int(c["n"])
                if len(a) != 2 * runs - 1:
                    raise ValueError("ranges chunk has the wrong length")
                numbers = a.astype(np.uint64)
                # run i starts at lo + sum(len_j + gap_{j+1} for j < i)
                steps = numbers[:-1].reshape(-1, 2).sum(axis=1, dtype=np.uint64)
                starts = np.concatenate([np.zeros(1, np.uint64), np.cumsum(steps, dtype=np.uint64)])
                starts += _unsigned(c["lo"])
                starts_parts.append(starts.view(np.int64))
                stops_parts.append((starts + numbers[0::2]).view(np.int64))
            return from_ranges(np.concatenate(starts_parts), np.concatenate(stops_parts))
        raise ValueError(f"unknown row-set form {kind!r}")
    except (KeyError, TypeError, IndexError, zlib.error) as exc:
        raise ValueError(f"not a row-set chunk ({type(exc).__name__}: {exc})") from None
