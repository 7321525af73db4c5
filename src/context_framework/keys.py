"""The key codec: typed context keys to order-preserving bytes and back.

A context key is a scalar (``str``, ``int``, ``float``, ``bool``, ``None``,
``bytes``, ``datetime.datetime``, ``datetime.date``) or a tuple of keys
(tuples nest). Keys keep their types: ``("row", 1)``, ``("row", 1.0)``,
``("row", True)`` and ``("row", "1")`` are four different keys on every store.

Encoding (version 1), modelled on the FoundationDB tuple layer:

* one header byte: ``0x01`` for a tuple key, ``0x81`` for a scalar key (the
  low seven bits are the codec version, the high bit marks a scalar);
* then each element with a type code:

  ======  ============================================================
  code    element
  ======  ============================================================
  0x00    ``None`` (``0x00 0xFF`` inside a nested tuple)
  0x01    ``bytes``; ``0x00`` escaped as ``0x00 0xFF``; ends with ``0x00``
  0x02    ``str`` as UTF-8, escaped and terminated like bytes
  0x05    nested tuple; its elements, then ``0x00``
  0x0B    negative integer of more than 8 bytes
  0x0C-1C integer; 0x14 is zero, 0x14±n an n-byte magnitude
  0x1D    positive integer of more than 8 bytes
  0x21    ``float``: IEEE 754 big-endian with the sign bit (or all bits) flipped
  0x26/27 ``False`` / ``True``
  0x3F    ``date``: proleptic ordinal, 4 bytes
  0x40    naive ``datetime``: microseconds since 0001-01-01, 8 bytes
  0x41    aware ``datetime``: UTC microseconds (8 bytes) then the UTC offset
          in seconds (4 bytes)
  ======  ============================================================

Properties the tests check with Hypothesis:

* ``decode_key(encode_key(k)) == k`` with types intact, deterministic in
  every process (no ``hash()``);
* the encoding of a tuple ``p`` is a byte prefix of the encoding of every
  tuple key that starts with the elements of ``p``, so ``scan(prefix=p)`` is
  one range scan (:func:`prefix_range`);
* within one type, byte order follows value order (ints, floats, strings by
  code point, dates and datetimes chronologically).

Normalisation (documented conversions): numpy scalars become the Python
scalar they hold (``numpy.int64`` → ``int``, ``numpy.float32`` → ``float``,
``numpy.bool_`` → ``bool``, ``numpy.str_`` → ``str``, ``numpy.datetime64`` →
``datetime``); ``pandas.Timestamp`` becomes ``datetime`` (it must not carry
nanoseconds); subclasses of ``str``/``int``/``float`` (enums included) become
the base type; all NaNs become the one canonical NaN; an aware datetime comes
back with a fixed-offset ``timezone`` (same instant, same UTC offset). Aware
datetimes with different offsets are different keys, even for one instant.
Lists, sets, dicts and other objects raise :class:`UnsupportedKeyError`.
"""

from __future__ import annotations

import math
import operator
import reprlib
import struct
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from itertools import islice
from sys import intern
from typing import Any, TypeVar

from .exceptions import UnsupportedKeyError

__all__ = [
    "CODEC_VERSION",
    "Key",
    "decode_key",
    "encode_key",
    "encode_keys",
    "encode_namespace",
    "namespace_range",
    "encode_prefix",
    "has_prefix",
    "in_key_order",
    "normalize_key",
    "prefix_range",
]

Key = str | int | float | bool | None | bytes | datetime | date | tuple[Any, ...]
T = TypeVar("T")

CODEC_VERSION = 1
_TUPLE_HEADER = b"\x01"
_SCALAR_HEADER = b"\x81"

_NONE, _BYTES, _STR, _NESTED = 0x00, 0x01, 0x02, 0x05
_NEG_BIG, _INT_ZERO, _POS_BIG = 0x0B, 0x14, 0x1D
_FLOAT, _FALSE, _TRUE = 0x21, 0x26, 0x27
_DATE, _NAIVE_DT, _AWARE_DT = 0x3F, 0x40, 0x41

_EPOCH = datetime(1, 1, 1)
_EPOCH_UTC = datetime(1, 1, 1, tzinfo=timezone.utc)
_BIAS64 = 1 << 63
_BIAS32 = 1 << 31
_CANONICAL_NAN = b"\x7f\xf8\x00\x00\x00\x00\x00\x00"
_SUPPORTED = "str, int, float, bool, None, bytes, datetime, date or a tuple of these"

# str elements repeat ("row", "column", column names): memoise their encoding.
_str_cache: dict[str, bytes] = {}
_STR_CACHE_MAX = 4096


class _Unsupported(Exception):
    """Internal: carries the offending part up to the key being encoded."""

    def __init__(self, part: object, reason: str) -> None:
        super().__init__(part, reason)
        self.part = part
        self.reason = reason


def _fail(key: object, exc: _Unsupported) -> UnsupportedKeyError:
    return UnsupportedKeyError(
        f"cannot use {key!r} as a context key: part {exc.part!r} {exc.reason}"
    )


# --------------------------------------------------------------------------- normalisation


def _normalize_scalar(part: Any) -> Any:
    """Return the canonical Python scalar for ``part`` or raise ``_Unsupported``."""
    t = type(part)
    if t is str or t is int or t is bool or t is bytes or part is None:
        return part
    if t is float:
        return math.nan if part != part else part
    if t is tuple:
        return tuple(_normalize_scalar(p) for p in part)
    if t is datetime or t is date:
        _check_datetime(part)
        return part
    module = t.__module__
    if module == "numpy":
        return _normalize_numpy(part)
    if module.startswith("pandas"):
        return _normalize_pandas(part)
    if isinstance(part, bool):
        return bool(part)
    if isinstance(part, str):
        return str.__str__(part)
    if isinstance(part, int):
        return int.__index__(part)
    if isinstance(part, float):
        f = float(part)
        return math.nan if f != f else f
    if isinstance(part, bytes):
        return bytes(part)
    if isinstance(part, datetime):
        return _normalize_scalar(
            datetime(
                part.year, part.month, part.day, part.hour, part.minute,
                part.second, part.microsecond, part.tzinfo,
            )
        )
    if isinstance(part, date):
        return date(part.year, part.month, part.day)
    if isinstance(part, tuple):
        return tuple(_normalize_scalar(p) for p in part)
    hint = "; use a tuple" if isinstance(part, list) else ""
    raise _Unsupported(part, f"has unsupported type {t.__name__}{hint} (supported: {_SUPPORTED})")


def _check_datetime(value: date) -> None:
    if isinstance(value, datetime) and value.tzinfo is not None:
        offset = value.utcoffset()
        if offset is None:
            raise _Unsupported(value, "has a tzinfo that gives no UTC offset")
        if offset.microseconds or offset % timedelta(seconds=1):
            raise _Unsupported(value, "has a sub-second UTC offset")


def _normalize_numpy(part: Any) -> Any:
    import numpy as np

    if isinstance(part, np.datetime64):
        if np.isnat(part):
            raise _Unsupported(part, "is NaT, which cannot be a key")
        as_us = part.astype("datetime64[us]")
        if as_us.astype(part.dtype) != part:
            raise _Unsupported(part, "has sub-microsecond precision")
        return _normalize_scalar(as_us.item())
    if isinstance(part, np.generic) and not isinstance(part, (np.void, np.object_)):
        return _normalize_scalar(part.item())
    raise _Unsupported(part, f"has unsupported type numpy.{type(part).__name__}")


def _normalize_pandas(part: Any) -> Any:
    import pandas as pd

    if part is pd.NaT:
        raise _Unsupported(part, "is NaT, which cannot be a key")
    if isinstance(part, pd.Timestamp):
        if part.nanosecond:
            raise _Unsupported(part, "has nanoseconds, which keys cannot hold")
        return _normalize_scalar(part.to_pydatetime())
    raise _Unsupported(part, f"has unsupported type pandas.{type(part).__name__}")


def normalize_key(key: Any) -> Key:
    """Return ``key`` in canonical form (see the module docstring).

    Raises :class:`UnsupportedKeyError` naming the offending part.
    """
    try:
        return _normalize_scalar(key)  # type: ignore[no-any-return]
    except _Unsupported as exc:
        raise _fail(key, exc) from None
    except RecursionError:
        raise UnsupportedKeyError(
            f"cannot use {reprlib.repr(key)} as a context key: nested too deeply"
        ) from None


# --------------------------------------------------------------------------- encoding


def _escape(data: bytes) -> bytes:
    return data.replace(b"\x00", b"\x00\xff") if b"\x00" in data else data


def _encode_str(s: str) -> bytes:
    cached = _str_cache.get(s)
    if cached is not None:
        return cached
    try:
        out = b"\x02" + _escape(s.encode("utf-8")) + b"\x00"
    except UnicodeEncodeError:
        raise _Unsupported(s, "is not valid Unicode (lone surrogate)") from None
    if len(s) <= 64:
        if len(_str_cache) >= _STR_CACHE_MAX:
            _str_cache.clear()
        _str_cache[s] = out
    return out


def _encode_int(v: int) -> bytes:
    if v == 0:
        return b"\x14"
    if v > 0:
        n = (v.bit_length() + 7) // 8
        if n <= 8:
            return bytes((_INT_ZERO + n,)) + v.to_bytes(n, "big")
        if n > 255:
            raise _Unsupported(v, "is an integer too large for a key (over 255 bytes)")
        return bytes((_POS_BIG, n)) + v.to_bytes(n, "big")
    n = ((-v).bit_length() + 7) // 8
    comp = v + (1 << (8 * n)) - 1
    if n <= 8:
        return bytes((_INT_ZERO - n,)) + comp.to_bytes(n, "big")
    if n > 255:
        raise _Unsupported(v, "is an integer too large for a key (over 255 bytes)")
    return bytes((_NEG_BIG, n ^ 0xFF)) + comp.to_bytes(n, "big")


def _encode_float(v: float) -> bytes:
    if v != v:
        raw = _CANONICAL_NAN
    else:
        raw = struct.pack(">d", v)
    if raw[0] & 0x80:
        return b"\x21" + bytes(b ^ 0xFF for b in raw)
    return b"\x21" + bytes((raw[0] ^ 0x80,)) + raw[1:]


def _encode_part(p: Any, nested: bool, out: list[bytes]) -> None:
    t = type(p)
    if t is str:
        out.append(_encode_str(p))
    elif t is int:
        out.append(_encode_int(p))
    elif t is bool:
        out.append(b"\x27" if p else b"\x26")
    elif p is None:
        out.append(b"\x00\xff" if nested else b"\x00")
    elif t is float:
        out.append(_encode_float(p))
    elif t is bytes:
        out.append(b"\x01" + _escape(p) + b"\x00")
    elif t is tuple:
        out.append(b"\x05")
        for q in p:
            _encode_part(q, True, out)
        out.append(b"\x00")
    elif t is datetime:
        _check_datetime(p)
        if p.tzinfo is None:
            us = (p - _EPOCH) // timedelta(microseconds=1)
            out.append(b"\x40" + us.to_bytes(8, "big"))
        else:
            offset = p.utcoffset()
            assert offset is not None
            us = (p - _EPOCH_UTC) // timedelta(microseconds=1)
            secs = int(offset.total_seconds())
            out.append(
                b"\x41" + (us + _BIAS64).to_bytes(8, "big") + (secs + _BIAS32).to_bytes(4, "big")
            )
    elif t is date:
        out.append(b"\x3f" + p.toordinal().to_bytes(4, "big"))
    else:
        _encode_part(_normalize_scalar(p), nested, out)


def encode_key(key: Any) -> bytes:
    """Encode ``key`` (normalising it first) to its canonical bytes."""
    if type(key) is tuple:
        # Fast path for the common ("kind", label) shapes.
        if len(key) == 2:
            a, b = key
            if type(a) is str:
                tb = type(b)
                if tb is int:
                    try:
                        return b"\x01" + _encode_str(a) + _encode_int(b)
                    except _Unsupported as exc:
                        raise _fail(key, exc) from None
                if tb is str:
                    try:
                        return b"\x01" + _encode_str(a) + _encode_str(b)
                    except _Unsupported as exc:
                        raise _fail(key, exc) from None
        out = [_TUPLE_HEADER]
        try:
            for p in key:
                _encode_part(p, False, out)
        except _Unsupported as exc:
            raise _fail(key, exc) from None
        except RecursionError:
            raise UnsupportedKeyError(
                f"cannot use {reprlib.repr(key)} as a context key: nested too deeply"
            ) from None
        return b"".join(out)
    if isinstance(key, tuple):  # a tuple subclass (namedtuple) is the plain tuple key
        return encode_key(tuple(key))
    out = [_SCALAR_HEADER]
    try:
        _encode_part(key, False, out)
    except _Unsupported as exc:
        raise _fail(key, exc) from None
    return b"".join(out)


_INT_HEADS = [bytes((_INT_ZERO + n,)) for n in range(9)]


def encode_namespace(namespace: str) -> bytes:
    """A namespace path as one codec string element: stores prefix their keys with it."""
    try:
        return _encode_str(namespace)
    except _Unsupported as exc:
        raise UnsupportedKeyError(f"namespace {namespace!r} {exc.reason}") from None


def encode_keys(keys: Iterable[Any], prefix: bytes = b"") -> list[bytes]:
    """Encode many keys, each after ``prefix`` (e.g. :func:`encode_namespace`).

    ``(str, int)`` pairs (``("row", 7)``) take an inlined fast path.
    """
    heads: dict[str, bytes] = {}
    out: list[bytes] = []
    append = out.append
    for key in keys:
        if type(key) is tuple and len(key) == 2:
            a, b = key
            if type(a) is str and type(b) is int and 0 < b < 0x10000000000000000:
                head = heads.get(a)
                if head is None:
                    try:
                        head = heads[a] = prefix + b"\x01" + _encode_str(a)
                    except _Unsupported as exc:
                        raise _fail(key, exc) from None
                n = (b.bit_length() + 7) >> 3
                append(head + _INT_HEADS[n] + b.to_bytes(n, "big"))
                continue
        append(prefix + encode_key(key))
    return out


def in_key_order(keys: list[bytes], values: list[T]) -> tuple[list[bytes], list[T]]:
    """Encoded keys and their values, reordered by key (the lists themselves if already so).

    Stable: the entries of a repeated key keep their order, so the last still
    wins when they are written in turn. SQL stores write every batch in this
    order: two transactions over the same keys then take their row locks in
    the same order, and one waits for the other instead of both for each
    other (a deadlock); B-trees also take keys in order faster. A batch built
    in key order (the usual case) costs one comparison per key.
    """
    if all(map(operator.lt, keys, islice(keys, 1, None))):
        return keys, values
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return [keys[i] for i in order], [values[i] for i in order]


def encode_prefix(prefix: tuple[Any, ...]) -> bytes:
    """Encode a tuple prefix: a byte prefix of every tuple key that starts with it.

    The empty tuple gives ``b"\\x01"``, the prefix of every tuple key (scalar
    keys are excluded; use :func:`prefix_range` with ``()`` for everything).

    The converse needs one more check: an encoded key starts with the prefix
    *element-wise* only if it starts with these bytes and the next byte (if
    any) is not ``0xFF``. ``0xFF`` there continues an escaped NUL of the last
    element (``("a\\x00",)`` starts with the bytes of ``("a",)``), whereas
    the next element always starts with a type code below ``0xFF``. Use
    :func:`prefix_range` (or :func:`has_prefix`) rather than ``startswith``.
    """
    if type(prefix) is not tuple:
        if isinstance(prefix, tuple):
            prefix = tuple(prefix)
        else:
            raise UnsupportedKeyError(
                f"a key prefix must be a tuple, got {type(prefix).__name__} {prefix!r}; "
                f"write ({prefix!r},) for keys that start with it"
            )
    return encode_key(prefix)


def strinc(data: bytes) -> bytes | None:
    """Smallest byte string greater than every string starting with ``data``."""
    stripped = data.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def prefix_range(prefix: tuple[Any, ...] | None) -> tuple[bytes, bytes | None]:
    """Return ``(low, high)``: encoded keys ``k`` under ``prefix`` satisfy ``low <= k < high``.

    ``None`` or ``()`` selects every key (tuple and scalar); ``high`` is
    ``None`` when there is no upper bound. Otherwise ``high`` is the prefix
    followed by ``0xFF``: a key under the prefix continues with a type code
    (below ``0xFF``), while a key whose last prefix element merely continues
    (``("a\\x00",)`` for the prefix ``("a",)``: escaped NUL ``0x00 0xFF``)
    sorts at or above ``high``. So the range holds exactly the keys under
    ``prefix``.
    """
    if prefix is None or prefix == ():
        return b"", None
    low = encode_prefix(prefix)
    return low, low + b"\xff"


def namespace_range(namespace_tag: bytes, prefix: tuple[Any, ...] | None) -> tuple[bytes, bytes]:
    """:func:`prefix_range` inside a namespace whose keys all start with ``namespace_tag``.

    Stores that fold :func:`encode_namespace` into their keys scan ``[low, high)``.
    """
    low, high = prefix_range(prefix)
    return namespace_tag + low, namespace_tag + (high if high is not None else b"\xff")


def has_prefix(encoded_key: bytes, encoded_prefix: bytes) -> bool:
    """Whether the key encoded as ``encoded_key`` is under the tuple prefix ``encoded_prefix``."""
    n = len(encoded_prefix)
    return encoded_key.startswith(encoded_prefix) and (
        len(encoded_key) == n or encoded_key[n] != 0xFF
    )


# --------------------------------------------------------------------------- decoding


def _find_terminator(data: bytes, pos: int) -> int:
    while True:
        end = data.index(b"\x00", pos)
        if end + 1 < len(data) and data[end + 1] == 0xFF:
            pos = end + 2
            continue
        return end


def _decode_part(data: bytes, pos: int, nested: bool) -> tuple[Any, int]:
    code = data[pos]
    if code in (_STR, _BYTES):
        end = _find_terminator(data, pos + 1)
        raw = data[pos + 1 : end].replace(b"\x00\xff", b"\x00")
        if code == _BYTES:
            return raw, end + 1
        text = raw.decode("utf-8")
        # Interned, so decoded kinds such as "row" are the very objects adapters compare with.
        return (intern(text) if len(text) <= 32 else text), end + 1
    if _INT_ZERO - 8 <= code <= _INT_ZERO + 8:
        n = code - _INT_ZERO
        if n >= 0:
            return int.from_bytes(data[pos + 1 : pos + 1 + n], "big"), pos + 1 + n
        n = -n
        comp = int.from_bytes(data[pos + 1 : pos + 1 + n], "big")
        return comp - (1 << (8 * n)) + 1, pos + 1 + n
    if code == _POS_BIG:
        n = data[pos + 1]
        return int.from_bytes(data[pos + 2 : pos + 2 + n], "big"), pos + 2 + n
    if code == _NEG_BIG:
        n = data[pos + 1] ^ 0xFF
        comp = int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
        return comp - (1 << (8 * n)) + 1, pos + 2 + n
    if code == _NONE:
        return None, pos + (2 if nested else 1)
    if code == _NESTED:
        items: list[Any] = []
        pos += 1
        while True:
            if data[pos] == 0x00 and not (pos + 1 < len(data) and data[pos + 1] == 0xFF):
                return tuple(items), pos + 1
            item, pos = _decode_part(data, pos, True)
            items.append(item)
    if code == _FLOAT:
        raw = data[pos + 1 : pos + 9]
        if raw[0] & 0x80:
            raw = bytes((raw[0] ^ 0x80,)) + raw[1:]
        else:
            raw = bytes(b ^ 0xFF for b in raw)
        return struct.unpack(">d", raw)[0], pos + 9
    if code == _FALSE:
        return False, pos + 1
    if code == _TRUE:
        return True, pos + 1
    if code == _DATE:
        return date.fromordinal(int.from_bytes(data[pos + 1 : pos + 5], "big")), pos + 5
    if code == _NAIVE_DT:
        us = int.from_bytes(data[pos + 1 : pos + 9], "big")
        return _EPOCH + timedelta(microseconds=us), pos + 9
    if code == _AWARE_DT:
        us = int.from_bytes(data[pos + 1 : pos + 9], "big") - _BIAS64
        secs = int.from_bytes(data[pos + 9 : pos + 13], "big") - _BIAS32
        tz = timezone.utc if secs == 0 else timezone(timedelta(seconds=secs))
        # Rebuild from the local wall time: going through UTC would overflow for
        # instants whose UTC date is outside years 1..9999 (e.g. 0001-01-01 at +05:00).
        local = _EPOCH + timedelta(microseconds=us + secs * 1_000_000)
        return local.replace(tzinfo=tz), pos + 13
    raise ValueError(f"unknown type code 0x{code:02x} at byte {pos}")


def decode_key(data: bytes) -> Key:
    """Decode bytes made by :func:`encode_key`.

    Raises :class:`UnsupportedKeyError` for bytes that are not a valid encoding.
    """
    try:
        header = data[0]
        if header & 0x7F != CODEC_VERSION:
            raise ValueError(f"codec version {header & 0x7F} is not supported")
        if header & 0x80:
            value, pos = _decode_part(data, 1, False)
            if pos != len(data):
                raise ValueError("trailing bytes")
            return value  # type: ignore[no-any-return]
        items = []
        pos = 1
        while pos < len(data):
            item, pos = _decode_part(data, pos, False)
            items.append(item)
        return tuple(items)
    except (IndexError, ValueError, struct.error, OverflowError) as exc:
        raise UnsupportedKeyError(f"not a valid encoded context key: {bytes(data)!r} ({exc})") from None
    except RecursionError:
        raise UnsupportedKeyError(
            f"not a valid encoded context key: {bytes(data)[:80]!r}... (nested too deeply)"
        ) from None
