"""Raw ``sqlite3`` baselines for :class:`~context_framework.sqlite_store.SQLiteContextStore`.

The same work the benchmarks give the store, written "the obvious way"
directly against :mod:`sqlite3`: a ``kv(k TEXT PRIMARY KEY, v TEXT)`` table,
WAL, the same ``synchronous`` setting, ``repr(key)`` as the key and
``json.dumps``/``json.loads`` for values.

* :func:`raw_sqlite_per_call`: ``n`` upserts, each committed on its own, then
  ``n`` point reads.
* :func:`raw_sqlite_batch`: ``n`` upserts with one ``executemany`` in one
  transaction, then reads by ``SELECT ... WHERE k IN (...)`` in batches of
  500, realigned to the input order (what ``get_many`` returns).

Run ``python -m context_framework.bench.sqlite_baseline [n] [batch_n] [repeat]``
to compare both with the store in one run (medians of interleaved runs).
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Any

from .targets import timed_batch

__all__ = ["ours_batch", "ours_per_call", "raw_sqlite_batch", "raw_sqlite_per_call"]

_UPSERT = "INSERT INTO kv VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v"
_READ_BATCH = 500


def _remove(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    _remove(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
    conn.commit()
    return conn


def raw_sqlite_per_call(path: str, n: int, synchronous: str = "NORMAL") -> tuple[float, float]:
    """``n`` committed upserts then ``n`` reads; returns ``(add_seconds, get_seconds)``.

    ``path`` (and its ``-wal``/``-shm`` files) is deleted first and left behind.
    """
    conn = _connect(path, synchronous)
    try:
        cur = conn.cursor()
        start = time.perf_counter()
        for i in range(n):
            key = ("row", i)
            cur.execute(_UPSERT, (repr(key), json.dumps({"meta": f"value_{i}"})))
            conn.commit()
        mid = time.perf_counter()
        for i in range(n):
            row = cur.execute("SELECT v FROM kv WHERE k = ?", (repr(("row", i)),)).fetchone()
            json.loads(row[0])
        end = time.perf_counter()
        if row is None or json.loads(row[0]) != {"meta": f"value_{n - 1}"}:
            raise AssertionError("raw sqlite3 baseline read back the wrong value")
    finally:
        conn.close()
    return mid - start, end - mid


def raw_sqlite_batch(path: str, n: int, synchronous: str = "NORMAL") -> tuple[float, float]:
    """One-transaction ``executemany`` of ``n`` upserts, then ``IN`` reads of 500 keys.

    Returns ``(write_seconds, read_seconds)``. Building the rows and keys is timed,
    as it is for the store.
    """
    conn = _connect(path, synchronous)
    try:
        cur = conn.cursor()
        start = time.perf_counter()
        rows = [(repr(("row", i)), json.dumps({"meta": f"value_{i}"})) for i in range(n)]
        cur.executemany(_UPSERT, rows)
        conn.commit()
        mid = time.perf_counter()
        keys = [repr(("row", i)) for i in range(n)]
        found: dict[str, Any] = {}
        for i in range(0, n, _READ_BATCH):
            chunk = keys[i : i + _READ_BATCH]
            sql = f"SELECT k, v FROM kv WHERE k IN ({','.join('?' * len(chunk))})"
            for k, v in cur.execute(sql, chunk):
                found[k] = json.loads(v)
        values = [found.get(k) for k in keys]
        end = time.perf_counter()
        if n and values[-1] != {"meta": f"value_{n - 1}"}:
            raise AssertionError("raw sqlite3 batch baseline read back the wrong value")
    finally:
        conn.close()
    return mid - start, end - mid


def ours_per_call(path: str, n: int, synchronous: str = "NORMAL") -> tuple[float, float]:
    """The per-call loop of :func:`raw_sqlite_per_call` through ``SQLiteContextStore``."""
    from ..sqlite_store import SQLiteContextStore

    _remove(path)
    with SQLiteContextStore(path, synchronous=synchronous) as store:
        start = time.perf_counter()
        for i in range(n):
            store.set(("row", i), {"meta": f"value_{i}"})
        mid = time.perf_counter()
        for i in range(n):
            value = store.get(("row", i))
        end = time.perf_counter()
        if n and value != {"meta": f"value_{n - 1}"}:
            raise AssertionError("SQLiteContextStore read back the wrong value")
    return mid - start, end - mid


def ours_batch(path: str, n: int, synchronous: str = "NORMAL") -> tuple[float, float]:
    """The batch work of :func:`raw_sqlite_batch` through ``set_many``/``get_many``."""
    from ..sqlite_store import SQLiteContextStore

    _remove(path)
    with SQLiteContextStore(path, synchronous=synchronous) as store:
        timing = timed_batch(store, n)
    return timing


def main(argv: list[str] | None = None) -> None:
    """Print calls/s (per-call) and entries/s (batch), ours vs raw, medians of interleaved runs."""
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 10_000
    batch_n = int(args[1]) if len(args) > 1 else 100_000
    repeat = int(args[2]) if len(args) > 2 else 5
    with tempfile.TemporaryDirectory() as tmp:
        for label, count, raw, ours in (
            ("per-call", n, raw_sqlite_per_call, ours_per_call),
            ("batch", batch_n, raw_sqlite_batch, ours_batch),
        ):
            times: dict[str, list[tuple[float, float]]] = {"raw": [], "ours": []}
            for _ in range(repeat):
                for name, fn in (("raw", raw), ("ours", ours)):
                    path = os.path.join(tmp, f"{name}.db")
                    times[name].append(fn(path, count))
                    _remove(path)
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
