"""The checkpoint file format (version 1): typed JSON keys, JSON Lines and Parquet, read and written.

JSON Lines, UTF-8 (gzip-compressed when the name ends in ``.gz``)::

    {"format":"context-framework","kind":"checkpoint","version":1,"key_codec":1,...}
    {"k":["row",7],"v":{"source":"PubMed"}}
    {"ns":"genes","k":"a scalar key","v":{"n":1}}
    {"end":true,"count":2,"crc32":1234567890}

* line 1, the header: ``format``, ``kind``, ``version`` (readers refuse a newer
  one), ``key_codec``, ``created`` (UTC), ``source`` (the store's ``repr``, no
  password), ``namespace`` (the source store's own, for information),
  ``namespaces`` (the namespaces dumped, relative to it; ``""`` is its own)
  and ``prefix`` (a key in the form below, or ``null``);
* one line per entry: ``k`` the key, ``v`` the metadata, ``ns`` its namespace
  relative to the dumped store (left out for ``""``);
* the last line, the end record: ``count`` entries and the ``crc32`` of their
  lines' bytes (newlines included). A file without it is truncated and is
  refused; blank lines are ignored.

Keys in JSON keep their types: a tuple is an array; ``str``, ``bool``,
``None``, integers in ``[-2**63, 2**64)`` and finite floats are JSON scalars
(a float is always written with a ``.`` or an exponent: ``1.0``, ``1e+16``);
anything else is a one-member object: ``{"int":"<decimal>"}``,
``{"float":"nan"|"inf"|"-inf"}``, ``{"bytes":"<base64>"}``,
``{"date":"2024-01-31"}``, ``{"datetime":"<ISO 8601, with its offset if aware>"}``.

Parquet (needs pyarrow: ``pip install 'context-framework[parquet]'``):
columns ``key`` (binary: :func:`context_framework.keys.encode_key`),
``value`` (string: the JSON text) and ``namespace`` (string,
dictionary-encoded), zstd-compressed, in row groups; the header is the
schema metadata entry ``context-framework``. The format's footer makes a
truncated file unreadable.

Readers check every line or row as they go and raise
:class:`~context_framework.exceptions.ContextSerializationError` naming the
file and the line (row) number.
"""

from __future__ import annotations

import base64
import gzip
import io
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import IO, Any, Literal

from .base_store import Metadata, check_namespace
from .exceptions import (
    ContextConfigurationError,
    ContextKeyError,
    ContextSerializationError,
    MissingDependencyError,
)
from .keys import CODEC_VERSION, Key, decode_key, encode_key
from .values import dumps_json, loads_json

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointReader",
    "Entry",
    "key_from_json",
    "key_to_json",
    "make_header",
    "read_checkpoint",
    "verify_checkpoint",
    "write_jsonl",
    "write_parquet",
]

FORMAT = "context-framework"
FORMAT_VERSION = 1
PARQUET_META_KEY = b"context-framework"
READ_BATCH_ROWS = 10_000

Format = Literal["jsonl", "parquet"]
Target = str | os.PathLike[str] | IO[Any]
#: One entry to write: ``(namespace relative to the dumped store, key, metadata)``.
Entry = tuple[str, Key, Metadata]

_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1
_LINES_PER_WRITE = 2_000
_MISSING: Any = object()

# --------------------------------------------------------------------------- keys as typed JSON


def _part_to_json(p: Any) -> Any:
    t = type(p)
    if t is str or t is bool or p is None:
        return p
    if t is int:
        return p if _INT_MIN <= p <= _INT_MAX else {"int": str(p)}
    if t is float:
        if p - p == 0.0:
            return p
        return {"float": "nan" if p != p else ("inf" if p > 0 else "-inf")}
    if t is tuple:
        return [_part_to_json(x) for x in p]
    if t is bytes:
        return {"bytes": base64.b64encode(p).decode("ascii")}
    if t is datetime:
        return {"datetime": p.isoformat()}
    if t is date:
        return {"date": p.isoformat()}
    from .keys import normalize_key

    normal = normalize_key(p)  # numpy/pandas scalars, subclasses; raises UnsupportedKeyError
    if type(normal) is t:
        raise ContextSerializationError(f"cannot write the key part {p!r} of type {t.__name__}")
    return _part_to_json(normal)


def key_to_json(key: Key) -> Any:
    """The typed JSON form of ``key`` (see the module docstring): a JSON-compatible object."""
    return _part_to_json(key)


def _key_text(key: Any) -> str:
    """``key`` as typed JSON text; ``(str, int, ...)`` tuples go straight to the C encoder."""
    if type(key) is tuple:
        for p in key:
            tp = type(p)
            if not (tp is str or (tp is int and _INT_MIN <= p <= _INT_MAX)):
                break
        else:
            return dumps_json(key)  # type: ignore[no-any-return]
    return dumps_json(_part_to_json(key))  # type: ignore[no-any-return]


def _tagged(obj: dict[str, Any]) -> Any:
    if len(obj) != 1:
        raise ValueError(f"a typed key part is an object of one member, got {obj!r:.80}")
    ((tag, text),) = obj.items()
    if type(text) is not str:
        raise ValueError(f"the {tag!r} key part must be a string, got {text!r:.80}")
    if tag == "int":
        return int(text)
    if tag == "float":
        if text not in ("nan", "inf", "-inf"):
            raise ValueError(f"a float key part given as text is nan, inf or -inf, got {text!r:.80}")
        return float(text)
    if tag == "bytes":
        return base64.b64decode(text.encode("ascii"), validate=True)
    if tag == "datetime":
        value = datetime.fromisoformat(text)
        if value.tzinfo is not None and not value.utcoffset():
            value = value.replace(tzinfo=timezone.utc)
        return value
    if tag == "date":
        return date.fromisoformat(text)
    raise ValueError(f"unknown typed key part {tag!r} (known: int, float, bytes, datetime, date)")


def _part_from_json(obj: Any) -> Any:
    t = type(obj)
    if t is str or t is int or t is float or t is bool or obj is None:
        return obj
    if t is list:
        return tuple(_part_from_json(x) for x in obj)
    if t is dict:
        return _tagged(obj)
    raise ValueError(f"{obj!r:.80} is not a key part")


def key_from_json(obj: Any) -> Key:
    """The key whose typed JSON form is ``obj``; ``ValueError`` if it is not one."""
    if type(obj) is list:
        for p in obj:
            if type(p) is not str and type(p) is not int:
                break
        else:
            return tuple(obj)
    return _part_from_json(obj)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- header and writers


def make_header(
    source: str, namespace: str, names: list[str], prefix: tuple[Any, ...] | None
) -> dict[str, Any]:
    """The header of a checkpoint of ``names`` (namespaces relative to ``namespace``) of ``source``."""
    return {
        "format": FORMAT,
        "kind": "checkpoint",
        "version": FORMAT_VERSION,
        "key_codec": CODEC_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "namespace": namespace,
        "namespaces": names,
        "prefix": None if prefix is None else key_to_json(prefix),
    }


def pyarrow_modules() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, or MissingDependencyError naming the extra."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependencyError.for_extra("parquet", "pyarrow") from exc
    return pa, pq


def write_jsonl(
    out: Any, header: dict[str, Any], entries: Iterator[Entry], advance: Callable[[int], None]
) -> int:
    """Write a JSON Lines checkpoint to ``out`` (binary or text); return the number of entries.

    ``advance(n)`` is called after every chunk of ``n`` lines written.
    """
    text = isinstance(out, io.TextIOBase)
    write = out.write

    def emit(chunk: str) -> bytes:
        data = chunk.encode("utf-8")
        write(chunk if text else data)
        return data

    emit(dumps_json(header) + "\n")
    crc = 0
    count = 0
    lines: list[str] = []
    append = lines.append
    key_text = _key_text
    for ns, key, value in entries:
        if ns:
            append(f'{{"ns":{dumps_json(ns)},"k":{key_text(key)},"v":{dumps_json(value)}}}\n')
        else:
            append(f'{{"k":{key_text(key)},"v":{dumps_json(value)}}}\n')
        if len(lines) >= _LINES_PER_WRITE:
            crc = zlib.crc32(emit("".join(lines)), crc)
            count += len(lines)
            advance(len(lines))
            lines.clear()
    if lines:
        crc = zlib.crc32(emit("".join(lines)), crc)
        count += len(lines)
        advance(len(lines))
    emit(dumps_json({"end": True, "count": count, "crc32": crc}) + "\n")
    return count


def write_parquet(
    out: Any,
    header: dict[str, Any],
    entries: Iterator[Entry],
    advance: Callable[[int], None],
    row_group_size: int,
) -> int:
    """Write a Parquet checkpoint to ``out`` (a path or binary file) in row groups; return the count."""
    pa, pq = pyarrow_modules()
    schema = pa.schema(
        [("key", pa.binary()), ("value", pa.string()), ("namespace", pa.string())],
        metadata={PARQUET_META_KEY: dumps_json(header).encode("utf-8")},
    )
    count = 0
    with pq.ParquetWriter(out, schema, use_dictionary=["namespace"], compression="zstd") as writer:
        keys: list[bytes] = []
        values: list[str] = []
        spaces: list[str] = []

        def flush() -> None:
            table = pa.Table.from_arrays(
                [pa.array(keys, pa.binary()), pa.array(values, pa.string()), pa.array(spaces, pa.string())],
                schema=schema,
            )
            writer.write_table(table, row_group_size=len(keys))
            advance(len(keys))
            keys.clear()
            values.clear()
            spaces.clear()

        for ns, key, value in entries:
            keys.append(encode_key(key))
            values.append(dumps_json(value))
            spaces.append(ns)
            if len(keys) >= row_group_size:
                count += len(keys)
                flush()
        if keys:
            count += len(keys)
            flush()
    return count


# --------------------------------------------------------------------------- reading


@dataclass
class CheckpointReader:
    """The entries of a checkpoint, read as a stream.

    Iterate it for ``(namespace, key, metadata, line)`` tuples (``line``: the
    line number in JSON Lines, the row number in Parquet, both from 1). Every
    problem raises :class:`ContextSerializationError` naming the file and line.
    ``header`` is the file's header; ``count`` the entries read so far;
    ``position`` (JSON Lines) the byte offset reached in the file as stored.
    """

    name: str
    format: Format
    header: dict[str, Any]
    _rows: Iterator[tuple[str, Key, Metadata, int]] = field(repr=False)
    _close: Callable[[], None] = field(repr=False)
    _position: Callable[[], int | None] = field(repr=False)
    size: int | None = None
    count: int = 0

    def __iter__(self) -> Iterator[tuple[str, Key, Metadata, int]]:
        for row in self._rows:
            self.count += 1
            yield row

    @property
    def position(self) -> int | None:
        return self._position()

    @property
    def prefix(self) -> tuple[Any, ...] | None:
        raw = self.header.get("prefix")
        return None if raw is None else key_from_json(raw)  # type: ignore[return-value]

    @property
    def namespaces(self) -> list[str]:
        return list(self.header.get("namespaces") or [""])

    def close(self) -> None:
        self._close()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def source_name(target: Any) -> str:
    """A file's name for messages: the path, or a file object's ``name``."""
    if isinstance(target, (str, os.PathLike)):
        return os.fspath(target)
    return str(getattr(target, "name", None) or f"<{type(target).__name__}>")


def _bad(name: str, where: str, what: str) -> ContextSerializationError:
    return ContextSerializationError(f"{name}: {where}: {what}")


def read_checkpoint(source: Target, *, format: Format | None = None) -> CheckpointReader:
    """Open a checkpoint (a path or a file object) and check its header.

    The format is sniffed from the first bytes (gzip, Parquet, JSON Lines)
    unless ``format`` is given. Use it as a context manager and iterate it.
    """
    if format not in (None, "jsonl", "parquet"):
        raise ContextConfigurationError(f"format must be 'jsonl' or 'parquet', got {format!r}")
    name = source_name(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            raw: Any = open(source, "rb")  # noqa: SIM115
        except OSError as exc:
            raise ContextConfigurationError(f"cannot open {name}: {exc.strerror or exc}") from exc
        owned = True
    else:
        raw, owned = source, False
    try:
        return _reader(raw, name, format, owned)
    except BaseException:
        if owned:
            raw.close()
        raise


def _sniff(raw: Any) -> bytes:
    """The first 4 bytes of a binary stream, without consuming them (b"" if that cannot be done)."""
    peek = getattr(raw, "peek", None)
    if peek is not None:
        return bytes(peek(4)[:4])
    if getattr(raw, "seekable", lambda: False)():
        where = raw.tell()
        head = raw.read(4)
        raw.seek(where)
        return bytes(head)
    return b""


def _size(raw: Any) -> int | None:
    try:
        return os.fstat(raw.fileno()).st_size
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _reader(raw: Any, name: str, fmt: Format | None, owned: bool) -> CheckpointReader:
    text = isinstance(raw, io.TextIOBase)
    head = b"" if text else _sniff(raw)
    if fmt is None:
        fmt = "parquet" if head == b"PAR1" else "jsonl"
    close = raw.close if owned else (lambda: None)
    if fmt == "parquet":
        if text:
            raise ContextConfigurationError(f"{name}: Parquet needs a binary file object")
        return _parquet_reader(raw, name, close)
    stream = raw
    if head[:2] == b"\x1f\x8b":
        stream = gzip.GzipFile(fileobj=raw, mode="rb")
        inner_close = close

        def close() -> None:
            stream.close()
            inner_close()

    def position() -> int | None:
        try:
            return int(raw.tell())
        except (OSError, ValueError, AttributeError):
            return None

    lines = _numbered_lines(stream, name)
    header = _jsonl_header(lines, name)
    reader = CheckpointReader(name, "jsonl", header, iter(()), close, position, size=_size(raw))
    reader._rows = _jsonl_rows(lines, name, reader)
    return reader


def _numbered_lines(stream: Any, name: str) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw bytes)`` with gzip/decoding failures turned into clear errors."""
    n = 0
    try:
        for line in stream:
            n += 1
            yield n, line if type(line) is bytes else line.encode("utf-8")
    except EOFError:
        raise _bad(name, f"after line {n}", "the compressed file is truncated") from None
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise _bad(name, f"after line {n}", f"the file cannot be read: {exc}") from exc


def _jsonl_header(lines: Iterator[tuple[int, bytes]], name: str) -> dict[str, Any]:
    first = next(lines, None)
    if first is None:
        raise _bad(name, "line 1", "the file is empty; a checkpoint starts with its header line")
    try:
        header = loads_json(first[1].decode("utf-8"))
    except ValueError:
        header = None
    if type(header) is not dict or header.get("format") != FORMAT:
        raise _bad(
            name, "line 1", f"not a context-framework checkpoint (its first line is {first[1][:80]!r})"
        )
    _check_header(header, name, "line 1")
    return header


def _check_header(header: dict[str, Any], name: str, where: str) -> None:
    version = header.get("version")
    if type(version) is not int:
        raise _bad(name, where, f"the header has no valid version: {version!r}")
    if version > FORMAT_VERSION:
        raise _bad(
            name,
            where,
            f"written in checkpoint format version {version}; this library reads up to version "
            f"{FORMAT_VERSION}: upgrade context-framework",
        )
    if version < 1:
        raise _bad(name, where, f"unknown checkpoint format version {version}")
    codec = header.get("key_codec", CODEC_VERSION)
    if codec != CODEC_VERSION:
        raise _bad(name, where, f"keys use codec version {codec!r}; this library reads {CODEC_VERSION}")
    names = header.get("namespaces", [""])
    if type(names) is not list or not all(type(n) is str for n in names):
        raise _bad(name, where, f"the header's namespaces must be a list of strings, got {names!r:.80}")
    try:
        prefix = header.get("prefix")
        if prefix is not None and type(key_from_json(prefix)) is not tuple:
            raise ValueError("not a tuple")
    except ValueError as exc:
        raise _bad(name, where, f"the header's prefix is not a key prefix ({exc})") from None


def _jsonl_rows(
    lines: Iterator[tuple[int, bytes]], name: str, reader: CheckpointReader
) -> Iterator[tuple[str, Key, Metadata, int]]:
    crc = 0
    count = 0
    n = 1
    crc32 = zlib.crc32
    loads = loads_json
    for n, raw in lines:
        try:
            # Without its newline, the line is one C scan (with it, json's slower whitespace path).
            doc = loads((raw[:-1] if raw[-1:] == b"\n" else raw).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise _bad(name, f"line {n}", f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        except ValueError as exc:
            if not raw.strip():
                continue  # a blank line
            what = "is cut short (the file is truncated)" if not raw.endswith(b"\n") else "is not valid JSON"
            raise _bad(name, f"line {n}", f"{what}: {exc}") from None
        if type(doc) is not dict:
            raise _bad(name, f"line {n}", f"an entry is a JSON object, got {raw[:80]!r}")
        k = doc.get("k", _MISSING)
        if k is _MISSING:
            if "end" in doc:
                _check_end(doc, count, crc, name, n)
                for m, extra in lines:
                    if extra.strip():
                        raise _bad(name, f"line {m}", "data after the end record")
                return
            raise _bad(name, f"line {n}", f"an entry needs a key 'k': {raw[:80]!r}")
        try:
            key = key_from_json(k)
        except (ValueError, TypeError) as exc:
            raise _bad(name, f"line {n}", f"bad key {k!r:.80}: {exc}") from None
        value = doc.get("v")
        if type(value) is not dict:
            raise _bad(name, f"line {n}", f"the metadata 'v' must be a JSON object, got {value!r:.80}")
        ns = doc.get("ns", "")
        if ns:
            ns = _entry_namespace(ns, name, f"line {n}")
        crc = crc32(raw, crc)
        count += 1
        yield ns, key, value, n
    raise _bad(
        name,
        f"after line {n}",
        f"the file ends without its end record after {count:,} entries: it is truncated",
    )


def _entry_namespace(ns: Any, name: str, where: str) -> str:
    try:
        if type(ns) is not str:
            raise ContextConfigurationError(f"it must be a string, got {ns!r:.80}")
        return check_namespace(ns)
    except ContextConfigurationError as exc:
        raise _bad(name, where, f"bad namespace: {exc}") from None


def _check_end(doc: dict[str, Any], count: int, crc: int, name: str, n: int) -> None:
    expected = doc.get("count")
    if expected != count:
        raise _bad(
            name, f"line {n}", f"the end record counts {expected!r} entries but the file holds {count:,}"
        )
    if "crc32" in doc and doc["crc32"] != crc:
        raise _bad(
            name, f"line {n}", "the entries' CRC-32 does not match the end record: the file was altered"
        )


def _parquet_reader(raw: Any, name: str, close: Callable[[], None]) -> CheckpointReader:
    pa, pq = pyarrow_modules()
    try:
        pf = pq.ParquetFile(raw)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _bad(name, "footer", f"not a readable Parquet file (truncated?): {exc}") from exc
    meta = pf.schema_arrow.metadata or {}
    try:
        header = loads_json(meta[PARQUET_META_KEY].decode("utf-8"))
    except (KeyError, ValueError, UnicodeDecodeError):
        header = None
    if type(header) is not dict or header.get("format") != FORMAT:
        raise _bad(name, "schema metadata", "not a context-framework checkpoint (no header)")
    _check_header(header, name, "schema metadata")
    missing = {"key", "value", "namespace"} - set(pf.schema_arrow.names)
    if missing:
        raise _bad(name, "schema", f"missing column(s) {', '.join(sorted(missing))}")
    rows = _parquet_rows(pf, pa, name)
    return CheckpointReader(name, "parquet", header, rows, close, lambda: None, size=_size(raw))


def _parquet_rows(pf: Any, pa: Any, name: str) -> Iterator[tuple[str, Key, Metadata, int]]:
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS, columns=["key", "value", "namespace"]):
            keys, values, spaces = (batch.column(i).to_pylist() for i in range(3))
            for raw_key, text, ns in zip(keys, values, spaces):
                row += 1
                try:
                    key = decode_key(raw_key)
                except (ContextKeyError, TypeError) as exc:
                    raise _bad(name, f"row {row}", f"bad key: {exc}") from None
                try:
                    value = loads_json(text)
                except (ValueError, TypeError) as exc:
                    raise _bad(name, f"row {row}", f"the value is not valid JSON: {exc}") from None
                if type(value) is not dict:
                    raise _bad(name, f"row {row}", f"the value must be a JSON object, got {text!r:.80}")
                yield (_entry_namespace(ns, name, f"row {row}") if ns else ""), key, value, row
    except (pa.ArrowException, OSError) as exc:
        raise _bad(name, f"after row {row}", f"the file cannot be read: {exc}") from exc


def verify_checkpoint(source: Target, *, format: Format | None = None) -> CheckpointReader:
    """Read a whole checkpoint and check it, writing nothing; return its (closed) reader.

    ``reader.count`` is its number of entries, ``reader.header`` its header.
    """
    with read_checkpoint(source, format=format) as reader:
        for _ in reader:
            pass
    return reader
