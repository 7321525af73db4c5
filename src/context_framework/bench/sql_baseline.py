"""Raw-driver baselines for :class:`~context_framework.db_store.DBContextStore`, same run, same server.

The spec's work written by hand against the driver, with the key checks of
:mod:`.baselines`: a ``kv`` table keyed by ``repr(key)`` (``text COLLATE
"C"`` / ``VARCHAR ... utf8mb4_bin``: byte-order comparisons, as our binary
keys), compact JSON values, autocommit, the driver's default durability (as
ours). Two raw tables are measured on PostgreSQL: ``v jsonb`` (the obvious
column for JSON; the server parses every value, as it does for our
queryable ``j`` column, but does not give values back exactly) and ``v
text`` (no parsing at all, the least work possible). MariaDB's raw table
has ``v LONGTEXT``. On PostgreSQL ours is measured twice: as created by
default (with the generated ``jsonb`` column ``j``) and with
``json_column=False``; the like-for-like ratios are ours/raw (jsonb) and
ours (no j)/raw (text).

* per call (:class:`RawSQL`): ``n`` autocommit upserts (``INSERT ... ON
  CONFLICT`` / ``ON DUPLICATE KEY UPDATE``), each its own transaction, then
  ``n`` point ``SELECT``\\ s (psycopg prepares them after a few runs;
  PyMySQL has no server-side statements); ours is the spec's loop,
  ``PandasContextAdapter.add_context`` then ``get_context`` on ``("row", i)``;
* batch: ``n`` entries written in one transaction (PostgreSQL: ``COPY`` into
  a temporary table, then one ``INSERT ... SELECT ... ON CONFLICT``;
  MariaDB: PyMySQL ``executemany``, which sends multi-row ``INSERT ... ON
  DUPLICATE KEY UPDATE`` statements), then read back (``WHERE k =
  ANY(%s)`` in chunks of 10,000 / ``IN (...)`` in chunks of 2,000) and
  realigned to the input order; ours is ``add_context_many`` then
  ``get_context_many``;
* buffered (:func:`raw_buffered`): the spec's loop through a
  :class:`~.baselines.HandBuffer` over :class:`RawSQL`: every 1,000 writes
  one statement (PostgreSQL: ``INSERT ... SELECT ... FROM unnest(%s, %s)
  ON CONFLICT``; MariaDB: ``executemany``), final flush timed.

Building keys and values is timed on both sides. Each case runs ``repeat``
times (default 5), interleaved with its baselines, and medians are printed;
each ratio line also gives the range of the write ratio over the runs (run
``i`` of ours against run ``i`` of the baseline), as per-call writes wait
for the commit's fsync and vary from run to run.

Run ``python -m context_framework.bench.sql_baseline URL [URL ...] [--n N]
[--batch-n N] [--repeat R]`` with ``postgresql://...`` and/or ``mysql://...``
URLs (tables are created with unique names and dropped afterwards).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from .baselines import HandBuffer, KeyCheck, RawClient, check_read_back, dumps, hand_buffer_note, loads
from .modes import batch_loop, spec_loop

__all__ = ["NOTES", "RawSQL", "main", "raw_batch", "raw_buffered", "raw_per_call", "run"]

Timing = tuple[float, float]  # (write seconds, read seconds)

#: What ``ctx bench``'s footnote says of each row, by server: per-call (and batch), buffered.
NOTES = {
    "postgres": {
        "raw": (
            'psycopg 3 on the same server, autocommit (the server\'s synchronous_commit, as ours); table '
            '(k text COLLATE "C" PRIMARY KEY, v jsonb): the server parses each value, as for our generated '
            "j column (ours also keeps the text, for exact round trips); one upsert per add, one SELECT per "
            "get (psycopg prepares both). Batch: COPY into a temporary table and one INSERT ... SELECT ... "
            "ON CONFLICT in one transaction, reads by k = ANY(...) of 10,000 keys."
        ),
        "buffered": hand_buffer_note(
            "raw psycopg (jsonb)", "one INSERT ... SELECT ... FROM unnest(keys, values) ON CONFLICT"
        ),
    },
    "mysql": {
        "raw": (
            "PyMySQL on the same server, autocommit; InnoDB table (k VARCHAR(255) utf8mb4_bin PRIMARY KEY, "
            "v LONGTEXT); one INSERT ... ON DUPLICATE KEY UPDATE per add, one SELECT per get. Batch: "
            "executemany (multi-row upserts) of 5,000 rows in one transaction, reads by IN (...) of 2,000."
        ),
        "buffered": hand_buffer_note("raw PyMySQL", "one executemany (a multi-row upsert)"),
    },
}


def _is_pg(url: str) -> bool:
    return url.split("://", 1)[0].lower().startswith("postgres")


# --------------------------------------------------------------------------- raw connections


def _pg_connect(url: str) -> Any:
    import psycopg

    from ..db_store import _Target

    t = _Target(url.split("?", 1)[0])
    params: dict[str, Any] = {
        "host": t.host, "port": t.port, "user": t.user, "password": t.password, "dbname": t.database
    }
    return psycopg.connect(autocommit=True, **{k: v for k, v in params.items() if v is not None})


def _my_connect(url: str) -> Any:
    import pymysql

    from ..db_store import _Target

    t = _Target(url.split("?", 1)[0])
    return pymysql.connect(
        host=t.host or "localhost",
        port=t.port,
        user=t.user or "root",
        password=t.password or "",
        database=t.database,
        charset="utf8mb4",
        autocommit=True,
    )


def _raw_table(url: str, table: str, column: str) -> Any:
    if _is_pg(url):
        conn = _pg_connect(url)
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.execute(f'CREATE TABLE "{table}" (k text COLLATE "C" PRIMARY KEY, v {column} NOT NULL)')
        return conn
    conn = _my_connect(url)
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{table}`")
        cur.execute(
            f"CREATE TABLE `{table}` (k VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin "
            "NOT NULL PRIMARY KEY, v LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL)"
        )
    return conn


def _drop_raw(url: str, table: str) -> None:
    conn = _pg_connect(url) if _is_pg(url) else _my_connect(url)
    try:
        q = '"' if _is_pg(url) else "`"
        conn.cursor().execute(f"DROP TABLE IF EXISTS {q}{table}{q}")
    finally:
        conn.close()


def _drop_store_table(url: str, table: str) -> None:
    conn = _pg_connect(url) if _is_pg(url) else _my_connect(url)
    try:
        cur = conn.cursor()
        if _is_pg(url):
            cur.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_meta"')
            functions = ("increment", "update", "merge", "nul_hide", "nul_show")
            names = ", ".join(f'"{table}_{f}"' for f in functions)
            cur.execute(f"DROP FUNCTION IF EXISTS {names}")
        else:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`, `{table}_meta`")
    finally:
        conn.close()


# --------------------------------------------------------------------------- raw baselines


class RawSQL(RawClient):
    """The spec's API over one autocommit psycopg or PyMySQL connection, on table ``table``."""

    def __init__(self, df: Any, conn: Any, table: str, postgres: bool, column: str) -> None:
        super().__init__(df)
        self._cur = conn.cursor()
        if postgres:
            cast = "::jsonb" if column == "jsonb" else ""
            on_conflict = "ON CONFLICT (k) DO UPDATE SET v = excluded.v"
            self._upsert = f'INSERT INTO "{table}" (k, v) VALUES (%s, %s{cast}) {on_conflict}'
            self._get = f'SELECT v FROM "{table}" WHERE k = %s'
            self._upsert_many = (
                f'INSERT INTO "{table}" (k, v) SELECT k, v{cast} FROM unnest(%s::text[], %s::text[]) '
                f"AS u(k, v) {on_conflict}"
            )
        else:
            self._upsert = (
                f"INSERT INTO `{table}` (k, v) VALUES (%s, %s) ON DUPLICATE KEY UPDATE v = VALUES(v)"
            )
            self._get = f"SELECT v FROM `{table}` WHERE k = %s"
            self._upsert_many = ""
        self._execute = self._cur.execute

    def add_context(self, key: Any, metadata: dict[str, Any]) -> None:
        self._check(key)
        self._execute(self._upsert, (repr(key), dumps(metadata)))

    def get_context(self, key: Any) -> dict[str, Any] | None:
        self._check(key)
        self._execute(self._get, (repr(key),))
        row = self._cur.fetchone()
        if row is None:
            return None
        value = row[0]
        return loads(value) if type(value) is str else value  # jsonb comes back decoded by psycopg

    def write_many(self, pairs: list[tuple[str, str]]) -> None:
        """One statement: an ``unnest`` upsert (PostgreSQL) or PyMySQL's multi-row ``executemany``."""
        if self._upsert_many:
            self._execute(self._upsert_many, ([k for k, _ in pairs], [v for _, v in pairs]))
        else:
            self._cur.executemany(self._upsert, pairs)


def _run_raw(url: str, df: Any, n: int, column: str, buffered: bool) -> Timing:
    table = f"cfraw_{uuid.uuid4().hex[:10]}"
    conn = _raw_table(url, table, column)
    try:
        raw = RawSQL(df, conn, table, _is_pg(url), column)
        timing = spec_loop(HandBuffer(df, raw) if buffered else raw, n, flush=buffered)
        check_read_back(raw, n, "hand-written buffer" if buffered else "raw per-call baseline")
    finally:
        conn.close()
        _drop_raw(url, table)
    return timing


def raw_per_call(url: str, df: Any, n: int, column: str = "jsonb") -> Timing:
    """The spec's loop on :class:`RawSQL`: ``n`` autocommit upserts then ``n`` point reads."""
    return _run_raw(url, df, n, column, buffered=False)


def raw_buffered(url: str, df: Any, n: int, column: str = "jsonb") -> Timing:
    """The spec's loop through a :class:`~.baselines.HandBuffer` over :class:`RawSQL`."""
    return _run_raw(url, df, n, column, buffered=True)


def raw_batch(url: str, df: Any, n: int, column: str = "jsonb") -> Timing:
    """One transaction writing ``n`` entries (COPY+INSERT or executemany), then chunked reads."""
    table = f"cfraw_{uuid.uuid4().hex[:10]}"
    conn = _raw_table(url, table, column)
    check = KeyCheck(df).check
    try:
        cur = conn.cursor()
        start = time.perf_counter()
        rows = []
        for i in range(n):
            key = ("row", i)
            check(key)
            rows.append((repr(key), dumps({"meta": f"value_{i}"})))
        if _is_pg(url):
            with conn.transaction():
                cur.execute(f"CREATE TEMP TABLE load_{table} (k text, v text) ON COMMIT DROP")
                with cur.copy(f"COPY load_{table} (k, v) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cast = "::jsonb" if column == "jsonb" else ""
                cur.execute(
                    f'INSERT INTO "{table}" (k, v) SELECT k, v{cast} FROM load_{table} '
                    "ON CONFLICT (k) DO UPDATE SET v = excluded.v"
                )
        else:
            conn.begin()
            upsert = f"INSERT INTO `{table}` (k, v) VALUES (%s, %s) ON DUPLICATE KEY UPDATE v = VALUES(v)"
            for i in range(0, n, 5000):
                cur.executemany(upsert, rows[i : i + 5000])
            conn.commit()
        mid = time.perf_counter()
        keys = []
        for i in range(n):
            key = ("row", i)
            check(key)
            keys.append(repr(key))
        found: dict[str, Any] = {}
        if _is_pg(url):
            sql = f'SELECT k, v FROM "{table}" WHERE k = ANY(%s)'
            for i in range(0, n, 10_000):
                cur.execute(sql, (keys[i : i + 10_000],))
                for k, v in cur.fetchall():
                    found[k] = loads(v) if type(v) is str else v
        else:
            for i in range(0, n, 2000):
                part = keys[i : i + 2000]
                cur.execute(f"SELECT k, v FROM `{table}` WHERE k IN ({','.join(['%s'] * len(part))})", part)
                for k, v in cur.fetchall():
                    found[k] = loads(v)
        values = [found.get(k) for k in keys]
        end = time.perf_counter()
        if values != [{"meta": f"value_{i}"} for i in range(n)]:
            raise AssertionError("raw batch baseline read back the wrong value")
    finally:
        conn.close()
        _drop_raw(url, table)
    return mid - start, end - mid


# --------------------------------------------------------------------------- ours


def _ours(url: str, df: Any, n: int, json_column: bool, batch: bool) -> Timing:
    from ..adapters.pandas_adapter import PandasContextAdapter
    from ..db_store import DBContextStore

    table = f"cfours_{uuid.uuid4().hex[:10]}"
    store = DBContextStore(url, table=table, json_column=json_column)
    try:
        adapter = PandasContextAdapter(df, store)
        timing = batch_loop(adapter, n) if batch else spec_loop(adapter, n)
        check_read_back(adapter, n, "DBContextStore")
    finally:
        store.close()
        _drop_store_table(url, table)
    return timing


def ours_per_call(url: str, df: Any, n: int, json_column: bool = True) -> Timing:
    """The spec's loop through ``PandasContextAdapter`` over a ``DBContextStore``."""
    return _ours(url, df, n, json_column, batch=False)


def ours_batch(url: str, df: Any, n: int, json_column: bool = True) -> Timing:
    """``add_context_many`` of ``n`` entries, then ``get_context_many`` of the same keys."""
    return _ours(url, df, n, json_column, batch=True)


# --------------------------------------------------------------------------- driver


def run(url: str, n: int = 10_000, batch_n: int = 100_000, repeat: int = 5) -> list[str]:
    """Measure one server; return the printed lines."""
    import pandas as pd

    lines: list[str] = []
    df = pd.DataFrame({"A": range(max(n, batch_n, 100_000))})
    pg = _is_pg(url)
    db = "PostgreSQL" if pg else "MariaDB"
    raw_columns = ("jsonb", "text") if pg else ("longtext",)
    for label, count, ours, raw in (
        ("per-call", n, ours_per_call, raw_per_call),
        ("batch", batch_n, ours_batch, raw_batch),
    ):
        cases: dict[str, Callable[[], Timing]] = {"ours": partial(ours, url, df, count)}
        if pg:
            cases["ours (no j)"] = partial(ours, url, df, count, False)
        for column in raw_columns:
            cases[f"raw ({column})"] = partial(raw, url, df, count, column)
        times: dict[str, list[Timing]] = {name: [] for name in cases}
        for _ in range(repeat):
            for name, fn in cases.items():
                times[name].append(fn())
        rates: dict[str, tuple[float, float, float]] = {}
        for name, runs in times.items():
            w = statistics.median(t[0] for t in runs)
            r = statistics.median(t[1] for t in runs)
            total = statistics.median(t[0] + t[1] for t in runs)
            rates[name] = (count / w, count / r, 2 * count / total)
            unit = "calls" if label == "per-call" else "entries"
            lines.append(
                f"{db:10} {label:8} {name:12}: write {count / w:>10,.0f}/s  read {count / r:>10,.0f}/s"
                f"  overall {2 * count / total:>10,.0f} {unit}/s"
            )
            print(lines[-1], flush=True)
        # like for like: the server parses JSON (ours, raw jsonb) or it does not (no j, raw text)
        pairs = [("ours", "raw (jsonb)"), ("ours (no j)", "raw (text)"), ("ours", "raw (text)")]
        for mine, theirs in pairs if pg else [("ours", "raw (longtext)")]:
            w, r, o = (a / b for a, b in zip(rates[mine], rates[theirs]))
            per_run = [b[0] / a[0] for a, b in zip(times[mine], times[theirs])]
            lines.append(
                f"{db:10} {label:8} {mine}/{theirs}: write {w:.2f}x  read {r:.2f}x  overall {o:.2f}x"
                f"  (write per run {min(per_run):.2f}-{max(per_run):.2f}x)"
            )
            print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m context_framework.bench.sql_baseline",
        description="DBContextStore vs raw psycopg / PyMySQL on the same server, same run.",
    )
    parser.add_argument("urls", nargs="+", metavar="URL", help="postgresql://... or mysql://...")
    parser.add_argument("--n", type=int, default=10_000, help="per-call operations (default 10,000)")
    parser.add_argument("--batch-n", type=int, default=100_000, help="batch entries (default 100,000)")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs per case (default 5)")
    args = parser.parse_args(argv)
    for url in args.urls:
        run(url, args.n, args.batch_n, args.repeat)


if __name__ == "__main__":
    main()
