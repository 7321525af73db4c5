"""Driver-layer measurements behind :mod:`context_framework.db_store`'s choice of drivers.

Each case does the store's work (encoded ``bytea``/``VARBINARY`` keys, compact
JSON text values, ``{"meta": "value_<i>"}``) through one driver layer against
the same server in the same run, interleaved ``repeat`` times (medians):

PostgreSQL
    * per call: autocommit upsert + point read, native psycopg 3 (server-side
      prepared statements after 5 uses) vs SQLAlchemy 2 Core (``text()``
      statements on an ``AUTOCOMMIT`` connection, psycopg dialect);
    * batch write: psycopg ``COPY`` into a temporary table + one
      ``INSERT ... SELECT ... ON CONFLICT``; psycopg ``executemany`` (pipeline
      mode); one ``INSERT ... SELECT FROM unnest(%s::bytea[], %s::text[])`` per
      chunk; SQLAlchemy ``executemany`` ("insertmanyvalues");
    * batch read: ``WHERE k = ANY(%s)`` in chunks, psycopg vs SQLAlchemy.

MariaDB/MySQL
    * per call: PyMySQL vs SQLAlchemy (PyMySQL dialect) autocommit upsert + read;
    * batch write: PyMySQL ``executemany`` (rewritten to multi-row
      ``INSERT ... ON DUPLICATE KEY UPDATE``) vs SQLAlchemy ``executemany``;
    * batch read: ``IN (...)`` chunks.

(mysqlclient has no Linux wheel on PyPI, so it was not measured.)

Run ``python -m context_framework.bench.sql_drivers PG_URL MYSQL_URL [n] [batch_n] [repeat]``.
Needs ``psycopg``, ``pymysql`` and ``sqlalchemy``.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..keys import encode_keys, encode_namespace
from ..values import decode_values, encode_values

__all__ = ["main"]


def _data(n: int) -> tuple[list[bytes], list[str]]:
    keys = encode_keys([("row", i) for i in range(n)], encode_namespace(""))
    texts = encode_values([{"meta": f"value_{i}"} for i in range(n)])
    return keys, texts


# --------------------------------------------------------------------------- PostgreSQL


def _pg_table(conn: Any, table: str, generated: bool) -> None:
    j = (
        ", j jsonb GENERATED ALWAYS AS (CASE WHEN strpos(v, E'\\\\u0000') > 0 THEN NULL "
        "ELSE v::jsonb END) STORED"
        if generated
        else ""
    )
    conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    conn.execute(f'CREATE TABLE "{table}" (k bytea PRIMARY KEY, v text NOT NULL{j})')


def pg_cases(url: str, n: int, batch_n: int) -> dict[str, Callable[[], float]]:
    import psycopg
    import sqlalchemy as sa

    table = f"drv_{uuid.uuid4().hex[:8]}"
    upsert = f'INSERT INTO "{table}" (k, v) VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = excluded.v'
    get = f'SELECT v FROM "{table}" WHERE k = %s'
    keys, texts = _data(max(n, batch_n))
    sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(sa_url, isolation_level="AUTOCOMMIT")

    def fresh(generated: bool = False) -> Any:
        conn = psycopg.connect(url, autocommit=True)
        _pg_table(conn, table, generated)
        return conn

    def psycopg_per_call() -> float:
        with fresh() as conn:
            cur = conn.cursor()
            start = time.perf_counter()
            for i in range(n):
                cur.execute(upsert, (keys[i], texts[i]))
            for i in range(n):
                cur.execute(get, (keys[i],))
                decode_values([cur.fetchone()[0]])  # type: ignore[index]
            return time.perf_counter() - start

    def sqlalchemy_per_call() -> float:
        fresh().close()
        up = sa.text(
            f'INSERT INTO "{table}" (k, v) VALUES (:k, :v) ON CONFLICT (k) DO UPDATE SET v = excluded.v'
        )
        sel = sa.text(f'SELECT v FROM "{table}" WHERE k = :k')
        with engine.connect() as conn:
            start = time.perf_counter()
            for i in range(n):
                conn.execute(up, {"k": keys[i], "v": texts[i]})
            for i in range(n):
                decode_values([conn.execute(sel, {"k": keys[i]}).scalar_one()])
            return time.perf_counter() - start

    def copy_write(generated: bool) -> Callable[[], float]:
        def run() -> float:
            with fresh(generated) as conn:
                start = time.perf_counter()
                with conn.transaction():
                    cur = conn.cursor()
                    cur.execute("CREATE TEMP TABLE cf_load (k bytea, v text) ON COMMIT DROP")
                    with cur.copy("COPY cf_load (k, v) FROM STDIN") as copy:
                        for row in zip(keys[:batch_n], texts[:batch_n]):
                            copy.write_row(row)
                    cur.execute(
                        f'INSERT INTO "{table}" (k, v) SELECT DISTINCT ON (k) k, v FROM cf_load '
                        "ORDER BY k ON CONFLICT (k) DO UPDATE SET v = excluded.v"
                    )
                return time.perf_counter() - start

        return run

    def executemany_write() -> float:
        with fresh() as conn:
            start = time.perf_counter()
            with conn.transaction():
                conn.cursor().executemany(upsert, list(zip(keys[:batch_n], texts[:batch_n])))
            return time.perf_counter() - start

    def unnest_write() -> float:
        sql = (
            f'INSERT INTO "{table}" (k, v) SELECT * FROM unnest(%s::bytea[], %s::text[]) '
            "ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        )
        with fresh() as conn:
            start = time.perf_counter()
            with conn.transaction():
                cur = conn.cursor()
                for i in range(0, batch_n, 10_000):
                    cur.execute(sql, (keys[i : i + 10_000], texts[i : i + 10_000]))
            return time.perf_counter() - start

    def sqlalchemy_write() -> float:
        fresh().close()
        meta = sa.MetaData()
        t = sa.Table(table, meta, sa.Column("k", sa.LargeBinary, primary_key=True), sa.Column("v", sa.Text))
        from sqlalchemy.dialects.postgresql import insert

        stmt = insert(t)
        stmt = stmt.on_conflict_do_update(index_elements=["k"], set_={"v": stmt.excluded.v})
        eng = sa.create_engine(sa_url)
        try:
            with eng.begin() as conn:
                start = time.perf_counter()
                conn.execute(stmt, [{"k": k, "v": v} for k, v in zip(keys[:batch_n], texts[:batch_n])])
            return time.perf_counter() - start
        finally:
            eng.dispose()

    def psycopg_read() -> float:
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.cursor()
            sql = f'SELECT k, v FROM "{table}" WHERE k = ANY(%s)'
            start = time.perf_counter()
            found: dict[bytes, str] = {}
            for i in range(0, batch_n, 10_000):
                cur.execute(sql, (keys[i : i + 10_000],))
                found.update(cur.fetchall())
            out = decode_values([found.get(k) for k in keys[:batch_n]])
            assert out[-1] is not None
            return time.perf_counter() - start

    def sqlalchemy_read() -> float:
        sel = sa.text(f'SELECT k, v FROM "{table}" WHERE k = ANY(:ks)')
        with engine.connect() as conn:
            start = time.perf_counter()
            found: dict[bytes, str] = {}
            for i in range(0, batch_n, 10_000):
                found.update((bytes(k), v) for k, v in conn.execute(sel, {"ks": keys[i : i + 10_000]}))
            out = decode_values([found.get(k) for k in keys[:batch_n]])
            assert out[-1] is not None
            return time.perf_counter() - start

    cases = {
        f"PG per-call psycopg   ({2 * n} calls)": psycopg_per_call,
        f"PG per-call SQLAlchemy ({2 * n} calls)": sqlalchemy_per_call,
        f"PG write COPY+INSERT..SELECT   ({batch_n})": copy_write(False),
        f"PG write COPY, with jsonb col  ({batch_n})": copy_write(True),
        f"PG write executemany pipeline  ({batch_n})": executemany_write,
        f"PG write unnest arrays 10k     ({batch_n})": unnest_write,
        f"PG write SQLAlchemy executemany({batch_n})": sqlalchemy_write,
        f"PG read ANY() psycopg          ({batch_n})": psycopg_read,
        f"PG read ANY() SQLAlchemy       ({batch_n})": sqlalchemy_read,
    }

    def cleanup() -> None:
        engine.dispose()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')

    def cleanup_case() -> float:
        cleanup()
        return 0.0

    cases["__cleanup__"] = cleanup_case
    return cases


# --------------------------------------------------------------------------- MariaDB


def my_cases(url: str, n: int, batch_n: int) -> dict[str, Callable[[], float]]:
    import pymysql
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    u = make_url(url)
    params = {
        "host": u.host or "127.0.0.1",
        "port": u.port or 3306,
        "user": u.username or "root",
        "password": u.password or "",
        "database": u.database,
        "autocommit": True,
    }
    table = f"drv_{uuid.uuid4().hex[:8]}"
    upsert = f"INSERT INTO `{table}` (k, v) VALUES (%s, %s) ON DUPLICATE KEY UPDATE v = VALUES(v)"
    get = f"SELECT v FROM `{table}` WHERE k = %s"
    keys, texts = _data(max(n, batch_n))
    sa_url = u.set(drivername="mysql+pymysql")
    engine = sa.create_engine(sa_url, isolation_level="AUTOCOMMIT")

    def fresh() -> Any:
        conn = pymysql.connect(**params)
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
            cur.execute(
                f"CREATE TABLE `{table}` (k VARBINARY(1024) NOT NULL PRIMARY KEY, "
                "v LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL CHECK (JSON_VALID(v)))"
            )
        return conn

    def pymysql_per_call() -> float:
        conn = fresh()
        try:
            cur = conn.cursor()
            start = time.perf_counter()
            for i in range(n):
                cur.execute(upsert, (keys[i], texts[i]))
            for i in range(n):
                cur.execute(get, (keys[i],))
                decode_values([cur.fetchone()[0]])
            return time.perf_counter() - start
        finally:
            conn.close()

    def sqlalchemy_per_call() -> float:
        fresh().close()
        up = sa.text(
            f"INSERT INTO `{table}` (k, v) VALUES (:k, :v) ON DUPLICATE KEY UPDATE v = VALUES(v)"
        )
        sel = sa.text(f"SELECT v FROM `{table}` WHERE k = :k")
        with engine.connect() as conn:
            start = time.perf_counter()
            for i in range(n):
                conn.execute(up, {"k": keys[i], "v": texts[i]})
            for i in range(n):
                decode_values([conn.execute(sel, {"k": keys[i]}).scalar_one()])
            return time.perf_counter() - start

    def pymysql_write() -> float:
        conn = fresh()
        try:
            cur = conn.cursor()
            start = time.perf_counter()
            conn.begin()
            rows = list(zip(keys[:batch_n], texts[:batch_n]))
            for i in range(0, batch_n, 5_000):
                cur.executemany(upsert, rows[i : i + 5_000])
            conn.commit()
            return time.perf_counter() - start
        finally:
            conn.close()

    def sqlalchemy_write() -> float:
        fresh().close()
        up = sa.text(
            f"INSERT INTO `{table}` (k, v) VALUES (:k, :v) ON DUPLICATE KEY UPDATE v = VALUES(v)"
        )
        eng = sa.create_engine(sa_url)
        try:
            with eng.begin() as conn:
                start = time.perf_counter()
                conn.execute(up, [{"k": k, "v": v} for k, v in zip(keys[:batch_n], texts[:batch_n])])
            return time.perf_counter() - start
        finally:
            eng.dispose()

    def pymysql_read() -> float:
        conn = pymysql.connect(**params)
        try:
            cur = conn.cursor()
            start = time.perf_counter()
            found: dict[bytes, str] = {}
            for i in range(0, batch_n, 2_000):
                part = keys[i : i + 2_000]
                cur.execute(f"SELECT k, v FROM `{table}` WHERE k IN ({','.join(['%s'] * len(part))})", part)
                found.update(cur.fetchall())
            out = decode_values([found.get(k) for k in keys[:batch_n]])
            assert out[-1] is not None
            return time.perf_counter() - start
        finally:
            conn.close()

    def sqlalchemy_read() -> float:
        sel = sa.text(f"SELECT k, v FROM `{table}` WHERE k IN :ks").bindparams(
            sa.bindparam("ks", expanding=True)
        )
        with engine.connect() as conn:
            start = time.perf_counter()
            found: dict[bytes, str] = {}
            for i in range(0, batch_n, 2_000):
                found.update((bytes(k), v) for k, v in conn.execute(sel, {"ks": keys[i : i + 2_000]}))
            out = decode_values([found.get(k) for k in keys[:batch_n]])
            assert out[-1] is not None
            return time.perf_counter() - start

    def cleanup() -> None:
        engine.dispose()
        conn = pymysql.connect(**params)
        try:
            conn.cursor().execute(f"DROP TABLE IF EXISTS `{table}`")
        finally:
            conn.close()

    def cleanup_case() -> float:
        cleanup()
        return 0.0

    return {
        f"My per-call PyMySQL    ({2 * n} calls)": pymysql_per_call,
        f"My per-call SQLAlchemy ({2 * n} calls)": sqlalchemy_per_call,
        f"My write PyMySQL executemany   ({batch_n})": pymysql_write,
        f"My write SQLAlchemy executemany({batch_n})": sqlalchemy_write,
        f"My read IN() PyMySQL           ({batch_n})": pymysql_read,
        f"My read IN() SQLAlchemy        ({batch_n})": sqlalchemy_read,
        "__cleanup__": cleanup_case,
    }


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        raise SystemExit(__doc__)
    pg_url, my_url = args[0], args[1]
    n = int(args[2]) if len(args) > 2 else 3_000
    batch_n = int(args[3]) if len(args) > 3 else 100_000
    repeat = int(args[4]) if len(args) > 4 else 3
    for cases in (pg_cases(pg_url, n, batch_n), my_cases(my_url, n, batch_n)):
        cleanup = cases.pop("__cleanup__")
        times: dict[str, list[float]] = {name: [] for name in cases}
        try:
            for _ in range(repeat):
                for name, fn in cases.items():
                    times[name].append(fn())
        finally:
            cleanup()
        for name, runs in times.items():
            count = 2 * n if "per-call" in name else batch_n
            med = statistics.median(runs)
            print(f"{name:45} {count / med:>10,.0f}/s  (median {med:.3f}s of {len(runs)})", flush=True)


if __name__ == "__main__":
    main()
