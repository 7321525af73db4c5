"""``SQLiteContextStore``: a persistent store in one SQLite file, safe across processes.

Open it with ``SQLiteContextStore("ctx.db")`` or ``open_store("sqlite:///ctx.db")``
(``sqlite:////abs/path.db`` for an absolute path, ``sqlite://`` for a private
in-memory database). Only the standard library's :mod:`sqlite3` is used.

Schema (version 2). One key table, by default ``context``::

    CREATE TABLE context (
        k BLOB NOT NULL PRIMARY KEY,  -- namespace tag + keys.encode_key(key)
        v TEXT NOT NULL               -- values.encode_value(metadata): compact JSON, or ''
    ) WITHOUT ROWID;
    CREATE TABLE context_large (      -- a rowid table
        k BLOB NOT NULL PRIMARY KEY,
        v TEXT NOT NULL
    );

The namespace is folded into the key: ``k`` is the namespace path encoded
as one codec string element (``0x02``, UTF-8, ``0x00``; ``keys.encode_namespace``)
followed by the encoded key, so a namespace and every key prefix within it
are contiguous ranges of one single-column primary key (a composite
``(ns, k)`` key made batch writes ~15% slower).

Large values. A ``WITHOUT ROWID`` table is one B-tree of whole records: a
record too long for its page goes on in overflow pages, and SQLite reads all
of it whenever a lookup compares a key with it, so one 256 KiB value slows
down every lookup whose path meets it. A value whose record would not fit in
a page (``_inline_limit``: about 1,000 bytes of key and value with 4 KiB
pages) is therefore kept in the rowid table ``context_large`` (whose key
index holds only keys), and its row in ``context`` holds ``''`` (no JSON
value is empty). Every write keeps the two in step in one transaction: a
``''`` row has exactly one ``context_large`` row and no other key has one.
Reads resolve ``''`` in the same statement, so they see one snapshot.

and a meta table ``context_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)``
holding ``schema_version`` (``2``) and ``key_codec`` (the key codec version).
All three are created, in one transaction, by the first store that opens the file.
Because keys are stored in the codec's byte order, ``scan``/``count``/``clear``
of a key prefix are range scans of the primary key (``keys.prefix_range``).

Versioning and upgrades. A store only uses a file whose ``schema_version`` it
knows. A later version of this library that changes the layout bumps
``SCHEMA_VERSION`` and adds a step to ``_MIGRATIONS`` (old version -> function
that upgrades the file by one version); the steps run inside one
``BEGIN IMMEDIATE`` transaction when an older file is opened, so concurrent
openers never see a half-migrated file. A file written by a *newer* version
(or with an unreadable version, or a table of that name not made by this
library) raises :class:`ContextSchemaError` instead of being guessed at.
Version 1 had no ``context_large``: the step to 2 creates it and moves the
values that do not fit a page there (one pass over the table). Every process
that uses a file must run a version of the library that knows its schema:
an older one refuses a migrated file.

Concurrency model.

* Files use ``journal_mode=WAL`` (readers never block the writer and vice
  versa) and ``synchronous=NORMAL`` by default (durable against process
  crashes; the last transactions may be lost on power failure, use ``FULL``
  if that matters).
* The connection is in autocommit mode: a single ``set``/``get``/``delete``
  is one statement and one implicit transaction. Batches (``set_many``,
  ``delete_many``) and read-modify-write operations (``update``,
  ``increment``) run in one ``BEGIN IMMEDIATE`` transaction, so they are
  atomic across threads *and processes*; a failed batch is rolled back.
  Multi-chunk ``get_many`` reads one consistent snapshot (``BEGIN``).
* Lock contention never surfaces as ``sqlite3.OperationalError``: SQLite's
  busy handler waits up to ``timeout`` seconds, errors it does not cover
  (e.g. ``SQLITE_BUSY_SNAPSHOT``) are retried with jittered backoff until the
  same deadline, and then :class:`ContextStoreBusyError` is raised (the
  driver error is its ``__cause__``). Other driver errors become
  :class:`ContextStoreError`.
* One connection per store is shared by its namespace views and guarded by
  a lock, so a store may be used from several threads.
* Processes: pickling a file store reopens the same file in the receiving process
  (``spawn``/``forkserver`` workers, Dask, Spark...). A store inherited
  through ``fork()`` never touches its parent's connection: the child opens
  its own on first use. Each process should use its own store object; the
  file is the shared state.

An in-memory store (``path=":memory:"``) is private to its store object and its
views. Like ``InMemoryContextStore``, pickling it sends a snapshot of its data
(``Connection.serialize``; before Python 3.11 the copy starts empty), and a
forked child keeps a private copy of the data as it was at fork time.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import repeat
from typing import Any, ClassVar, TypeVar

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
from .exceptions import (
    ContextConfigurationError,
    ContextSchemaError,
    ContextStoreBusyError,
    ContextStoreClosedError,
    ContextStoreError,
)
from .keys import (
    CODEC_VERSION,
    Key,
    decode_key,
    encode_key,
    encode_keys,
    encode_namespace,
    in_key_order,
    namespace_range,
)
from .urls import decode, mask_url, split_url
from .values import (
    DEFAULT_MAX_VALUE_SIZE,
    check_size,
    decode_stored,
    decode_values,
    dumps_json,
    encode_value,
    encode_values,
    prepare_value,
)

__all__ = ["SCHEMA_VERSION", "SQLiteContextStore"]

T = TypeVar("T")

#: Version of the table layout this module writes and reads.
SCHEMA_VERSION = 2

_MEMORY = ":memory:"
_PAGE_SIZE = 1000  # rows per page of scan()/items()
_GET_MANY_CHUNK = 2000  # keys per SELECT ... IN (...) of get_many()
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_JOURNAL_MODES = ("WAL", "DELETE", "TRUNCATE", "PERSIST")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (primary result codes)

_monotonic = time.monotonic


# --------------------------------------------------------------------------- values


_decode = decode_stored


# --------------------------------------------------------------------------- SQL


class _SQL:
    """The statements of one table, built once (sqlite3 caches them by text)."""

    __slots__ = (
        "between",
        "clear",
        "count",
        "delete",
        "delete_small",
        "exists",
        "get",
        "get_text",
        "in_cache",
        "large_clear",
        "large_delete",
        "large_keys",
        "large_upsert",
        "scan",
        "table",
        "upsert",
        "upsert_small",
        "value",
    )

    def __init__(self, table: str) -> None:
        t, large = f'"{table}"', f'"{table}_large"'
        self.table = table
        # The value of row c: its own text, or (for '') the one kept in the large table.
        v = f"CASE WHEN c.v <> '' THEN c.v ELSE coalesce((SELECT l.v FROM {large} l WHERE l.k = c.k), '') END"
        self.upsert = (
            f"INSERT INTO {t} (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        )
        # Leaves a large value's row alone (rowcount 0): the caller then replaces both rows.
        self.upsert_small = self.upsert + " WHERE v <> ''"
        self.get = f"SELECT {v} FROM {t} c WHERE c.k = ?"
        self.get_text = f"SELECT v FROM {t} WHERE k = ?"  # '' for a large value
        self.exists = f"SELECT 1 FROM {t} WHERE k = ?"
        self.between = f"SELECT c.k, {v} FROM {t} c WHERE c.k >= ? AND c.k <= ? LIMIT ?"
        self.delete = f"DELETE FROM {t} WHERE k = ?"
        self.delete_small = f"DELETE FROM {t} WHERE k = ? AND v <> ''"
        self.count = f"SELECT count(*) FROM {t} WHERE k >= ? AND k < ?"
        self.clear = f"DELETE FROM {t} WHERE k >= ? AND k < ?"
        self.large_upsert = (
            f"INSERT INTO {large} (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        )
        self.large_keys = f"SELECT k FROM {large} WHERE k >= ? AND k <= ?"
        self.large_delete = f"DELETE FROM {large} WHERE k = ?"
        self.large_clear = f"DELETE FROM {large} WHERE k >= ? AND k < ?"
        # scan[(columns, first_page)]: keyset pagination in key order.
        self.scan: dict[tuple[str, bool], str] = {}
        for cols in ("k", "k, v"):
            for first in (True, False):
                self.scan[cols, first] = (
                    f"SELECT {'c.k' if cols == 'k' else 'c.k, ' + v} FROM {t} c "
                    f"WHERE c.k {'>=' if first else '>'} ? AND c.k < ? ORDER BY c.k LIMIT ?"
                )
        self.in_cache: dict[int, str] = {}
        self.value = v

    def select_in(self, n: int) -> str:
        sql = self.in_cache.get(n)
        if sql is None:
            sql = f'SELECT c.k, {self.value} FROM "{self.table}" c WHERE c.k IN ({",".join("?" * n)})'
            self.in_cache[n] = sql
        return sql


# --------------------------------------------------------------------------- connections


def _is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` means "locked by someone else, try again later"."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _open_connection(
    path: str, table: str, timeout: float, synchronous: str, journal_mode: str
) -> tuple[sqlite3.Connection, sqlite3.Cursor]:
    """Connect, set the pragmas and make sure the schema is there and known."""
    conn = sqlite3.connect(
        path,
        timeout=timeout,
        isolation_level=None,  # autocommit: we issue BEGIN/COMMIT ourselves
        check_same_thread=False,  # guarded by the store's lock instead
        cached_statements=256,
    )
    try:
        cur = conn.cursor()
        if path != _MEMORY:
            cur.execute(f"PRAGMA journal_mode = {journal_mode}").fetchall()
        cur.execute(f"PRAGMA synchronous = {synchronous}")
        _ensure_schema(conn, cur, table, path)
    except BaseException:
        conn.close()
        raise
    return conn, cur


def _schema_state(cur: sqlite3.Cursor, table: str) -> tuple[bool, str | None]:
    """(key table exists, schema_version text or None when there is no meta table)."""
    names = {
        row[0]
        for row in cur.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)",
            (table, f"{table}_meta"),
        )
    }
    version: str | None = None
    if f"{table}_meta" in names:
        row = cur.execute(f'SELECT value FROM "{table}_meta" WHERE key = ?', ("schema_version",)).fetchone()
        version = "" if row is None else str(row[0])
    return table in names, version


def _ensure_schema(conn: sqlite3.Connection, cur: sqlite3.Cursor, table: str, path: str) -> None:
    has_table, version = _schema_state(cur, table)
    if has_table and version == str(SCHEMA_VERSION):
        _check_columns(cur, table, path)
        return  # the common case: no write needed (works on read-only files too)
    cur.execute("BEGIN IMMEDIATE")
    try:
        has_table, version = _schema_state(cur, table)  # again, now that we hold the lock
        if version is None:
            if has_table:
                raise ContextSchemaError(
                    f"table {table!r} in {path} was not created by context-framework "
                    "(it has no meta table); use another table= name or another file"
                )
            cur.execute(
                f'CREATE TABLE "{table}" (k BLOB NOT NULL PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID'
            )
            _create_large_table(cur, table, path)
            cur.execute(f'CREATE TABLE "{table}_meta" (key TEXT PRIMARY KEY, value TEXT NOT NULL)')
            cur.executemany(
                f'INSERT INTO "{table}_meta" (key, value) VALUES (?, ?)',
                [("schema_version", str(SCHEMA_VERSION)), ("key_codec", str(CODEC_VERSION))],
            )
        else:
            number = _parse_version(version, table, path)
            while number < SCHEMA_VERSION:
                _MIGRATIONS[number](cur, table, path)
                number += 1
                cur.execute(
                    f'UPDATE "{table}_meta" SET value = ? WHERE key = ?',
                    (str(number), "schema_version"),
                )
        cur.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    _check_columns(cur, table, path)


def _parse_version(version: str, table: str, path: str) -> int:
    try:
        number = int(version)
    except ValueError:
        number = -1
    if (
        number > SCHEMA_VERSION
        or number < 1
        or (number < SCHEMA_VERSION and any(n not in _MIGRATIONS for n in range(number, SCHEMA_VERSION)))
    ):
        raise ContextSchemaError(
            f"table {table!r} in {path} has schema_version {version!r}, but this version of "
            f"context-framework only understands schema_version {SCHEMA_VERSION}; "
            "upgrade context-framework to open it"
        )
    return number


def _check_columns(cur: sqlite3.Cursor, table: str, path: str) -> None:
    for name in (table, f"{table}_large"):
        columns = [row[1] for row in cur.execute(f'PRAGMA table_info("{name}")')]
        if columns != ["k", "v"]:
            raise ContextSchemaError(
                f"table {name!r} in {path} has columns {columns}, not the expected ['k', 'v']"
            )


def _create_large_table(cur: sqlite3.Cursor, table: str, path: str) -> None:
    """The rowid table of large values (see the module docstring)."""
    name = f"{table}_large"
    if cur.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone():
        raise ContextSchemaError(
            f"table {name!r} in {path} was not created by context-framework; "
            "use another table= name or another file"
        )
    cur.execute(f'CREATE TABLE "{name}" (k BLOB NOT NULL PRIMARY KEY, v TEXT NOT NULL)')


def _inline_limit(cur: Any) -> int:
    """Bytes of key and value that fit in one record of a page of the key table.

    SQLite keeps up to ``(usable - 12) * 64 // 255 - 23`` bytes of an index
    B-tree record in its page (1,002 with 4 KiB pages); the record header
    takes up to 8 of them.
    """
    page_size = int(cur.execute("PRAGMA page_size").fetchone()[0])
    return (page_size - 12) * 64 // 255 - 23 - 8


def _migrate_1_to_2(cur: sqlite3.Cursor, table: str, path: str) -> None:
    """Version 2 keeps the values that do not fit a page in ``<table>_large``."""
    _create_large_table(cur, table, path)
    too_long = "length(k) + length(CAST(v AS BLOB)) > ?"
    limit = (_inline_limit(cur),)
    cur.execute(f'INSERT INTO "{table}_large" (k, v) SELECT k, v FROM "{table}" WHERE {too_long}', limit)
    cur.execute(f"""UPDATE "{table}" SET v = '' WHERE {too_long}""", limit)


#: old version -> function(cursor, table, path) upgrading the file to old version + 1.
_MIGRATIONS: dict[int, Callable[[sqlite3.Cursor, str, str], None]] = {1: _migrate_1_to_2}


def _max_variables(conn: sqlite3.Connection) -> int:
    getlimit = getattr(conn, "getlimit", None)  # Python >= 3.11
    if getlimit is None:
        return 999
    return int(getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


class _ClosedCursor:
    """Stands in for the cursor of a closed store: every use raises."""

    __slots__ = ("_what",)

    def __init__(self, what: str) -> None:
        self._what = what

    def _raise(self, *args: Any, **kwargs: Any) -> Any:
        raise ContextStoreClosedError(f"{self._what} is closed; open a new store to continue")

    execute = executemany = fetchone = fetchall = _raise


class _ReopenAfterFork:
    """Stands in for a cursor inherited through ``fork()``: opens a new connection on first use.

    SQLite connections must not be used (or closed) in a forked child; the
    inherited one is kept alive, untouched, in ``_inherited``.
    """

    def __init__(self, args: tuple[str, str, float, str, str]) -> None:
        self._args = args
        self._cursor: sqlite3.Cursor | None = None

    def _open(self) -> sqlite3.Cursor:
        if self._cursor is None:
            conn, cursor = _open_connection(*self._args)
            self._cursor = cursor
            for store in list(_instances):
                if store.__dict__.get("_cur") is self:
                    store._conn = conn
                    store._cur = cursor
        return self._cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._open(), name)


_instances: weakref.WeakSet[SQLiteContextStore] = weakref.WeakSet()
_inherited: list[Any] = []


def _after_fork_in_child() -> None:
    groups: dict[int, tuple[threading.Lock, Any, Any]] = {}
    for store in list(_instances):
        cur = store.__dict__.get("_cur")
        if cur is None or isinstance(cur, _ClosedCursor):
            continue
        group = groups.get(id(store._lock))  # a store and its views share one lock
        if group is None:
            if store._path == _MEMORY or isinstance(cur, _ReopenAfterFork):
                group = (threading.Lock(), cur, store._conn)  # private memory / nothing open
            else:
                _inherited.append((store._conn, cur))
                group = (threading.Lock(), _ReopenAfterFork(store._open_args()), None)
            groups[id(store._lock)] = group
        store._lock, store._cur, store._conn = group


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------- the store


class SQLiteContextStore(BaseContextStore):
    """A store in one SQLite file (or ``":memory:"``), safe for threads and processes.

    ``timeout``: seconds to wait for a lock held by another connection before
    raising :class:`ContextStoreBusyError`. ``synchronous``: SQLite's
    ``PRAGMA synchronous`` (``OFF``/``NORMAL``/``FULL``/``EXTRA``).
    ``journal_mode``: ``WAL`` (default) or a rollback journal mode for
    filesystems without shared memory (network shares). ``table``: name of the
    data table (the meta table is ``<table>_meta``), to keep several stores
    in one file.
    """

    scheme = "sqlite"
    url_options: ClassVar[dict[str, type]] = {
        "timeout": float,
        "synchronous": str,
        "journal_mode": str,
        "table": str,
    }

    def __init__(
        self,
        path: str | os.PathLike[str] = _MEMORY,
        *,
        namespace: str = "",
        max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE,
        timeout: float = 30.0,
        synchronous: str = "NORMAL",
        journal_mode: str = "WAL",
        table: str = "context",
    ) -> None:
        super().__init__(namespace=namespace, max_value_size=max_value_size)
        _check_namespace_text(self._namespace)
        self._nsp = encode_namespace(self._namespace)
        self._path = _check_path(path)
        self._timeout = _check_timeout(timeout)
        self._synchronous = _check_choice("synchronous", synchronous, _SYNCHRONOUS)
        self._journal_mode = _check_choice("journal_mode", journal_mode, _JOURNAL_MODES)
        if (
            not isinstance(table, str)
            or not _TABLE_NAME.fullmatch(table)
            or (table.lower().startswith("sqlite_"))
        ):
            raise ContextConfigurationError(
                f"table must be a plain SQL identifier (letters, digits, _), got {table!r}"
            )
        self._sql = _SQL(table)
        self._conn: sqlite3.Connection | None = None
        self._cur: Any = None
        conn, self._cur = self._run("open", lambda _cur: _open_connection(*self._open_args()))
        self._conn = conn
        self._chunk = max(1, min(_GET_MANY_CHUNK, _max_variables(conn) - 1))
        self._inline = self._run("open", _inline_limit)
        _instances.add(self)

    def _open_args(self) -> tuple[str, str, float, str, str]:
        return self._path, self._sql.table, self._timeout, self._synchronous, self._journal_mode

    # ------------------------------------------------------------------ running statements

    def _run(self, op: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(cursor)`` under the lock, retrying while the database is busy."""
        start = _monotonic()
        try:
            lock = self._lock
            lock.acquire()
            try:
                return fn(self._cur)
            finally:
                lock.release()
        except sqlite3.Error as exc:
            return self._retry(op, fn, exc, start)

    def _retry(self, op: str, fn: Callable[[Any], T], exc: sqlite3.Error, start: float) -> T:
        """Slow path of every operation: ``exc`` came from the first attempt at ``fn``."""
        deadline = start + self._timeout
        delay = 0.001
        while True:
            if not _is_busy(exc):
                raise self._driver_error(op, exc) from exc
            now = _monotonic()
            if now >= deadline:
                raise ContextStoreBusyError(
                    f"SQLite database {self._where()} stayed locked for more than "
                    f"{self._timeout:g}s during {op}: another connection holds a long write "
                    "transaction; retry later, shorten it, or open the store with a larger "
                    f"timeout ({exc})"
                ) from exc
            time.sleep(min(delay * random.uniform(0.5, 1.5), deadline - now))
            delay = min(delay * 2, 0.05)
            try:
                lock = self._lock
                lock.acquire()
                try:
                    return fn(self._cur)
                finally:
                    lock.release()
            except sqlite3.Error as again:
                exc = again

    def _driver_error(self, op: str, exc: sqlite3.Error) -> ContextStoreError:
        if self._closed or (isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc).lower()):
            return ContextStoreClosedError(f"{self!r} is closed; open a new store to continue")
        hint = _open_hint(self._path) if op == "open" and "unable to open" in str(exc) else ""
        return ContextStoreError(f"{self!r}: {op} failed: {type(exc).__name__}: {exc}{hint}")

    def _transaction(self, op: str, body: Callable[[Any], T], begin: str = "BEGIN IMMEDIATE") -> T:
        """Run ``body(cursor)`` in one transaction; roll back on any failure."""

        def fn(cur: Any) -> T:
            cur.execute(begin)
            try:
                result = body(cur)
                cur.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            return result

        return self._run(op, fn)

    def _rollback(self) -> None:
        conn = self._conn
        if conn is not None:
            try:
                if conn.in_transaction:
                    conn.rollback()
            except sqlite3.Error:
                pass  # the transaction is gone either way (SQLite rolls back on close)

    # ------------------------------------------------------------------ core

    def set(self, key: Key, value: Mapping[str, Any]) -> None:
        """Store ``value`` under ``key``: one statement, one implicit transaction.

        A large value (see the module docstring), or one that replaces a large
        value, takes two rows in one transaction instead.
        """
        k = self._nsp + encode_key(key)
        text = encode_value(value, self.max_value_size)
        if 4 * len(text) + len(k) > self._inline and self._is_large(k, text):
            self._transaction("set", lambda cur: self._put(cur, k, text))
            return
        args = (k, text)
        start = _monotonic()
        try:
            lock = self._lock
            lock.acquire()
            try:
                changed = self._cur.execute(self._sql.upsert_small, args).rowcount
            finally:
                lock.release()
        except sqlite3.Error as exc:
            sql = self._sql.upsert_small
            changed = self._retry("set", lambda cur: cur.execute(sql, args).rowcount, exc, start)
        if not changed:  # the key held a large value
            self._transaction("set", lambda cur: self._put(cur, k, text))

    def get(self, key: Key, default: Any = None) -> Metadata | None:
        args = (self._nsp + encode_key(key),)
        start = _monotonic()
        try:
            lock = self._lock
            lock.acquire()
            try:
                row = self._cur.execute(self._sql.get_text, args).fetchone()
            finally:
                lock.release()
        except sqlite3.Error as exc:
            sql = self._sql.get_text
            row = self._retry("get", lambda cur: cur.execute(sql, args).fetchone(), exc, start)
        if row is None:
            return default  # type: ignore[no-any-return]
        if not row[0]:  # a large value: read again with its large-table row, in one statement
            sql = self._sql.get
            row = self._run("get", lambda cur: cur.execute(sql, args).fetchone())
            if row is None:
                return default  # type: ignore[no-any-return]
        return _decode(row[0])

    def delete(self, key: Key) -> bool:
        args = (self._nsp + encode_key(key),)
        sql = self._sql

        def small_or_absent(cur: Any) -> bool | None:
            if cur.execute(sql.delete_small, args).rowcount:
                return True
            return False if cur.execute(sql.exists, args).fetchone() is None else None

        done = self._run("delete", small_or_absent)
        if done is not None:
            return done
        # A large value (or one written since): both rows, in one transaction.
        return self._transaction("delete", lambda cur: self._delete_all(cur, [args[0]])) > 0

    def exists(self, key: Key) -> bool:
        args = (self._nsp + encode_key(key),)
        sql = self._sql.exists
        return self._run("exists", lambda cur: cur.execute(sql, args).fetchone()) is not None

    def scan(self, prefix: tuple[Any, ...] | None = None) -> Iterator[Key]:
        """Yield the keys under ``prefix`` in encoded-key order, a page at a time."""
        n = len(self._nsp)
        return (decode_key(row[0][n:]) for row in self._pages("scan", "k", prefix))

    def items(self, prefix: tuple[Any, ...] | None = None) -> Iterator[tuple[Key, Metadata]]:
        """Yield ``(key, metadata)`` under ``prefix`` in encoded-key order, a page at a time."""
        n = len(self._nsp)
        return ((decode_key(k[n:]), _decode(v)) for k, v in self._pages("items", "k, v", prefix))

    def _range(self, prefix: Any) -> tuple[bytes, bytes]:
        """The key range ``[low, high)`` of ``prefix`` within this store's namespace."""
        return namespace_range(self._nsp, check_prefix(prefix))

    def _pages(self, op: str, cols: str, prefix: Any) -> Iterator[Any]:
        """Rows of a prefix range, fetched by keyset pagination (no long read transaction).

        The first page is fetched before this returns, so a closed store or a
        driver error surfaces at the call.
        """
        low, high = self._range(prefix)
        first_sql = self._sql.scan[cols, True]
        next_sql = self._sql.scan[cols, False]
        rows = self._fetchall(op, first_sql, (low, high, _PAGE_SIZE))

        def generate(rows: list[Any]) -> Iterator[Any]:
            while True:
                yield from rows
                if len(rows) < _PAGE_SIZE:
                    return
                rows = self._fetchall(op, next_sql, (rows[-1][0], high, _PAGE_SIZE))

        return generate(rows)

    def _fetchall(self, op: str, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self._run(op, lambda cur: cur.execute(sql, params).fetchall())

    def count(self, prefix: tuple[Any, ...] | None = None) -> int:
        args = self._range(prefix)
        sql = self._sql.count
        return int(self._run("count", lambda cur: cur.execute(sql, args).fetchone()[0]))

    def clear(self, prefix: tuple[Any, ...] | None = None) -> int:
        args = self._range(prefix)
        sql = self._sql

        def body(cur: Any) -> int:
            removed = int(cur.execute(sql.clear, args).rowcount)
            cur.execute(sql.large_clear, args)
            return removed

        return self._transaction("clear", body)

    # ------------------------------------------------------------------ batches

    def set_many(
        self, items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]]
    ) -> None:
        """Store many entries in one transaction; nothing is written if any item is invalid."""
        pairs = list(iter_pairs(items))
        if not pairs:
            self._check_open()
            return
        limit = self.max_value_size
        with gc_paused():  # builds only acyclic objects
            keys = encode_keys([k for k, _ in pairs], self._nsp)
            texts = encode_values([v for _, v in pairs], limit)
            keys, texts = in_key_order(keys, texts)  # a B-tree takes keys in order faster
        if 4 * max(map(len, texts)) + max(map(len, keys)) > self._inline and any(
            map(self._is_large, keys, texts)
        ):
            last = dict(zip(keys, texts))  # the last value of a key wins
            self._transaction("set_many", lambda cur: self._put_many(cur, last))
            return
        self._transaction("set_many", lambda cur: self._put_small(cur, keys, texts))

    def get_many(self, keys: Iterable[Key]) -> list[Metadata | None]:
        """Metadata of each key in input order (``None`` if absent); duplicates allowed.

        The distinct keys are sorted and read in chunks. A chunk is first read as
        one key range (``k BETWEEN first AND last``), which is much faster than
        ``k IN (...)`` when the requested keys are most of the keys in that range
        (reading back what was written); the range read stops after twice the
        chunk's size, and a chunk that hits that limit (a sparse request) and all
        later chunks use ``k IN (...)`` instead.
        """
        with gc_paused():  # builds only acyclic objects
            return self._get_many(encode_keys(keys, self._nsp))

    def _get_many(self, encoded: list[bytes]) -> list[Metadata | None]:
        if not encoded:
            self._check_open()
            return []
        wanted = sorted(dict.fromkeys(encoded))  # bytes order == SQLite BLOB order
        chunk, sql = self._chunk, self._sql

        def body(cur: Any) -> dict[bytes, str]:
            found: dict[bytes, str] = {}
            dense = True
            for i in range(0, len(wanted), chunk):
                part = wanted[i : i + chunk]
                if dense:
                    limit = 2 * len(part)
                    rows = cur.execute(sql.between, (part[0], part[-1], limit)).fetchall()
                    if len(rows) < limit:
                        found.update(rows)  # may hold keys not asked for; harmless
                        continue
                    dense = False
                # Pad to a power of two (repeating a key) so few distinct statements are cached.
                size = min(chunk, 1 << (len(part) - 1).bit_length())
                params = (*part, *repeat(part[-1], size - len(part)))
                found.update(cur.execute(sql.select_in(size), params).fetchall())
            return found

        if len(wanted) <= chunk:
            found = self._run("get_many", body)
        else:
            found = self._transaction("get_many", body, "BEGIN")  # one consistent snapshot
        get = found.get
        try:
            return decode_values([get(k) for k in encoded])
        except (TypeError, ValueError) as exc:
            raise ContextStoreError(f"a stored value in {self!r} is not valid JSON ({exc})") from exc

    def delete_many(self, keys: Iterable[Key]) -> int:
        """Delete many keys in one transaction; return how many existed."""
        encoded = encode_keys(keys, self._nsp)
        if not encoded:
            self._check_open()
            return 0
        encoded.sort()  # a B-tree takes keys in order faster
        return self._transaction("delete_many", lambda cur: self._delete_all(cur, encoded))

    # ------------------------------------------------------------------ atomic read-modify-write

    def update(self, key: Key, patch: Mapping[str, Any]) -> Metadata:
        """Shallow-merge ``patch`` into ``key`` (created if absent), atomically across processes."""
        patch = prepare_value(patch, self.max_value_size)
        args = (self._nsp + encode_key(key),)
        sql = self._sql

        def body(cur: Any) -> Metadata:
            row = cur.execute(sql.get, args).fetchone()
            merged = patch if row is None else {**_decode(row[0]), **patch}
            text = dumps_json(merged)
            check_size(text, self.max_value_size)
            self._put(cur, args[0], text)
            return merged

        return self._transaction("update", body)

    def increment(self, key: Key, field: str, by: Number = 1) -> Number:
        """Add ``by`` to ``field`` (0 if absent), atomically across processes; return the result."""
        check_increment(field, by)
        args = (self._nsp + encode_key(key),)
        sql = self._sql

        def body(cur: Any) -> Number:
            row = cur.execute(sql.get, args).fetchone()
            new = apply_increment(None if row is None else _decode(row[0]), key, field, by)
            increment_result(new, key, field)
            self._put(cur, args[0], encode_value(new, self.max_value_size))
            return new[field]  # type: ignore[no-any-return]

        return self._transaction("increment", body)

    # ------------------------------------------------------------------ large values

    def _is_large(self, k: bytes, text: str) -> bool:
        """Whether the record ``(k, text)`` would not fit in a page of the key table."""
        room = self._inline - len(k)
        return len(text) > room or (not text.isascii() and len(text.encode("utf-8")) > room)

    def _put(self, cur: Any, k: bytes, text: str) -> None:
        """Write one value in the current transaction, in whichever table it belongs."""
        sql = self._sql
        if self._is_large(k, text):
            cur.execute(sql.large_upsert, (k, text))
            cur.execute(sql.upsert, (k, ""))
        elif not cur.execute(sql.upsert_small, (k, text)).rowcount:  # it was a large value
            cur.execute(sql.large_delete, (k,))
            cur.execute(sql.upsert, (k, text))

    def _put_small(self, cur: Any, keys: list[bytes], texts: list[str]) -> None:
        """Write values that all fit their pages, in the current transaction."""
        sql = self._sql
        # zip() (made anew on each attempt) yields the rows without keeping 3-tuples alive.
        written = cur.executemany(sql.upsert_small, zip(keys, texts)).rowcount
        if written < len(keys):  # some keys held large values: they were left alone
            large = self._drop_large(cur, keys)
            last = dict(zip(keys, texts))
            cur.executemany(sql.upsert, [(k, last[k]) for k in large])

    def _put_many(self, cur: Any, last: dict[bytes, str]) -> None:
        """Write the value of each key (some large), in the current transaction."""
        large = [(k, t) for k, t in last.items() if self._is_large(k, t)]
        cur.executemany(self._sql.large_upsert, large)
        cur.executemany(self._sql.upsert, [(k, "") for k, _ in large])
        small = [(k, t) for k, t in last.items() if not self._is_large(k, t)]
        if small:
            self._put_small(cur, [k for k, _ in small], [t for _, t in small])

    def _drop_large(self, cur: Any, keys: list[bytes]) -> list[bytes]:
        """Delete the large-table rows of ``keys``; return those keys (one scan of their key range)."""
        stored = {row[0] for row in cur.execute(self._sql.large_keys, (min(keys), max(keys)))}
        found = [k for k in dict.fromkeys(keys) if k in stored] if stored else []
        if found:
            cur.executemany(self._sql.large_delete, zip(found))
        return found

    def _delete_all(self, cur: Any, keys: list[bytes]) -> int:
        """Delete ``keys`` from both tables in the current transaction; return how many existed."""
        deleted = int(cur.executemany(self._sql.delete, zip(keys)).rowcount)
        self._drop_large(cur, keys)
        return deleted

    # ------------------------------------------------------------------ lifecycle

    def _bind_namespace(self) -> None:
        _check_namespace_text(self._namespace)
        self._nsp = encode_namespace(self._namespace)
        _instances.add(self)  # views share the connection, the lock and the cursor

    def _mark_closed(self) -> None:
        super()._mark_closed()
        self._cur = _ClosedCursor(repr(self))

    def _close_backend(self) -> None:
        lock = self._lock
        with lock:
            conn, self._conn = self._conn, None
            self._cur = _ClosedCursor(f"{self!r} (closed)")
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error as exc:
                    raise ContextStoreError(f"{self!r}: close failed: {exc}") from exc

    def _config(self) -> dict[str, Any]:
        """Constructor arguments that reopen this store (used by pickling)."""
        return {
            "path": self._path,
            "max_value_size": self.max_value_size,
            "timeout": self._timeout,
            "synchronous": self._synchronous,
            "journal_mode": self._journal_mode,
            "table": self._sql.table,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        """A file store pickles by configuration (the copy opens the same file).

        An in-memory store pickles as a snapshot of its database (like
        ``InMemoryContextStore``); before Python 3.11 (no
        ``Connection.serialize``) the copy starts empty.
        """
        if self._path != _MEMORY:
            return super().__reduce__()
        data = b""
        conn = self._conn
        if not self._closed and conn is not None and hasattr(conn, "serialize"):
            data = self._run("pickle", lambda cur: conn.serialize())
        return (_restore_memory, (type(self), self._config(), self._namespace, data))

    # ------------------------------------------------------------------ URLs and repr

    @classmethod
    def _parse_url(cls, base: str) -> dict[str, Any]:
        """``sqlite://`` or ``sqlite:///:memory:`` (memory), ``sqlite:///rel.db``, ``sqlite:////abs.db``."""
        parts = split_url(base)
        if parts.scheme != "sqlite":
            raise ContextConfigurationError(f"not a sqlite:// URL: {mask_url(base)!r}")
        if parts.at or parts.hosts:
            raise ContextConfigurationError(
                f"a SQLite URL has no host: write sqlite:///relative/path.db or "
                f"sqlite:////absolute/path.db, got {mask_url(base)!r}"
            )
        return {"path": decode(parts.path, "path", base) or _MEMORY}

    @property
    def path(self) -> str:
        """The absolute path of the database file, or ``":memory:"``."""
        return self._path

    def _where(self) -> str:
        return "in-memory database" if self._path == _MEMORY else self._path

    def _describe(self) -> str:
        return f"sqlite:///{self._path}"


def _restore_memory(
    cls: type[SQLiteContextStore], config: dict[str, Any], namespace: str, data: bytes
) -> SQLiteContextStore:
    store = cls(**config, namespace=namespace)
    conn = store._conn
    if data and conn is not None:
        conn.deserialize(data)
        _ensure_schema(conn, store._cur, store._sql.table, _MEMORY)
    return store


def _check_path(path: Any) -> str:
    try:
        text = os.fspath(path)
    except TypeError:
        raise ContextConfigurationError(
            f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}"
        ) from None
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text in ("", _MEMORY):
        return _MEMORY
    if text.startswith("file:"):
        raise ContextConfigurationError(
            f"SQLite URI filenames are not supported, give a plain path: {text!r}"
        )
    return os.path.abspath(text)


def _open_hint(path: str) -> str:
    """Why SQLite cannot open the file ``path``, when the file system tells."""
    if path == _MEMORY:
        return ""
    if os.path.isdir(path):
        return f": '{path}' is a folder, not a database file"
    folder = os.path.dirname(path)
    if not os.path.exists(folder):
        return f": the folder '{folder}' does not exist"
    if not os.path.isdir(folder):
        return f": '{folder}' is a file, not a folder"
    if not os.path.exists(path) and not os.access(folder, os.W_OK | os.X_OK):
        return f": the folder '{folder}' is not writable, so the database file cannot be created"
    return ""


def _check_namespace_text(namespace: str) -> None:
    try:
        namespace.encode("utf-8")
    except UnicodeEncodeError:
        raise ContextConfigurationError(
            f"namespace {namespace!r} is not valid Unicode (lone surrogate)"
        ) from None


def _check_timeout(timeout: Any) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not (0 <= timeout < float("inf"))
    ):
        raise ContextConfigurationError(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")
    return float(timeout)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    text = value.upper() if isinstance(value, str) else value
    if text not in choices:
        raise ContextConfigurationError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return str(text)
