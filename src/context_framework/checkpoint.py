"""Checkpoints: dump a store (or some of its namespaces) to a file and load it into any store.

:func:`export_store` streams ``store.items()`` into a file, :func:`import_store`
streams a file back through ``set_many`` batches, :func:`copy_store` does both
without a file (``memory://`` → ``redis://``); :func:`read_checkpoint` iterates
a file's entries and :func:`verify_checkpoint` checks one without writing
anything. Nothing ever holds a whole dump: memory is one page of the source
store, one batch (``batch_size``) or one Parquet row group at a time. The
file format (JSON Lines with a versioned header and an end record, or
Parquet) is described in :mod:`context_framework.checkpoint_format`.

Namespaces: stores cannot list their namespaces, so a dump covers the
store's own namespace (pass a view, ``store.with_namespace("genes")``, or a
URL with ``?namespace=genes``, to dump one) plus the sub-namespaces named in
``namespaces=``; each entry records its namespace relative to the dumped
store, and an import puts it back under the target's (or ``namespace=``).

Guarantees. Export: a file is written under a temporary name and renamed
when complete, so the target name never holds a partial dump. A store that
changes during the export is not dumped as of one instant: each key present
throughout appears once, with a value it held. Import: every line is checked
as it is read (a bad one raises :class:`ContextSerializationError` naming its
line); the entries are written in batches of ``batch_size``, and an entry
that the file or the target store refuses stops the import with every batch
before its own written and nothing from its batch on. A truncated or altered
file is detected at its end (missing end record, count or CRC-32 mismatch),
after the batches before that point were written: ``verify=True`` (implied
by ``clear=True``) reads the whole file once first, so that such a file
imports nothing. Writes replace whole values, so importing a file twice
gives the same store as importing it once.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from .base_store import Metadata, check_namespace, check_prefix
from .checkpoint_format import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointReader,
    Entry,
    Format,
    Target,
    key_from_json,
    key_to_json,
    make_header,
    pyarrow_modules,
    read_checkpoint,
    source_name,
    verify_checkpoint,
    write_jsonl,
    write_parquet,
)
from .exceptions import (
    ContextConfigurationError,
    ContextError,
    ContextKeyError,
    ContextSerializationError,
    ContextValueError,
)
from .keys import Key, encode_key
from .values import DEFAULT_MAX_VALUE_SIZE, prepare_value

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointReader",
    "copy_store",
    "export_store",
    "import_store",
    "key_from_json",
    "key_to_json",
    "read_checkpoint",
    "verify_checkpoint",
]

DEFAULT_BATCH_SIZE = 10_000
DEFAULT_ROW_GROUP_SIZE = 100_000

Mode = Literal["replace", "skip-existing"]
#: ``None``: a bar on a terminal (tqdm, shown once a run takes over 1 s); ``True``/``False``:
#: always/never; a callable gets the number of entries done after each batch.
Progress = bool | None | Callable[[int], None]

_MODES = ("replace", "skip-existing")

# --------------------------------------------------------------------------- progress


class _Meter:
    """Progress of one dump, load or copy: a tqdm bar, plain lines, a callback, or nothing."""

    def __init__(
        self,
        progress: Progress,
        desc: str,
        total: Callable[[], int | None] | None = None,
        unit: str = "entries",
    ) -> None:
        self._callback = progress if callable(progress) else None
        self._bar: Any = None
        self._lines = False
        self._desc = desc
        self._entries = 0
        self._position = 0
        self._last_line = time.monotonic()
        if self._callback is not None or progress is False:
            return
        has_tqdm = _has_tqdm()
        if progress is None and not (has_tqdm and _stderr_is_terminal()):
            return
        if not has_tqdm:
            self._lines = True
            return
        from tqdm import tqdm

        byte_unit = unit == "B"
        self._bar = tqdm(
            total=total() if total is not None else None,
            desc=desc,
            unit=unit if byte_unit else " entries",
            unit_scale=True,
            unit_divisor=1024 if byte_unit else 1000,
            file=sys.stderr,
            delay=1.0 if progress is None else 0.0,
            leave=progress is True,
            dynamic_ncols=True,
        )
        self._byte_unit = byte_unit

    def advance(self, entries: int, position: int | None = None) -> None:
        """``entries`` more are done; ``position`` is the byte offset reached (byte bars)."""
        self._entries += entries
        if self._callback is not None:
            self._callback(self._entries)
        elif self._bar is not None:
            if self._byte_unit:
                if position is not None and position > self._position:
                    self._bar.update(position - self._position)
                    self._position = position
                self._bar.set_postfix_str(f"{self._entries:,} entries", refresh=False)
            else:
                self._bar.update(entries)
        elif self._lines and time.monotonic() - self._last_line >= 2.0:
            self._last_line = time.monotonic()
            print(f"{self._desc}: {self._entries:,} entries", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _has_tqdm() -> bool:
    import importlib.util

    return importlib.util.find_spec("tqdm") is not None


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


# --------------------------------------------------------------------------- stores and names


def _open(store: Any) -> tuple[Any, bool]:
    """(store, whether we opened it): a URL string is opened with :func:`open_store`."""
    if isinstance(store, str):
        from .registry import open_store

        return open_store(store), True
    from .wrappers.minimal import complete_store

    store = complete_store(store, close_inner=False)  # a four-method store, completed
    if not callable(getattr(store, "items", None)) or not callable(getattr(store, "set_many", None)):
        raise ContextConfigurationError(f"expected a store or a store URL, got {type(store).__name__}")
    return store, False


def _namespaces(namespaces: Iterable[str] | str | None) -> list[str]:
    if namespaces is None:
        return [""]
    if isinstance(namespaces, str):
        namespaces = [namespaces]
    out: list[str] = []
    for name in namespaces:
        name = check_namespace(name)
        if name not in out:
            out.append(name)
    if not out:
        raise ContextConfigurationError("namespaces is empty: name at least one ('' is the store's own)")
    return out


def _view(store: Any, namespace: str) -> Any:
    return store.with_namespace(namespace) if namespace else store


def _format_of(target: Any, fmt: str | None) -> tuple[Format, bool]:
    """(format, gzip) for an export target from ``fmt`` or the file name's suffixes."""
    name = source_name(target).lower() if isinstance(target, (str, os.PathLike)) else ""
    gz = name.endswith(".gz")
    stem = name[:-3] if gz else name
    if fmt is None:
        fmt = "parquet" if stem.endswith((".parquet", ".pq")) else "jsonl"
    if fmt not in ("jsonl", "parquet"):
        raise ContextConfigurationError(f"format must be 'jsonl' or 'parquet', got {fmt!r}")
    if fmt == "parquet" and gz:
        raise ContextConfigurationError("Parquet files are compressed inside; drop the .gz suffix")
    return fmt, gz  # type: ignore[return-value]


def _entries(store: Any, names: list[str], prefix: tuple[Any, ...] | None) -> Iterator[Entry]:
    """``(namespace, key, metadata)`` of every entry to dump, streamed page by page."""
    for ns in names:
        view = _view(store, ns)
        try:
            for key, value in view.items(prefix):
                yield ns, key, value
        finally:
            if view is not store:
                view.close()


def _count(store: Any, names: list[str], prefix: tuple[Any, ...] | None) -> int:
    total = 0
    for ns in names:
        view = _view(store, ns)
        try:
            total += view.count(prefix)
        finally:
            if view is not store:
                view.close()
    return total


# --------------------------------------------------------------------------- export


def export_store(
    store: Any,
    target: Target,
    *,
    format: Format | None = None,
    prefix: tuple[Any, ...] | None = None,
    namespaces: Iterable[str] | str | None = None,
    compress: bool | None = None,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    progress: Progress = None,
) -> int:
    """Dump ``store`` (a store or a URL) to ``target``; return the number of entries written.

    ``target``: a path (written atomically: a temporary file renamed when
    complete) or a binary file object (text works too for JSON Lines).
    ``format``: ``"jsonl"`` or ``"parquet"``; by default from the suffix
    (``.parquet``/``.pq``, else JSON Lines), gzip when it ends in ``.gz``
    (``compress`` overrides). ``prefix``: only keys under it. ``namespaces``:
    the namespaces to dump, relative to ``store``'s own (``""`` is its own,
    the default); stores cannot list their namespaces, so name them.
    """
    fmt, gz = _format_of(target, format)
    if compress is not None:
        gz = bool(compress)
        if gz and fmt == "parquet":
            raise ContextConfigurationError(
                "Parquet files are compressed inside; compress=True is for JSON Lines"
            )
    prefix = check_prefix(prefix)
    if prefix is not None:
        encode_key(prefix)  # a clear error for an unusable prefix, before any file is made
    names = _namespaces(namespaces)
    if not isinstance(row_group_size, int) or row_group_size < 1:
        raise ContextConfigurationError(f"row_group_size must be a positive int, got {row_group_size!r}")
    if fmt == "parquet":
        pyarrow_modules()
    store, opened = _open(store)
    try:
        header = make_header(repr(store), getattr(store, "namespace", ""), names, prefix)
        meter = _Meter(progress, "export", lambda: _count(store, names, prefix))
        try:
            entries = _entries(store, names, prefix)
            with _output(target, binary=fmt == "parquet" or gz) as out:
                if gz:
                    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as zout:
                        return write_jsonl(zout, header, entries, meter.advance)
                if fmt == "parquet":
                    return write_parquet(out, header, entries, meter.advance, row_group_size)
                return write_jsonl(out, header, entries, meter.advance)
        finally:
            meter.close()
    finally:
        if opened:
            store.close()


class _output:
    """Context manager giving a writable file: a path goes through a temporary file, renamed at the end."""

    def __init__(self, target: Target, *, binary: bool) -> None:
        self._target = target
        self._binary = binary
        self._tmp: str | None = None
        self._file: Any = None

    def __enter__(self) -> Any:
        target = self._target
        if not isinstance(target, (str, os.PathLike)):
            if self._binary and isinstance(target, io.TextIOBase):
                raise ContextConfigurationError(
                    "gzip and Parquet need a binary file object (open it with 'wb')"
                )
            return target
        path = Path(target)
        try:
            if path.exists() and not path.is_file():  # e.g. /dev/stdout: no rename
                self._file = open(path, "wb")
                return self._file
            tmp = str(path.with_name(f".{path.name}.{os.getpid()}.tmp"))
            self._file = open(tmp, "wb")
        except OSError as exc:
            raise ContextConfigurationError(f"cannot write {path}: {exc.strerror or exc}") from exc
        self._tmp = tmp
        return self._file

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self._file is None:
            return
        try:
            self._file.close()
        finally:
            if self._tmp is not None:
                if exc_type is None:
                    os.replace(self._tmp, os.fspath(self._target))  # type: ignore[arg-type]
                else:
                    os.unlink(self._tmp)


# --------------------------------------------------------------------------- import and copy


class _Writer:
    """Sends entries to a store in ``set_many`` batches, per namespace."""

    def __init__(self, store: Any, mode: Mode, batch_size: int, meter: _Meter, where: str) -> None:
        self._store = store
        self._where = where
        self._mode = mode
        self._batch_size = batch_size
        self._meter = meter
        self._views: dict[str, Any] = {"": store}
        # namespace -> ((key, metadata) pairs, their line numbers)
        self._pending: dict[str, tuple[list[tuple[Key, Metadata]], list[int]]] = {}
        self._size = 0
        self.written = 0
        self.skipped = 0

    def add(self, ns: str, key: Key, value: Metadata, line: int) -> bool:
        """Queue one entry; return True when a batch is full (the caller then calls :meth:`flush`)."""
        group = self._pending.get(ns)
        if group is None:
            group = self._pending[ns] = ([], [])
        group[0].append((key, value))
        group[1].append(line)
        self._size += 1
        return self._size >= self._batch_size

    def view(self, ns: str) -> Any:
        view = self._views.get(ns)
        if view is None:
            view = self._views[ns] = self._store.with_namespace(ns)
        return view

    def flush(self, position: int | None = None) -> None:
        size = self._size
        for ns, (pairs, lines) in self._pending.items():
            view = self.view(ns)
            if self._mode == "skip-existing":
                found = view.get_many([k for k, _ in pairs])
                keep = [i for i, old in enumerate(found) if old is None]
                self.skipped += len(pairs) - len(keep)
                pairs, lines = [pairs[i] for i in keep], [lines[i] for i in keep]
            try:
                view.set_many(pairs)
            except (ContextSerializationError, ContextKeyError, ContextValueError) as exc:
                raise _culprit(view, pairs, lines, exc, self._where) from exc
            self.written += len(pairs)
        self._pending.clear()
        self._size = 0
        if size:
            self._meter.advance(size, position)

    def close(self) -> None:
        for ns, view in self._views.items():
            if ns:
                view.close()


def _culprit(
    view: Any, pairs: list[tuple[Key, Metadata]], lines: list[int], exc: ContextError, where: str
) -> ContextError:
    """The error of a refused batch, naming the first entry the store refuses (checked one by one)."""
    limit = getattr(view, "max_value_size", DEFAULT_MAX_VALUE_SIZE)
    for (key, value), line in zip(pairs, lines):
        try:
            encode_key(key)
            prepare_value(value, limit)
        except ContextError as one:
            return type(one)(f"{where} {line} (key {key!r:.100}), not written: {one}")
    return type(exc)(f"{where}s {lines[0]}-{lines[-1]}, not written: {exc}")


def _check_import_options(mode: str, batch_size: Any) -> None:
    if mode not in _MODES:
        raise ContextConfigurationError(f"mode must be one of {', '.join(_MODES)}; got {mode!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ContextConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")


def _clear(root: Any, names: Iterable[str], prefix: tuple[Any, ...] | None) -> None:
    for ns in names:
        view = _view(root, ns)
        try:
            view.clear(prefix)
        finally:
            if view is not root:
                view.close()


def _finish(store: Any) -> None:
    flush = getattr(store, "flush", None)  # buffered stores: data is in the store when we return
    if callable(flush):
        flush()


def import_store(
    source: Target,
    store: Any,
    *,
    format: Format | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    namespace: str | None = None,
    mode: Mode = "replace",
    clear: bool = False,
    verify: bool | None = None,
    progress: Progress = None,
) -> int:
    """Load a checkpoint into ``store`` (a store or a URL); return the number of entries written.

    Entries go to their namespace (as dumped) under ``namespace`` of ``store``
    (default: ``store``'s own). ``mode``: ``"replace"`` (default) overwrites
    keys that exist, ``"skip-existing"`` keeps them. ``clear``: first delete
    every key of the dumped namespaces (under the dump's prefix) in the target,
    so that it ends up equal to the checkpoint. ``verify``: read the whole file
    once before writing anything (default: only with ``clear``; needs a path
    or a seekable file).
    """
    _check_import_options(mode, batch_size)
    verify = clear if verify is None else verify
    if verify:
        start = _rewindable(source)
        verify_checkpoint(source, format=format)
        if start is not None:
            source.seek(start)  # type: ignore[union-attr]
    target, opened = _open(store)
    try:
        root = _view(target, check_namespace(namespace)) if namespace else target
        try:
            with read_checkpoint(source, format=format) as reader:
                if clear:
                    _clear(root, reader.namespaces, reader.prefix)
                by_bytes = reader.size is not None and reader.format == "jsonl"
                meter = _Meter(
                    progress,
                    "import",
                    (lambda: reader.size) if by_bytes else None,
                    unit="B" if by_bytes else "entries",
                )
                where = f"{reader.name}: {'row' if reader.format == 'parquet' else 'line'}"
                writer = _Writer(root, mode, batch_size, meter, where)
                try:
                    add = writer.add
                    for ns, key, value, line in reader:
                        if add(ns, key, value, line):
                            writer.flush(reader.position)
                    writer.flush(reader.position)
                    _finish(root)
                    return writer.written
                finally:
                    writer.close()
                    meter.close()
        finally:
            if root is not target:
                root.close()
    finally:
        if opened:
            target.close()


def _rewindable(source: Target) -> int | None:
    """Where a file object starts (None for a path); refuse one that cannot be read twice."""
    if isinstance(source, (str, os.PathLike)):
        return None
    if not getattr(source, "seekable", lambda: False)():
        raise ContextConfigurationError(
            "verify/clear read the file twice: give a path or a seekable file, or pass verify=False"
        )
    return int(source.tell())


def copy_store(
    source: Any,
    target: Any,
    *,
    prefix: tuple[Any, ...] | None = None,
    namespaces: Iterable[str] | str | None = None,
    namespace: str | None = None,
    mode: Mode = "replace",
    clear: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress = None,
) -> int:
    """Copy entries from ``source`` to ``target`` (stores or URLs) without a file; return how many.

    Streams ``source.items()`` page by page into ``set_many`` batches.
    ``prefix``/``namespaces`` select as in :func:`export_store`;
    ``namespace``/``mode``/``clear`` act as in :func:`import_store`.
    """
    _check_import_options(mode, batch_size)
    prefix = check_prefix(prefix)
    names = _namespaces(namespaces)
    if clear and (source is target or (isinstance(source, str) and source == target)):
        raise ContextConfigurationError("copy_store with clear=True from a store into itself would delete it")
    src, src_opened = _open(source)
    try:
        dst, dst_opened = _open(target)
        try:
            root = _view(dst, check_namespace(namespace)) if namespace else dst
            meter = _Meter(progress, "copy", lambda: _count(src, names, prefix))
            writer = _Writer(root, mode, batch_size, meter, "copy: entry")
            try:
                if clear:
                    _clear(root, names, prefix)
                add = writer.add
                for i, (ns, key, value) in enumerate(_entries(src, names, prefix), 1):
                    if add(ns, key, value, i):
                        writer.flush()
                writer.flush()
                _finish(root)
                return writer.written
            finally:
                writer.close()
                meter.close()
                if root is not dst:
                    root.close()
        finally:
            if dst_opened:
                dst.close()
    finally:
        if src_opened:
            src.close()
