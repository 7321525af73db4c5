"""Metadata values: validation, documented conversions, JSON encoding, size limit.

Context metadata is a JSON-compatible ``dict``: string keys; values that are
``str``, ``int`` (within the 64-bit range), finite ``float``, ``bool``,
``None``, lists and dicts of these. Such a dict round-trips exactly through
every store, and every store applies the same rules at add time, so moving
from memory to SQLite or Redis brings no new surprise.

Documented conversions (applied identically by every store):

=========================================  =================================
given                                      stored as
=========================================  =================================
``tuple``                                  ``list``
any ``Mapping``                            ``dict``
subclasses of ``str``/``int``/``float``    the base type (``IntEnum`` → int)
numpy scalars / arrays                     the Python scalar / nested lists
``datetime``, ``date``, ``time``           ISO 8601 string (``isoformat()``)
``pandas.Timestamp``                       ISO 8601 string
``uuid.UUID``                              its canonical string
=========================================  =================================

Everything else raises :class:`ContextSerializationError` naming the path of
the offending item and what to do instead: sets, bytes, ``Decimal``, open
files, arbitrary objects, non-string dict keys, NaN and infinities (JSON
cannot hold them; use ``None``), pandas ``NA``/``NaT`` (use ``None``), and
integers outside ``[-2**63, 2**64)`` (most JSON parsers and SQL JSON types
lose them). Stores accept at most ``max_value_size`` bytes of encoded JSON
(UTF-8), 1 MiB by default, and raise :class:`ContextValueTooLargeError` above.

No aliasing: what a store keeps is a private copy, and what ``get`` returns
is a fresh copy; mutating either never changes what is stored.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time
from typing import Any

from .exceptions import ContextSerializationError, ContextStoreError, ContextValueTooLargeError

__all__ = [
    "DEFAULT_MAX_VALUE_SIZE",
    "check_size",
    "decode_value",
    "encode_value",
    "encode_values",
    "decode_stored",
    "decode_values",
    "prepare_value",
]

DEFAULT_MAX_VALUE_SIZE = 1 << 20
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1
_MAX_DEPTH = 200

def _not_serializable(obj: Any) -> Any:
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
# The C encoder, built once (compact, ensure_ascii=False, allow_nan=False, no circular check).
_c_encoder = (
    _c_make_encoder(
        None, _not_serializable, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    if _c_make_encoder is not None
    else None
)
_json_decoder = json.JSONDecoder()
_scan_once = _json_decoder.scan_once  # type: ignore[attr-defined]


def _make_dumps() -> Any:
    """Compact JSON (ensure_ascii=False, no NaN, no circular check), C encoder built once.

    ``json.JSONEncoder.encode`` builds a new C encoder on every call, which costs
    more than encoding a small dict; building it once makes encoding ~3x faster.
    """
    encoder = _c_encoder
    if encoder is None:  # pragma: no cover - pure-Python json
        return json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
        ).encode
    join = "".join

    def dumps(obj: Any) -> str:
        return join(encoder(obj, 0))

    return dumps


def _make_loads() -> Any:
    """Decode one JSON document, through the C scanner directly when it spans the whole text."""
    scan_once = _scan_once
    decode = _json_decoder.decode

    def loads(text: str) -> Any:
        try:
            value, end = scan_once(text, 0)
        except StopIteration:
            return decode(text)  # raises a proper JSONDecodeError
        return value if end == len(text) else decode(text)

    return loads


_encode_json = _make_dumps()
_decode_json = _make_loads()


def _flat_bound(value: dict[Any, Any]) -> int:
    """Upper bound of the JSON size of a flat dict of plain scalars, or -1.

    -1 means "not a flat dict of plain str/int/float/bool/None": take the slow path.
    """
    bound = 2
    for k, v in value.items():
        if type(k) is not str or not k.isascii():
            return -1
        tv = type(v)
        if tv is str:
            if not v.isascii():  # non-ASCII text goes the slow way (lone-surrogate check)
                return -1
            bound += 6 * (len(k) + len(v)) + 6
        elif tv is int:
            if not _INT_MIN <= v <= _INT_MAX:
                return -1
            bound += 6 * len(k) + 26
        elif tv is float:
            if v - v != 0.0:  # NaN or infinity
                return -1
            bound += 6 * len(k) + 30
        elif tv is bool or v is None:
            bound += 6 * len(k) + 10
        else:
            return -1
    return bound


def _err(path: str, what: str, hint: str) -> ContextSerializationError:
    return ContextSerializationError(f"metadata{path} {what}; {hint}")


def _check_text(text: str, path: str) -> str:
    """``text`` if it is valid Unicode (encodable as UTF-8), else a clear error."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _err(
            path,
            f"holds the lone surrogate {text[exc.start]!r} at index {exc.start}, which is not "
            "valid Unicode",
            "decode the bytes it came from properly (e.g. with errors='replace')",
        ) from None
    return text


def _convert(obj: Any, path: str, depth: int) -> Any:
    """Return a fresh JSON-compatible copy of ``obj`` or raise ContextSerializationError."""
    if depth > _MAX_DEPTH:
        raise _err(path, "is nested too deeply (or refers to itself)", "flatten it")
    t = type(obj)
    if t is str:
        return obj if obj.isascii() else _check_text(obj, path)
    if t is bool or obj is None:
        return obj
    if t is int:
        if not _INT_MIN <= obj <= _INT_MAX:
            raise _err(path, f"is the integer {obj}, outside [-2**63, 2**64)", "store it as a string")
        return obj
    if t is float:
        if obj - obj != 0.0:
            raise _err(path, f"is {obj!r}, which JSON cannot hold", "use None for a missing number")
        return obj
    if t is dict or isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if type(k) is not str:
                if isinstance(k, str):
                    k = str.__str__(k)
                else:
                    raise _err(
                        path,
                        f"has the key {k!r} of type {type(k).__name__}",
                        "metadata dict keys must be strings (JSON would turn it into a string silently)",
                    )
            if not k.isascii():
                _check_text(k, f"{path} key {k!r}")
            out[k] = _convert(v, f"{path}[{k!r}]", depth + 1)
        return out
    if t is list or t is tuple:
        return [_convert(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
    module = t.__module__
    if module == "numpy":
        return _convert_numpy(obj, path, depth)
    if module.startswith("pandas"):
        return _convert_pandas(obj, path, depth)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, str):
        return _check_text(str.__str__(obj), path)
    if isinstance(obj, int):
        return _convert(int.__index__(obj), path, depth)
    if isinstance(obj, float):
        return _convert(float(obj), path, depth)
    if isinstance(obj, (datetime, date, time)):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [_convert(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        raise _err(path, f"is a {t.__name__}, which JSON cannot hold", "store a sorted list instead")
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raise _err(path, f"is {t.__name__}, which JSON cannot hold", "store text, or base64-encode it")
    if hasattr(obj, "read") or hasattr(obj, "fileno"):
        raise _err(path, f"is a file-like object ({t.__name__})", "store its path or its contents as text")
    raise _err(
        path,
        f"is a {t.__module__}.{t.__qualname__}, which is not JSON-compatible",
        "store str, int, float, bool, None, or lists/dicts of these",
    )


def _convert_numpy(obj: Any, path: str, depth: int) -> Any:
    import numpy as np

    if isinstance(obj, np.ndarray):
        return _convert(obj.tolist(), path, depth)
    if isinstance(obj, np.datetime64):
        if np.isnat(obj):
            raise _err(path, "is NaT", "use None for a missing time")
        return str(obj)
    if isinstance(obj, np.generic):
        return _convert(obj.item(), path, depth)
    raise _err(path, f"is a numpy {type(obj).__name__}", "convert it to a Python value")


def _convert_pandas(obj: Any, path: str, depth: int) -> Any:
    import pandas as pd

    if obj is pd.NaT or obj is pd.NA:
        raise _err(path, f"is {obj!r}", "use None for a missing value")
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    if isinstance(obj, pd.Timedelta):
        return obj.isoformat()
    if isinstance(obj, (pd.Series, pd.Index)):
        return _convert(obj.tolist(), path, depth)
    raise _err(path, f"is a pandas {type(obj).__name__}", "convert it to plain Python values")


def _top_level(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ContextSerializationError(
            f"metadata must be a dict, got {type(value).__name__} {value!r:.80}; "
            "wrap it, e.g. {'value': ...}"
        )
    try:
        return _convert(value, "", 0)  # type: ignore[no-any-return]
    except RecursionError:
        raise ContextSerializationError("metadata is nested too deeply (or refers to itself)") from None


def _utf8_len(text: str) -> int:
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ContextSerializationError(
            f"metadata holds a string with a lone surrogate ({text[exc.start : exc.end]!r}), "
            "which is not valid Unicode; store valid text"
        ) from None


def _too_large(size: int, max_size: int) -> ContextValueTooLargeError:
    return ContextValueTooLargeError(
        f"metadata encodes to {size:,} bytes of JSON, over this store's max_value_size of "
        f"{max_size:,} bytes; store less, or open the store with a larger max_value_size"
    )


def check_size(text: str, max_size: int | None) -> None:
    """Raise :class:`ContextValueTooLargeError` if ``text`` is over ``max_size`` bytes."""
    if max_size is not None and len(text) * 4 > max_size:
        size = _utf8_len(text)
        if size > max_size:
            raise _too_large(size, max_size)


def prepare_value(value: Any, max_size: int | None = DEFAULT_MAX_VALUE_SIZE) -> dict[str, Any]:
    """Validate ``value`` and return a private, JSON-compatible deep copy of it."""
    if type(value) is dict:
        bound = _flat_bound(value)
        if bound >= 0:
            if max_size is not None and bound > max_size:
                check_size(_encode_json(value), max_size)
            return value.copy()
    out = _top_level(value)
    if max_size is not None:
        check_size(_encode_json(out), max_size)
    return out


def encode_value(value: Any, max_size: int | None = DEFAULT_MAX_VALUE_SIZE) -> str:
    """Validate ``value`` and return its compact JSON text."""
    if type(value) is dict:
        bound = _flat_bound(value)
        if bound >= 0:
            text: str = _encode_json(value)
            if max_size is not None and bound > max_size:
                check_size(text, max_size)
            return text
    text = _encode_json(_top_level(value))
    check_size(text, max_size)
    return text


def encode_values(values: Iterable[Any], max_size: int | None = DEFAULT_MAX_VALUE_SIZE) -> list[str]:
    """:func:`encode_value` for many values (batch paths): same rules, less overhead per value."""
    out: list[str] = []
    append = out.append
    limit = max_size if max_size is not None else 1 << 62
    encoder = _c_encoder
    join = "".join
    for value in values:
        if encoder is not None and type(value) is dict:
            bound = _flat_bound(value)
            if 0 <= bound <= limit:
                append(join(encoder(value, 0)))
                continue
        append(encode_value(value, max_size))
    return out


def decode_value(text: str | bytes) -> dict[str, Any]:
    """Decode JSON text written by :func:`encode_value`."""
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    return _decode_json(text)  # type: ignore[no-any-return]


def decode_stored(text: str | bytes) -> dict[str, Any]:
    """:func:`decode_value` for text read back from a store: bad data is a ContextStoreError."""
    try:
        return decode_value(text)
    except (TypeError, ValueError) as exc:
        raise ContextStoreError(f"stored value is not valid JSON: {text!r:.80} ({exc})") from exc


def decode_values(texts: Iterable[str | bytes | None]) -> list[dict[str, Any] | None]:
    """:func:`decode_value` for many texts; ``None`` stays ``None``."""
    out: list[dict[str, Any] | None] = []
    append = out.append
    scan_once = _scan_once
    for text in texts:
        if text is None:
            append(None)
            continue
        if type(text) is str:
            try:
                value, end = scan_once(text, 0)
                if end == len(text):
                    append(value)
                    continue
            except StopIteration:
                pass
        append(decode_value(text))
    return out


dumps_json = _encode_json
loads_json = _decode_json
