"""Raw ``sqlite3`` baselines for :class:`~context_framework.sqlite_store.SQLiteContextStore`.

The spec's work written by hand against :mod:`sqlite3` with the store's
guarantees: the same table layout (``kv (k BLOB NOT NULL PRIMARY KEY, v TEXT
NOT NULL) WITHOUT ROWID``), the same pragmas (``journal_mode=WAL``, the same
``synchronous``), autocommit (a write is one statement and one implicit
transaction, as ``set``), one cursor whose statements :mod:`sqlite3` prepares
once and reuses; ``repr(key)`` in UTF-8 as the key, compact JSON values, and
the key checks of :mod:`.baselines`.

* :func:`raw_sqlite_per_call`: the spec's loop through :class:`RawSQLite`.
* :func:`raw_sqlite_batch`: ``n`` upserts with one ``executemany`` in one
  ``BEGIN IMMEDIATE`` transaction, then reads by ``SELECT ... WHERE k IN
  (...)`` in batches of 500, realigned to the input order (what
  ``get_many`` returns).
* :func:`raw_sqlite_buffered`: the spec's loop through a
  :class:`~.baselines.HandBuffer` over :class:`RawSQLite` (one
  ``executemany`` transaction every 1,000 writes), final flush timed.

Each reads back what it wrote and removes its file. Run ``python -m
context_framework.bench.sqlite_baseline [n] [batch_n] [repeat]`` to compare
the per-call and batch ones with the store in one run (medians of
interleaved runs).
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Any

from .baselines import HandBuffer, KeyCheck, RawClient, check_read_back, dumps, hand_buffer_note, loads
from .modes import batch_loop, spec_loop

__all__ = [
    "NOTES",
    "RawSQLite",
    "ours_batch",
    "ours_per_call",
    "raw_sqlite_batch",
    "raw_sqlite_buffered",
    "raw_sqlite_per_call",
]

Timing = tuple[float, float]

_UPSERT = "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v"
_GET = "SELECT v FROM kv WHERE k = ?"
_READ_BATCH = 500

#: What ``ctx bench``'s footnote says of each row: per-call (and batch), buffered.
NOTES = {
    "raw": (
        "sqlite3 with our file layout (k BLOB NOT NULL PRIMARY KEY, v TEXT NOT NULL, WITHOUT ROWID), "
        "journal_mode=WAL, synchronous=NORMAL, autocommit (each write one implicit transaction, as ours), "
        "one cursor whose statements are prepared once and reused; one upsert per add, one SELECT per "
        "get. Batch: one executemany in one transaction, reads by IN (...) of 500 keys."
    ),
    "buffered": hand_buffer_note("raw sqlite3", "one executemany in one transaction"),
}


def _remove(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def _connect(path: str, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A new file with the store's layout and pragmas, in autocommit mode."""
    _remove(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE kv (k BLOB NOT NULL PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID")
    return conn


class RawSQLite(RawClient):
    """The spec's API over one autocommit :mod:`sqlite3` connection (see the module docstring)."""

    def __init__(self, df: Any, conn: sqlite3.Connection) -> None:
        super().__init__(df)
        self._conn = conn
        self._cur = conn.cursor()
        self._execute = self._cur.execute

    def add_context(self, key: Any, metadata: dict[str, Any]) -> None:
        self._check(key)
        self._execute(_UPSERT, (repr(key).encode(), dumps(metadata)))

    def get_context(self, key: Any) -> dict[str, Any] | None:
        self._check(key)
        row = self._execute(_GET, (repr(key).encode(),)).fetchone()
        return None if row is None else loads(row[0])  # type: ignore[no-any-return]

    def write_many(self, pairs: list[tuple[str, str]]) -> None:
        """One ``executemany`` in one transaction."""
        self._execute("BEGIN IMMEDIATE")
        try:
            self._cur.executemany(_UPSERT, [(k.encode(), v) for k, v in pairs])
            self._execute("COMMIT")
        except BaseException:
            self._conn.rollback()
            raise


def _run(path: str, synchronous: str, body: Any) -> Timing:
    conn = _connect(path, synchronous)
    try:
        return body(conn)  # type: ignore[no-any-return]
    finally:
        conn.close()
        _remove(path)


def raw_sqlite_per_call(path: str, df: Any, n: int, synchronous: str = "NORMAL") -> Timing:
    """The spec's loop of ``n`` adds and gets on :class:`RawSQLite`: ``(add_seconds, get_seconds)``."""

    def body(conn: sqlite3.Connection) -> Timing:
        client = RawSQLite(df, conn)
        timing = spec_loop(client, n)
        check_read_back(client, n, "raw sqlite3")
        return timing

    return _run(path, synchronous, body)


def raw_sqlite_buffered(path: str, df: Any, n: int, synchronous: str = "NORMAL") -> Timing:
    """The spec's loop through a :class:`~.baselines.HandBuffer` over :class:`RawSQLite`."""

    def body(conn: sqlite3.Connection) -> Timing:
        client = RawSQLite(df, conn)
        timing = spec_loop(HandBuffer(df, client), n, flush=True)
        check_read_back(client, n, "hand-written buffer (sqlite3)")
        return timing

    return _run(path, synchronous, body)


def raw_sqlite_batch(path: str, df: Any, n: int, synchronous: str = "NORMAL") -> Timing:
    """One-transaction ``executemany`` of ``n`` upserts, then ``IN`` reads of 500 keys.

    Returns ``(write_seconds, read_seconds)``. Checking the keys and building
    the rows are timed, as they are for the store.
    """

    def body(conn: sqlite3.Connection) -> Timing:
        check = KeyCheck(df).check
        cur = conn.cursor()
        start = time.perf_counter()
        rows = []
        for i in range(n):
            key = ("row", i)
            check(key)
            rows.append((repr(key).encode(), dumps({"meta": f"value_{i}"})))
        cur.execute("BEGIN IMMEDIATE")
        cur.executemany(_UPSERT, rows)
        cur.execute("COMMIT")
        mid = time.perf_counter()
        keys = []
        for i in range(n):
            key = ("row", i)
            check(key)
            keys.append(repr(key).encode())
        found: dict[bytes, Any] = {}
        for i in range(0, n, _READ_BATCH):
            chunk = keys[i : i + _READ_BATCH]
            sql = f"SELECT k, v FROM kv WHERE k IN ({','.join('?' * len(chunk))})"
            for k, v in cur.execute(sql, chunk):
                found[k] = loads(v)
        values = [found.get(k) for k in keys]
        end = time.perf_counter()
        if values != [{"meta": f"value_{i}"} for i in range(n)]:
            raise AssertionError("raw sqlite3 batch baseline read back the wrong value")
        return mid - start, end - mid

    return _run(path, synchronous, body)


def ours_per_call(path: str, df: Any, n: int, synchronous: str = "NORMAL") -> Timing:
    """The spec's loop through ``PandasContextAdapter`` on ``SQLiteContextStore``."""
    from ..adapters.pandas_adapter import PandasContextAdapter
    from ..sqlite_store import SQLiteContextStore

    _remove(path)
    try:
        with SQLiteContextStore(path, synchronous=synchronous) as store:
            adapter = PandasContextAdapter(df, store)
            timing = spec_loop(adapter, n)
            check_read_back(adapter, n, "SQLiteContextStore")
    finally:
        _remove(path)
    return timing


def ours_batch(path: str, df: Any, n: int, synchronous: str = "NORMAL") -> Timing:
    """The batch work of :func:`raw_sqlite_batch` through ``add_context_many``/``get_context_many``."""
    from ..adapters.pandas_adapter import PandasContextAdapter
    from ..sqlite_store import SQLiteContextStore

    _remove(path)
    try:
        with SQLiteContextStore(path, synchronous=synchronous) as store:
            timing = batch_loop(PandasContextAdapter(df, store), n)
    finally:
        _remove(path)
    return timing


def main(argv: list[str] | None = None) -> None:
    """Print calls/s (per-call) and entries/s (batch), ours vs raw, medians of interleaved runs."""
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 10_000
    batch_n = int(args[1]) if len(args) > 1 else 100_000
    repeat = int(args[2]) if len(args) > 2 else 5
    import pandas as pd

    df = pd.DataFrame({"A": range(max(n, batch_n, 100_000))})
    with tempfile.TemporaryDirectory() as tmp:
        for label, count, raw, ours in (
            ("per-call", n, raw_sqlite_per_call, ours_per_call),
            ("batch", batch_n, raw_sqlite_batch, ours_batch),
        ):
            times: dict[str, list[tuple[float, float]]] = {"raw": [], "ours": []}
            for _ in range(repeat):
                for name, fn in (("raw", raw), ("ours", ours)):
                    path = os.path.join(tmp, f"{name}.db")
                    times[name].append(fn(path, df, count))
            rates = {}
            for name, runs in times.items():
                w = statistics.median(t[0] for t in runs)
                r = statistics.median(t[1] for t in runs)
                total = statistics.median(t[0] + t[1] for t in runs)
                rates[name] = 2 * count / total
                print(
                    f"{label:8} {name:4}: write {count / w:>10,.0f}/s  read {count / r:>10,.0f}/s"
                    f"  overall {rates[name]:>10,.0f} calls-or-entries/s"
                )
            print(f"{label:8} ours/raw = {rates['ours'] / rates['raw']:.2f}x")


if __name__ == "__main__":
    main()
