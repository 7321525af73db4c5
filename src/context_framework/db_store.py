"""``DBContextStore``: a store in a PostgreSQL or MariaDB/MySQL table, shared by processes and hosts.

Open it by URL, ``open_store("postgresql://user:pass@host:5432/db")`` (also
``postgres://``, ``postgresql+psycopg://``), ``open_store("mysql://user:pass@host:3306/db")``
(also ``mariadb://``, ``mysql+pymysql://``), or with the constructor::

    DBContextStore(url, namespace="", max_value_size=1 << 20, table="context",
                   pool_size=4, connect_timeout=5.0, timeout=30.0,
                   json_column=True, json_index=False)

Query options of the URL (``?table=ctx&pool_size=8&namespace=a/b``) give the
same settings; keyword arguments win over them. SQLite is not served here:
:class:`~context_framework.sqlite_store.SQLiteContextStore` does that natively.
``DatabaseContextStore`` is an alias of this class.

Drivers (measured, see below): native **psycopg 3** for PostgreSQL and
**PyMySQL** for MariaDB/MySQL, each behind a small thread-safe connection
pool of this module (``pool_size`` connections per store, shared by its
namespace views; see "Connections" below). SQLAlchemy 2 Core was measured on top of the same drivers
and not used: it cost 18-31% of the per-call throughput, made batch writes
1.3x (MariaDB) to 4.4x (PostgreSQL: no ``COPY``) slower and batch reads
1.1-1.2x slower, and what makes PostgreSQL fast here (``COPY``, server-side
prepared statements, binary array parameters) is psycopg's own; its URL
forms (``postgresql+psycopg://``, ``mysql+pymysql://``) are accepted. Only
the driver of the URL's database is imported (extras ``postgres``,
``mysql``; ``sql`` for both).

Measured with ``python -m context_framework.bench.sql_drivers
postgresql://root@127.0.0.1:5432/test mysql://root@127.0.0.1:3306/test 3000 100000 3``
(PostgreSQL 15, MariaDB 10.11, same machine, 2 cores, one run, medians of 3)::

    PG per-call upsert+get   psycopg 3 (prepared)          6,034 calls/s
                             SQLAlchemy 2 Core (psycopg)   4,173 calls/s
    PG batch write 100,000   psycopg COPY + INSERT..SELECT 286,751 entries/s
                             same, table with jsonb column 238,889 entries/s
                             psycopg executemany (pipeline)109,469 entries/s
                             INSERT..SELECT unnest(arrays)  98,640 entries/s
                             SQLAlchemy executemany         65,212 entries/s
    PG batch read 100,000    psycopg  k = ANY(%s)         194,861 entries/s
                             SQLAlchemy k = ANY(:ks)      180,036 entries/s
    MariaDB per-call         PyMySQL                        4,348 calls/s
                             SQLAlchemy (PyMySQL)           3,570 calls/s
    MariaDB batch write      PyMySQL executemany          178,667 entries/s
                             SQLAlchemy executemany       135,010 entries/s
    MariaDB batch read       PyMySQL IN (...)             171,698 entries/s
                             SQLAlchemy IN (...)          141,412 entries/s

(mysqlclient has no Linux wheel, so it was not a candidate.)

The store against raw-driver baselines on the same servers in the same run
(``python -m context_framework.bench.sql_baseline
postgresql://root@127.0.0.1:5432/test mysql://root@127.0.0.1:3306/test``,
medians of 5 interleaved runs, the write ratio's range over the runs in
brackets; per call: 10,000 ``PandasContextAdapter`` ``add_context`` then
10,000 ``get_context`` vs raw autocommit ``INSERT ... ON CONFLICT``/``SELECT``
through a psycopg cursor (which prepares them after 5 executions); batch:
100,000 entries ``set_many``/``get_many`` vs raw ``COPY`` into a temporary
table + ``INSERT ... ON CONFLICT`` / ``executemany`` and ``k = ANY(...)`` /
``IN (...)`` reads; see that module for the raw tables)::

                                  write/s   read/s   ratio (write [per run], read)
    PG per-call  ours               3,475   10,285   1.02x [0.95-1.10] 1.22x vs raw jsonb
                 ours, no j         3,743   10,349   1.03x [0.97-1.18] 1.31x vs raw text
                 raw (v jsonb)      3,405    8,459
                 raw (v text)       3,628    7,894
    PG batch     ours             201,961  331,313   1.43x [1.19-1.55] 2.56x vs raw jsonb
                 ours, no j       217,730  345,319   1.45x [1.19-1.64] 1.96x vs raw text
                 raw (v jsonb)    141,423  129,413
                 raw (v text)     150,231  176,183
    MariaDB      ours per-call      3,287    6,113   0.94x [0.87-1.09] 1.08x
                 raw per-call       3,502    5,650
                 ours batch       119,097  146,782   1.11x [0.92-1.25] 1.45x
                 raw batch        107,277  101,218

(PostgreSQL per call, overall: ours 1.07x raw jsonb.) The previous version
of this module (cursor ``execute(..., prepare=True)`` per call, batches
always through the temporary table) and this one, run alternately on the
same server (medians of 5): per-call writes 3,166 -> 3,515/s, reads 7,907 ->
9,718/s, batch writes 158,094 -> 224,783/s (raw jsonb in the same run:
3,641 and 8,677 calls/s, 146,709 entries/s); per-call writes are at parity
with raw jsonb (0.97-1.06x in three 5-run medians), see below why.

Where the per-call time goes (PostgreSQL). A per-call write waits for the
commit's fsync: ~290 us here, of which the client's CPU (Python, libpq,
the socket calls and the wake-up) is ~45 us for ours and ~61 us for the raw
cursor loop, and the server's CPU (measured on the backend process with
``synchronous_commit=off``) ~66-78 us for ours, ~63-65 us for raw jsonb and
~55 us without ``j``. The generated column is the difference: PostgreSQL 15
rebuilds its expression for every statement (``perf`` on the backend:
``ExecInitStoredGenerated``, mostly ``stringToNode`` re-reading the stored
expression, ~8% of the backend's time per insert), so ``j`` costs ~7% of a
per-call write (~8% of a batch write), while the ``strpos`` test itself is
negligible per value (~0.04 us). Smaller forms of the NUL test (``NOT LIKE``,
a PL/pgSQL function) measured the same within noise; ``v::jsonb`` alone
would save ~5 us but fails on ``\\u0000``.
Ours spends ~2.7 us of Python per ``set`` (key and value validation and
encoding included) and ~2 us per ``get``: the per-call statements skip
psycopg's cursor and adaptation and run through its libpq wrapper,
prepared once per connection (``send_prepare``), with ``bytea`` keys sent in
binary (``send_query_prepared``), waited for with psycopg's non-blocking
wait (``generators.execute`` under ``Connection.wait``, so signals are
handled and Ctrl-C cancels the query on the server before
``KeyboardInterrupt`` propagates, leaving the connection usable), and the
result read without row objects: a call is one ``sendto``, one ``poll`` and
one ``recvfrom``. Per-call writes vary by +-10% from run to run on this
shared 2-core machine.

Requirements: PostgreSQL >= 12 (generated columns; shortest-exact float
output), MariaDB >= 10.2 or MySQL >= 5.7 (InnoDB, utf8mb4).

Schema (version 1). PostgreSQL::

    CREATE TABLE "<schema>"."context" (
        k bytea PRIMARY KEY,          -- namespace tag + keys.encode_key(key)
        v text NOT NULL,              -- values.encode_value(metadata): the exact JSON text
        j jsonb GENERATED ALWAYS AS (
            CASE WHEN strpos(v, E'\\\\u0000') > 0 THEN NULL ELSE v::jsonb END) STORED
    );
    CREATE TABLE "<schema>"."context_meta" (key text PRIMARY KEY, value text NOT NULL);
    -- plus the functions context_merge, context_update, context_increment,
    -- context_nul_hide and context_nul_show (see _pg_functions)

``v`` keeps the exact text (``jsonb`` would turn ``1e308`` into an int, lose
the sign of ``-0.0``, reject ``\\u0000`` and reorder keys). ``j`` is the same
document as ``jsonb`` for queries, e.g. ``SELECT k FROM context WHERE j @>
'{"source": "PubMed"}'``; it is NULL for the rare values whose text holds
the escape ``\\u0000`` (jsonb cannot hold NUL), and its computation also
validates ``v`` as JSON. Computing ``j`` costs ~7% of a per-call write and
~30% of the server's work in a batch (100,000 small values copied into the
table: ~0.11 s of server CPU without it, ~0.16 s with it);
``json_column=False`` creates the table without ``j`` for users who never
query JSON in SQL (it only matters when the table is created). ``json_index=True`` creates ``CREATE INDEX
context_j_gin ON context USING gin (j jsonb_path_ops)`` (it slows writes; on
a large live table create it yourself with ``CREATE INDEX CONCURRENTLY``).

MariaDB/MySQL::

    CREATE TABLE `context` (
        k VARBINARY(2048) NOT NULL PRIMARY KEY,
        v LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
    ) ENGINE=InnoDB;
    CREATE TABLE `context_meta` (`key` VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL);

``v`` holds the exact JSON text (MySQL 8's ``JSON`` type would normalise it);
query it with ``JSON_EXTRACT(v, '$.source')`` or ``JSON_CONTAINS``. It has
no ``CHECK (JSON_VALID(v))`` (what MariaDB's ``JSON`` alias adds): MariaDB's
JSON functions stop at nesting depth 32 (``JSON_VALID`` gives 0 and
``JSON_EXTRACT`` NULL beyond it), so that check would refuse metadata this
library accepts (up to 200 levels, as every other store). Values are
validated before they are sent, as on every store.

The namespace is folded into the key as in ``SQLiteContextStore``: ``k`` is
``keys.encode_namespace(namespace) + keys.encode_key(key)``, so a namespace
and every key prefix in it are one contiguous range of the primary key, and
``scan``/``items``/``count``/``clear`` of a prefix are index range scans
(``k >= low AND k < high``, keyset pagination for scans). Encoded keys (with
the namespace) may be up to 2048 bytes (``MAX_KEY_SIZE``: B-tree index
entries are bounded on both databases); longer keys raise
:class:`UnsupportedKeyError` on writes.

Versioning and upgrades. The meta table holds ``schema_version`` (``1``) and
``key_codec``. Everything is created on first use, under a lock so that
concurrent first users create it once: a transaction holding
``pg_advisory_xact_lock`` on PostgreSQL (its DDL is transactional),
``GET_LOCK`` on MariaDB. A later version that changes the layout (or the SQL
functions, which belong to the schema) bumps ``SCHEMA_VERSION`` and adds a
step to ``_PG_MIGRATIONS``/``_MY_MIGRATIONS`` (old version -> function that
upgrades by one version), run under the same lock when an older table is
opened. A table written by a newer version, with an unreadable version, with
another key codec, or not made by this library raises
:class:`ContextSchemaError`.

Exactness and atomicity of ``update`` and ``increment``.

* PostgreSQL: one statement each, ``INSERT ... ON CONFLICT (k) DO UPDATE SET
  v = <table>_update(c.v, excluded.v, max_size) RETURNING v`` (and
  ``<table>_increment``). The PL/pgSQL functions merge at the text level:
  ``json_each(v::json)`` gives each member's original value text, and the
  result is ``'{' || string_agg(to_json(key)::text || ':' || value, ',') ||
  '}'`` over the old members (patched ones replaced in place) and then the new
  patch members, so every untouched value keeps its exact text (``to_json``
  escapes keys exactly as Python's ``json`` does). ``json_each`` cannot
  de-escape ``\\u0000``; documents holding that escape go through an exact,
  reversible rewrite first (``\\\\`` -> ``\\u005c``, SOH -> SOH SOH, NUL -> SOH
  STX; inverted afterwards), which ``_nul_hide``/``_nul_show`` implement.
  ``increment`` adds integer texts as ``numeric`` (exact for every 64-bit
  value; results outside ``[-2**63, 2**64)`` are refused) and uses ``float8``
  when either side is a float, printed with ``extra_float_digits=3`` (the
  shortest text that reads back as the same double on PostgreSQL >= 12) plus
  ``.0`` when it would read back as an int: the same double Python computes,
  though the text may differ (``1e+15`` for ``1000000000000000.0``). A
  non-number raises SQLSTATE ``CF001`` (-> :class:`ContextValueError`); a
  merged value over ``max_value_size`` raises ``CF002`` (->
  :class:`ContextValueTooLargeError`) inside the statement, so nothing
  oversized is stored. ``ON CONFLICT DO UPDATE`` locks the row, so concurrent
  updates of one key serialise and none is lost.
* MariaDB/MySQL: its JSON functions cannot do this exactly (``JSON_SET`` of an
  extracted value goes through MariaDB's number formatting, arithmetic on
  ``JSON_EXTRACT`` is done in doubles, and an expression cannot raise), so
  ``update``/``increment`` run ``SELECT v ... FOR UPDATE``, merge in Python
  and write back in one short transaction (exact by construction, atomic by
  the row lock; deadlocks between first-time creators are retried).

Transactions and errors.

* Single ``set``/``get``/``delete``/``update``/``increment`` are one
  autocommit statement. Batches (``set_many``, ``delete_many``) run in one
  transaction: a failure, including a connection dropped mid-batch, rolls the
  whole batch back, and the error says that nothing was written. PostgreSQL
  batches of 1,000 entries or more first look up whether any stored key lies
  between the batch's lowest and highest key (one index probe): if none
  does, no entry can conflict and the batch is ``COPY``-ed straight into the
  table (under a savepoint: a key committed meanwhile by another session
  makes the ``COPY`` fail with a unique violation, and the batch then takes
  the other path); otherwise it is ``COPY``-ed into a per-session temporary
  table and upserted with one ``INSERT ... SELECT ... ON CONFLICT``. The
  direct ``COPY`` takes ~0.17 s of the server for 100,000 small entries, the
  upsert ~0.40 s (text and binary ``COPY`` formats measured alike; text is
  used). Smaller batches are one ``INSERT ... SELECT FROM unnest(...) ON
  CONFLICT``. MariaDB batches are multi-row ``INSERT ... ON DUPLICATE KEY
  UPDATE`` statements. Every batch writes (and deletes) its rows in
  encoded-key order, whatever order they were given in (the temporary table
  is read ``ORDER BY k``): two batches over the same keys then lock them in
  the same order, so one waits for the other instead of deadlocking.
  Multi-chunk ``get_many`` reads one snapshot (``REPEATABLE READ``).
* Driver exceptions never leak: they become :class:`ContextStoreError` (whose
  ``__cause__`` is the driver error) naming the server as ``host:port/db``
  and the operation, never the password; a connection that cannot be opened
  gives ``"<operation>: cannot connect to <server> host:port/db as 'user':
  <reason>"`` (a wrong password included). Deadlocks and serialization
  failures (which roll the whole transaction back) are retried, the whole
  batch again, with backoff for up to ``timeout`` seconds, then raise
  :class:`ContextStoreBusyError` (for a batch it says that nothing of it was
  written); waiting for a pooled connection is bounded the same way.
  ``connect_timeout`` (5 s) bounds connection attempts. A server-side
  ``statement_timeout`` (e.g. set for the role) ends a waiting statement with
  :class:`ContextStoreError`; Ctrl-C cancels it (PostgreSQL).
* A connection that failed is discarded (with every idle one, which a server
  restart has broken too); the next call connects again.
* Connections: one of the pool's connections is the store's *hot*
  connection, taken with a non-blocking lock (as ``RedisContextStore`` does):
  a call that finds it free uses it without the pool's condition variable,
  which is the single-threaded case; a call that finds it busy takes an idle
  connection, opens one (up to ``pool_size`` in all) or waits for one, the
  hot one included.
* Processes: the store pickles by configuration (URL with its password, table,
  options): the copy opens its own connections to the same table. A store
  inherited through ``fork()`` never touches its parent's sockets: the child's
  pool starts empty, and the inherited connections are kept, unused and
  unclosed (closing would end the parent's sessions).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

from ._gc import gc_paused
from .base_store import (
    BaseContextStore,
    Metadata,
    Number,
    apply_increment,
    check_increment,
    check_prefix,
    iter_pairs,
)
from .exceptions import (
    ContextConfigurationError,
    ContextSchemaError,
    ContextSerializationError,
    ContextStoreBusyError,
    ContextStoreClosedError,
    ContextStoreError,
    ContextValueError,
    ContextValueTooLargeError,
    MissingDependencyError,
    UnsupportedKeyError,
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
from .urls import decode, mask_secrets, mask_url, read_options, split_host, split_options, split_url
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

__all__ = ["MAX_KEY_SIZE", "SCHEMA_VERSION", "DBContextStore", "DatabaseContextStore"]

T = TypeVar("T")

#: Version of the table layout (and SQL functions) this module writes and reads.
SCHEMA_VERSION = 1
#: old version -> function(cursor, qualified table name) upgrading by one version.
_PG_MIGRATIONS: dict[int, Callable[[Any, str], None]] = {}
_MY_MIGRATIONS: dict[int, Callable[[Any, str], None]] = {}

#: Longest encoded key (namespace included) the SQL stores accept, in bytes.
MAX_KEY_SIZE = 2048

_PAGE_SIZE = 1000  # rows per page of scan()/items()
_PG_READ_CHUNK = 10_000  # keys per SELECT ... = ANY(%s)
_PG_COPY_MIN = 1000  # smaller batches use one INSERT ... SELECT FROM unnest(...)
_MY_READ_CHUNK = 2000  # keys per SELECT ... IN (...)
_MY_WRITE_CHUNK = 5000  # rows per executemany() call (PyMySQL splits by statement size too)
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")
_LOCK_CLASS = 0x43460001  # first key of PostgreSQL advisory locks taken by this module
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1

_PG_SCHEMES = {"postgresql": "", "postgres": "", "postgresql+psycopg": "", "postgresql+psycopg2": ""}
_MY_SCHEMES = {"mysql": "", "mariadb": "", "mysql+pymysql": "", "mariadb+pymysql": "", "mysql+mysqldb": ""}
#: URL schemes served by this module (registered in ``registry._registry``).
SCHEMES = (*_PG_SCHEMES, *_MY_SCHEMES)

_monotonic = time.monotonic


class _ConnectError(ContextStoreError):
    """A connection could not be opened (restated with the operation by ``_Backend._checkout``)."""


class _NumberOutOfRangeError(ContextValueError, ContextSerializationError):
    """An increment whose result JSON cannot hold (an int outside 64 bits, an infinite float).

    A :class:`ContextValueError`, and also a :class:`ContextSerializationError`
    as the other stores raise for the same result.
    """


# --------------------------------------------------------------------------- configuration


class _Target:
    """Where a store connects: parsed from its URL. Its repr never shows the password."""

    __slots__ = ("database", "dialect", "host", "password", "port", "scheme", "user")

    def __init__(self, url: str) -> None:
        if not isinstance(url, str):
            raise ContextConfigurationError(f"a database URL must be a string, got {type(url).__name__}")
        parts = split_url(url)
        scheme = parts.scheme
        if scheme in _PG_SCHEMES:
            self.dialect = "postgresql"
        elif scheme in _MY_SCHEMES:
            self.dialect = "mysql"
        else:
            raise ContextConfigurationError(
                f"DBContextStore serves {', '.join(s + '://' for s in SCHEMES)} URLs, "
                f"not {scheme or 'no scheme'}:// (use sqlite:/// for SQLiteContextStore)"
            )
        if "?" in url:
            raise ContextConfigurationError("internal: the URL query must be split off first")
        self.scheme = scheme
        postgres = self.dialect == "postgresql"
        host, self.port = split_host(parts.hosts, 5432 if postgres else 3306, url)
        self.host = (host if host.startswith("/") else host.lower()) or None  # "/...": a socket folder
        self.user = parts.user
        self.password = parts.password
        path = decode(parts.path.lstrip("/"), "database name", url)
        if "/" in path:
            raise ContextConfigurationError(f"the database name in {mask_url(url)!r} contains '/'")
        if not path:  # libpq would pick a default database and create the tables there
            raise ContextConfigurationError(
                f"a {'PostgreSQL' if postgres else 'MariaDB/MySQL'} URL must name a database: "
                f"{'postgresql://user@host:5432' if postgres else 'mysql://user@host:3306'}/DBNAME, "
                f"got {mask_url(url)!r}"
            )
        self.database = path

    @property
    def server(self) -> str:
        """``host:port/db``: how errors name the server."""
        host = self.host or ("local socket" if self.dialect == "postgresql" else "localhost")
        return f"{host}:{self.port}/{self.database or ''}"

    def safe_url(self) -> str:
        """The URL without its password."""
        user = f"{_quote(self.user)}@" if self.user else ""
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{user}{host}:{self.port}/{_quote(self.database or '')}"

    def url(self) -> str:
        """The full URL, password included (for pickling only)."""
        if self.password is None:
            return self.safe_url()
        user = _quote(self.user or "")
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        return (
            f"{self.scheme}://{user}:{_quote(self.password)}@{host}:{self.port}/"
            f"{_quote(self.database or '')}"
        )

    def scrub(self, text: str) -> str:
        """``text`` with the password (if any) blanked out."""
        return mask_secrets(text, secrets=(self.password,))




def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


#: Operations that write in one autocommit statement (a lost connection leaves their outcome unknown).
_AUTOCOMMIT_WRITES = frozenset({"set", "delete", "clear", "update", "increment"})


def _check_number(name: str, value: Any, *, minimum: float, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or not (minimum <= value < float("inf"))
    ):
        kind = "an int" if integer else "a finite number"
        raise ContextConfigurationError(f"{name} must be {kind} >= {minimum:g}, got {value!r}")
    return value if integer else float(value)


# --------------------------------------------------------------------------- the pool


_pools: weakref.WeakSet[_Pool] = weakref.WeakSet()
_inherited: list[Any] = []  # connections inherited through fork(): never used, never closed


class _Pool:
    """A small thread-safe pool: at most ``size`` connections, created on demand.

    One of them is the *hot* connection, taken with a non-blocking lock: a caller
    that finds it free uses it without going through the pool's condition
    variable (the common single-threaded case); one that finds it busy takes an
    idle connection, opens one (up to ``size``), or waits for either, or for the
    hot one. The hot connection is never in ``_idle``.
    """

    def __init__(self, connect: Callable[[], Any], close: Callable[[Any], None], size: int) -> None:
        self._connect = connect
        self._close_conn = close
        self._size = size
        self._idle: list[Any] = []
        self._all: set[Any] = set()  # every live connection of this pool (fork handling)
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._waiting = 0  # callers inside _get (a hint for put() of the hot connection)
        self._hot: Any = None
        self._hot_lock = threading.Lock()
        _pools.add(self)

    def get(self, deadline: float) -> Any:
        lock = self._hot_lock
        if lock.acquire(False):
            hot = self._hot
            if hot is not None:
                return hot
            try:
                hot = self._get(deadline, True)
            except BaseException:
                lock.release()
                raise
            self._hot = hot
            return hot
        return self._get(deadline, False)

    def _get(self, deadline: float, for_hot: bool) -> Any:
        cond = self._cond
        with cond:
            self._waiting += 1
            try:
                while True:
                    if self._closed:
                        raise ContextStoreClosedError("the store is closed; open a new store to continue")
                    if self._idle:
                        return self._idle.pop()
                    if len(self._all) < self._size:
                        placeholder = object()
                        self._all.add(placeholder)
                        break
                    # _waiting was counted before this test: a put() of the hot connection
                    # after it notifies us.
                    if not for_hot and self._hot is not None and self._hot_lock.acquire(False):
                        if self._hot is not None:
                            return self._hot
                        self._hot_lock.release()
                    remaining = deadline - _monotonic()
                    if remaining <= 0:
                        raise ContextStoreBusyError(
                            f"all {self._size} pooled connections stayed in use; open the store "
                            "with a larger pool_size or timeout"
                        )
                    cond.wait(remaining)
            finally:
                self._waiting -= 1
        try:
            conn = self._connect()
        except BaseException:
            with cond:
                self._all.discard(placeholder)
                cond.notify()
            raise
        with cond:
            self._all.discard(placeholder)
            self._all.add(conn)
            if self._closed:
                self._all.discard(conn)
                closed = True
            else:
                closed = False
        if closed:
            self._close_conn(conn)
            raise ContextStoreClosedError("the store is closed; open a new store to continue")
        return conn

    def put(self, conn: Any) -> None:
        if conn is self._hot:
            self._hot_lock.release()
            if self._closed:
                self._drop_hot()
            elif self._waiting:
                with self._cond:
                    self._cond.notify()
            return
        with self._cond:
            if not self._closed and conn in self._all:
                self._idle.append(conn)
                self._cond.notify()
                return
            self._all.discard(conn)
        self._close_conn(conn)

    def _drop_hot(self) -> None:
        """Close the hot connection if no caller is using it (after close())."""
        if self._hot_lock.acquire(False):
            hot, self._hot = self._hot, None
            if hot is not None:
                with self._cond:
                    self._all.discard(hot)
            self._hot_lock.release()
            if hot is not None:
                self._close_conn(hot)

    def discard(self, conn: Any, *, idle_too: bool = False) -> None:
        """Drop a broken connection (and, after a connection failure, the idle ones)."""
        doomed = [conn]
        if conn is self._hot:
            self._hot = None
            self._hot_lock.release()
        elif idle_too and self._hot_lock.acquire(False):  # the hot connection, when idle, too
            if self._hot is not None:
                doomed.append(self._hot)
                self._hot = None
            self._hot_lock.release()
        with self._cond:
            for c in doomed:
                self._all.discard(c)
            if idle_too:
                doomed.extend(self._idle)
                for c in self._idle:
                    self._all.discard(c)
                self._idle.clear()
            self._cond.notify_all()
        for c in doomed:
            self._close_conn(c)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            doomed = list(self._idle)
            self._idle.clear()
            for c in doomed:
                self._all.discard(c)
            self._cond.notify_all()
        for c in doomed:
            self._close_conn(c)
        self._drop_hot()  # or, if in use, its put() closes it

    def after_fork_in_child(self) -> None:
        # The parent's sockets stay the parent's: keep the objects (closing them would
        # send a terminate message on the shared socket) and start with no connection.
        _inherited.extend(self._all)
        self._all = set()
        self._idle = []
        self._waiting = 0
        self._hot = None
        self._hot_lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------- backends


class _Backend:
    """What one database needs: connections, SQL, and the encoded-key operations.

    Shared by a store and its namespace views. Methods take encoded keys
    (namespace included) and JSON texts.
    """

    name = ""
    retry_codes: ClassVar[frozenset[Any]] = frozenset()

    def __init__(self, target: _Target, table: str, pool_size: int, connect_timeout: float,
                 timeout: float) -> None:
        self.target = target
        self.table = table
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.pool = _Pool(self._connect, self._close_conn, pool_size)
        self.where = f"{self.name} {target.server} (table {table!r})"

    # ---------------------------------------------------------------- driver hooks

    def _connect(self) -> Any:
        raise NotImplementedError

    def _close_conn(self, conn: Any) -> None:
        raise NotImplementedError

    def _is_driver_error(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def _error_code(self, exc: BaseException) -> Any:
        raise NotImplementedError

    def _is_broken(self, conn: Any, exc: BaseException) -> bool:
        raise NotImplementedError

    def _begin(self, conn: Any, snapshot: bool) -> None:
        raise NotImplementedError

    def _commit(self, conn: Any) -> None:
        raise NotImplementedError

    def _rollback(self, conn: Any) -> bool:
        """Roll back whatever is open; return False if the connection is unusable."""
        raise NotImplementedError

    def _translate(self, op: str, exc: BaseException) -> BaseException | None:
        """A library error for a driver error that means something to the caller."""
        return None

    # ---------------------------------------------------------------- running

    def run(self, op: str, fn: Callable[[Any], T], *, tx: bool = False, snapshot: bool = False) -> T:
        """Run ``fn(conn)`` on a pooled connection (in one transaction if ``tx``).

        Deadlocks and serialization failures roll the whole transaction back
        and run ``fn`` again (on whichever connection the retry gets) until
        ``timeout``; other driver errors become ContextStoreError.
        """
        deadline = _monotonic() + self.timeout
        delay = 0.005
        while True:
            conn = self._checkout(op, deadline)
            phase = "begin"
            try:
                if tx:
                    self._begin(conn, snapshot)
                phase = "body"
                result = fn(conn)
                if tx:
                    phase = "commit"
                    self._commit(conn)
            except BaseException as exc:
                delay = self._recover(op, conn, exc, deadline, delay, tx=tx, phase=phase)
                continue
            self.pool.put(conn)
            return result

    def _recover(
        self, op: str, conn: Any, exc: BaseException, deadline: float, delay: float, *,
        tx: bool = False, phase: str = "body",
    ) -> float:
        """After ``exc`` on ``conn``: give the connection back (or drop it), then either wait
        before a retry (returning the next backoff delay) or raise what the caller sees."""
        driver = self._is_driver_error(exc)
        broken = (driver and self._is_broken(conn, exc)) or not self._rollback(conn)
        if broken:
            self.pool.discard(conn, idle_too=True)
        else:
            self.pool.put(conn)
        if not driver:
            raise exc
        if not broken and self._error_code(exc) in self.retry_codes:
            now = _monotonic()
            if now < deadline:
                time.sleep(min(delay * random.uniform(0.5, 1.5), deadline - now))
                return min(delay * 2, 0.2)
            raise ContextStoreBusyError(
                f"{self.where}: {op} kept failing on lock conflicts for more than "
                f"{self.timeout:g}s; retry later or open the store with a larger timeout "
                f"({self._message(exc)}){self._outcome(op, exc, tx=tx, phase=phase, broken=False)}"
            ) from exc
        translated = self._translate(op, exc)
        if translated is not None:
            raise translated from exc
        raise self._wrap(op, exc, tx=tx, phase=phase, broken=broken) from exc

    def _message(self, exc: BaseException) -> str:
        text = str(exc).strip().splitlines()
        return self.target.scrub(f"{type(exc).__name__}: {text[0] if text else ''}")

    def _wrap(self, op: str, exc: BaseException, *, tx: bool, phase: str, broken: bool) -> ContextStoreError:
        note = self._outcome(op, exc, tx=tx, phase=phase, broken=broken)
        return ContextStoreError(f"{self.where}: {op} failed: {self._message(exc)}{note}")

    def _outcome(self, op: str, exc: BaseException, *, tx: bool, phase: str, broken: bool) -> str:
        """What a failed call did to the data, as a note for its error message."""
        note = ""
        if tx and op not in ("get_many", "update", "increment"):
            if phase == "commit" and broken:
                note = "; the connection was lost during COMMIT, so whether the batch was written is unknown"
            else:
                note = "; the transaction was rolled back: nothing of this batch was written"
        elif tx:
            note = "; the transaction was rolled back" if phase != "commit" or not broken else (
                "; the connection was lost during COMMIT: the outcome is unknown"
            )
        elif broken and op in _AUTOCOMMIT_WRITES and not self._server_refused(exc):
            note = (
                "; the connection was lost during the statement, so it may or may not "
                "have been applied"
            )
        if broken:
            note += " (the connection was dropped; the next call reconnects)"
        return note

    def _server_refused(self, exc: BaseException) -> bool:
        """Whether the server answered with an error (the statement was not applied), rather
        than the connection being lost: a server error has a code (a PostgreSQL SQLSTATE, a
        MariaDB code below 2000; 2000-2999 are the client library's own, e.g. 2013, lost)."""
        code = self._error_code(exc)
        return code is not None and not (isinstance(code, int) and 2000 <= code < 3000)

    def connect_error(self, exc: BaseException) -> ContextStoreError:
        user = f" as {self.target.user!r}" if self.target.user else ""
        return _ConnectError(
            f"cannot connect to {self.name} server {self.target.server}{user}: {self._message(exc)}"
        )

    def _checkout(self, op: str, deadline: float) -> Any:
        """A connection from the pool; a failure to connect names the operation that needed it."""
        try:
            return self.pool.get(deadline)
        except _ConnectError as exc:
            raise ContextStoreError(f"{op}: {exc}") from exc.__cause__

    def close(self) -> None:
        self.pool.close()

    # ---------------------------------------------------------------- operations (abstract)

    def ensure_schema(self, json_column: bool, json_index: bool) -> None:
        raise NotImplementedError

    def put(self, k: bytes, v: str) -> None:
        raise NotImplementedError

    def fetch(self, k: bytes) -> str | None:
        raise NotImplementedError

    def remove(self, k: bytes) -> bool:
        raise NotImplementedError

    def has(self, k: bytes) -> bool:
        raise NotImplementedError

    def put_many(self, rows: dict[bytes, str]) -> None:
        raise NotImplementedError

    def fetch_many(self, keys: list[bytes]) -> dict[bytes, str]:
        raise NotImplementedError

    def remove_many(self, keys: list[bytes]) -> int:
        raise NotImplementedError

    def page(self, op: str, with_values: bool, low: bytes, high: bytes, first: bool) -> list[Any]:
        raise NotImplementedError

    def count(self, low: bytes, high: bytes) -> int:
        raise NotImplementedError

    def clear(self, low: bytes, high: bytes) -> int:
        raise NotImplementedError

    def update(self, k: bytes, patch: Metadata, patch_text: str, max_size: int | None) -> str:
        raise NotImplementedError

    def increment(self, k: bytes, key: Key, field: str, by: Number, max_size: int | None) -> str:
        raise NotImplementedError


def _in_key_order(rows: dict[bytes, str]) -> tuple[list[bytes], list[str]]:
    """A batch's keys and texts in encoded-key order: every SQL batch writes (and deletes)
    its rows in this order, so that concurrent batches over the same keys cannot deadlock."""
    return in_key_order(list(rows), list(rows.values()))


def _increment_text(current: Metadata | None, key: Key, field: str, by: Number,
                    max_size: int | None) -> str:
    """Python's increment of ``current`` (exact by construction), as JSON text."""
    new = apply_increment(current, key, field, by)
    result = new[field]
    if (type(result) is int and not _INT_MIN <= result <= _INT_MAX) or (
        type(result) is float and result - result != 0.0
    ):
        raise _NumberOutOfRangeError(
            f"cannot increment field {field!r} of {key!r} by {by!r}: the result {result!r} is "
            "outside what metadata can hold (ints in [-2**63, 2**64), finite floats)"
        )
    return encode_value(new, max_size)


# --------------------------------------------------------------------------- PostgreSQL


def _pg_functions(q: str, t: str) -> list[str]:
    """CREATE statements of the SQL functions of table ``t`` (qualified prefix ``q``)."""
    fn = f'{q}."{t}_'  # e.g. "public"."context_  + merge"
    return [
        # Exact, reversible rewrite that removes the \u0000 escape (which json_each cannot
        # de-escape): escaped backslashes become \u005c (which nobody else writes), then
        # SOH -> SOH SOH and NUL -> SOH STX at the escape level.
        rf"""CREATE OR REPLACE FUNCTION {fn}nul_hide"(t text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $f$
SELECT replace(replace(replace(t, E'\\\\', E'\\u005c'), E'\\u0001', E'\\u0001\\u0001'),
               E'\\u0000', E'\\u0001\\u0002')
$f$""",
        rf"""CREATE OR REPLACE FUNCTION {fn}nul_show"(t text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $f$
SELECT replace(replace(replace(replace(replace(t, E'\\\\', E'\\u005c'),
       E'\\u0001\\u0001', chr(1)), E'\\u0001\\u0002', E'\\u0000'), chr(1), E'\\u0001'),
       E'\\u005c', E'\\\\')
$f$""",
        # Shallow merge of two JSON object texts, keeping every value's exact text:
        # old members in order (patched ones replaced in place), then new patch members.
        rf"""CREATE OR REPLACE FUNCTION {fn}merge"(old text, patch text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $f$
DECLARE
  nul boolean := strpos(old, E'\\u0000') > 0 OR strpos(patch, E'\\u0000') > 0;
  merged text;
BEGIN
  IF nul THEN
    old := {fn}nul_hide"(old);
    patch := {fn}nul_hide"(patch);
  END IF;
  SELECT '{{' || coalesce(string_agg(to_json(coalesce(o.key, p.key))::text || ':'
                 || coalesce(p.value, o.value)::text, ',' ORDER BY o.ord, p.ord), '') || '}}'
    INTO merged
    FROM json_each(old::json) WITH ORDINALITY AS o(key, value, ord)
    FULL JOIN json_each(patch::json) WITH ORDINALITY AS p(key, value, ord)
      ON o.key COLLATE "C" = p.key COLLATE "C";
  IF nul THEN
    merged := {fn}nul_show"(merged);
  END IF;
  RETURN merged;
END
$f$""",
        rf"""CREATE OR REPLACE FUNCTION {fn}update"(old text, patch text, max_size bigint)
RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $f$
DECLARE
  merged text := {fn}merge"(old, patch);
BEGIN
  IF max_size IS NOT NULL AND octet_length(merged) > max_size THEN
    RAISE EXCEPTION USING ERRCODE = 'CF002', MESSAGE = format(
      'metadata encodes to %s bytes of JSON, over this store''s max_value_size of %s bytes',
      octet_length(merged), max_size);
  END IF;
  RETURN merged;
END
$f$""",
        # field: the field name as a JSON string; by: a JSON number (Python's text of it).
        rf"""CREATE OR REPLACE FUNCTION {fn}increment"(old text, field text, by text, max_size bigint)
RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET extra_float_digits = 3 AS $f$
DECLARE
  nul boolean := strpos(old, E'\\u0000') > 0 OR strpos(field, E'\\u0000') > 0;
  cur text;
  result text;
  n numeric;
BEGIN
  SELECT e.value::text INTO cur
    FROM json_each((CASE WHEN nul THEN {fn}nul_hide"(old) ELSE old END)::json) AS e
   WHERE e.key COLLATE "C" =
         ((CASE WHEN nul THEN {fn}nul_hide"(field) ELSE field END)::json #>> '{{}}') COLLATE "C";
  IF cur IS NULL THEN
    cur := '0';
  ELSIF cur !~ '^-?[0-9]' THEN
    RAISE EXCEPTION USING ERRCODE = 'CF001', MESSAGE = left(cur, 200);
  END IF;
  IF cur ~ '^-?[0-9]+$' AND by ~ '^-?[0-9]+$' THEN
    n := cur::numeric + by::numeric;
    IF n < -9223372036854775808 OR n > 18446744073709551615 THEN
      RAISE EXCEPTION USING ERRCODE = 'CF003', MESSAGE = n::text;
    END IF;
    result := n::text;
  ELSE
    result := (cur::float8 + by::float8)::text;
    IF result !~ '[.eEnN]' THEN
      result := result || '.0';
    END IF;
  END IF;
  RETURN {fn}update"(old, '{{' || field || ':' || result || '}}', max_size);
END
$f$""",
    ]


class _PGSQL:
    """The statements of one PostgreSQL table."""

    def __init__(self, schema: str, table: str) -> None:
        q = _pg_ident(schema)
        t = f"{q}.{_pg_ident(table)}"
        fn = f'{q}."{table}_'
        self.qualified = t
        self.meta = f"{q}.{_pg_ident(table + '_meta')}"
        self.upsert = f"INSERT INTO {t} (k, v) VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        self.get = f"SELECT v FROM {t} WHERE k = %s"
        self.exists = f"SELECT 1 FROM {t} WHERE k = %s"
        self.delete = f"DELETE FROM {t} WHERE k = %s"
        self.get_any = f"SELECT k, v FROM {t} WHERE k = ANY(%b)"
        self.delete_any = f"DELETE FROM {t} WHERE k = ANY(%b)"
        self.unnest = (
            f"INSERT INTO {t} (k, v) SELECT * FROM unnest(%b::bytea[], %b::text[]) "
            "ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        )
        self.load_table = "cf_load"
        self.load_create = "CREATE TEMP TABLE IF NOT EXISTS cf_load (k bytea, v text) ON COMMIT DELETE ROWS"
        self.load_copy = "COPY cf_load (k, v) FROM STDIN"
        self.load_insert = (
            f"INSERT INTO {t} (k, v) SELECT k, v FROM cf_load ORDER BY k "
            "ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        )
        # set_many of keys none of which can exist: COPY straight into the table
        self.range_taken = f"SELECT EXISTS (SELECT 1 FROM {t} WHERE k >= %s AND k <= %s)"
        self.direct_copy = f"COPY {t} (k, v) FROM STDIN"
        self.count = f"SELECT count(*) FROM {t} WHERE k >= %s AND k < %s"
        self.clear = f"DELETE FROM {t} WHERE k >= %s AND k < %s"
        self.pages = {
            (cols, first): f"SELECT {cols} FROM {t} WHERE k {'>=' if first else '>'} %s AND k < %s "
            f"ORDER BY k LIMIT {_PAGE_SIZE}"
            for cols in ("k", "k, v")
            for first in (True, False)
        }
        self.update = (
            f"INSERT INTO {t} AS c (k, v) VALUES (%s, %s) ON CONFLICT (k) DO UPDATE "
            f'SET v = {fn}update"(c.v, excluded.v, %s) RETURNING v'
        )
        self.increment = (
            f"INSERT INTO {t} AS c (k, v) VALUES (%s, %s) ON CONFLICT (k) DO UPDATE "
            f'SET v = {fn}increment"(c.v, %s, %s, %s) RETURNING v'
        )
        self.increment_existing = (
            f'UPDATE {t} AS c SET v = {fn}increment"(c.v, %s, %s, %s) WHERE k = %s RETURNING v'
        )
        # Per-call statements, prepared once per connection and run through libpq directly.
        b, x, i8 = _BYTEA, _TEXT, _INT8
        self.p_upsert = _Stmt(b"cf_set", self.upsert, (b, x))
        self.p_get = _Stmt(b"cf_get", self.get, (b,))
        self.p_exists = _Stmt(b"cf_exists", self.exists, (b,))
        self.p_delete = _Stmt(b"cf_delete", self.delete, (b,))
        self.p_update = _Stmt(b"cf_update", self.update, (b, x, i8))
        self.p_increment = _Stmt(b"cf_increment", self.increment, (b, x, x, x, i8))


# libpq's ExecStatus.TUPLES_OK (statuses above it are errors) and TransactionStatus values
_PG_TUPLES_OK = 2
_PG_IDLE, _PG_ACTIVE = 0, 1
#: invalid_sql_statement_name (no such prepared statement), duplicate_prepared_statement
_PG_STMT_STATES = frozenset({"26000", "42P05"})


def _pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_BYTEA, _TEXT, _INT8 = 17, 25, 20  # type OIDs
_FORMAT = {_BYTEA: 1, _TEXT: 0, _INT8: 0}  # parameter formats: bytea binary (raw bytes), others text


class _Stmt:
    """A statement prepared on each connection at its first use: name, SQL ($n), parameter types."""

    __slots__ = ("formats", "name", "sql", "types")

    def __init__(self, name: bytes, sql: str, types: tuple[int, ...]) -> None:
        self.name = name
        n = iter(range(1, len(types) + 1))
        self.sql = re.sub("%s", lambda _: f"${next(n)}", sql).encode()
        self.types = types
        self.formats = tuple(_FORMAT[t] for t in types)


class _PGConn:
    """A pooled PostgreSQL connection and what it knows of its session's state.

    What it records must stay true whatever happens to a transaction.
    ``loader`` is set once the batch transaction that created the load table
    ``cf_load`` has committed (a rollback takes the table away). ``prepared``
    names the per-call statements, prepared in autocommit by
    ``_PostgresBackend._call`` (``PREPARE`` is not transactional), but
    psycopg, once it has prepared statements of its own (it does after a few
    runs of one), answers every ``ROLLBACK`` it sees (``rollback()``,
    ``ROLLBACK TO SAVEPOINT``) with ``DEALLOCATE ALL``: after those,
    :meth:`forget_deallocated` re-reads what the session still has. No session
    setting is changed after connecting; a new connection gets a new
    ``_PGConn``.
    """

    __slots__ = ("conn", "cur", "loader", "pgconn", "prepared", "wait")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.cur = conn.cursor()
        self.loader = False  # whether the session's COPY target table exists
        self.pgconn = conn.pgconn  # libpq, for the per-call statements
        self.wait = conn.wait  # psycopg's interruptible wait (Ctrl-C cancels the query)
        self.prepared: set[bytes] = set()  # names of the _Stmt prepared in this session

    def forget_deallocated(self) -> None:
        """Keep in ``prepared`` only the statements the session still has (one query)."""
        if self.prepared:
            rows = self.cur.execute("SELECT name FROM pg_prepared_statements").fetchall()
            self.prepared.intersection_update(name.encode() for (name,) in rows)


class _PostgresBackend(_Backend):
    name = "PostgreSQL"
    retry_codes = frozenset({"40P01", "40001", "55P03"})

    def __init__(self, target: _Target, table: str, pool_size: int, connect_timeout: float,
                 timeout: float) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise MissingDependencyError.for_extra("postgres", "psycopg") from exc
        from psycopg import errors, generators

        self._psycopg = psycopg
        self._execute = generators.execute  # send + fetch, non-blocking (see _call)
        self._error_from = errors.error_from_result
        self._unique_violation = errors.UniqueViolation
        super().__init__(target, table, pool_size, connect_timeout, timeout)
        self.sql: _PGSQL | None = None

    def _connect(self) -> _PGConn:
        t = self.target
        params: dict[str, Any] = {
            "host": t.host,
            "port": t.port,
            "user": t.user,
            "password": t.password,
            "dbname": t.database,
            "connect_timeout": max(1, round(self.connect_timeout)),
            "application_name": "context-framework",
            "client_encoding": "UTF8",
        }
        params = {k: v for k, v in params.items() if v is not None}
        try:
            conn = self._psycopg.connect(autocommit=True, **params)
        except self._psycopg.Error as exc:
            raise self.connect_error(exc) from exc
        return _PGConn(conn)

    def _close_conn(self, conn: _PGConn) -> None:
        try:
            conn.conn.close()
        except Exception:
            pass

    def _is_driver_error(self, exc: BaseException) -> bool:
        return isinstance(exc, self._psycopg.Error)

    def _error_code(self, exc: BaseException) -> Any:
        return getattr(exc, "sqlstate", None)

    def _is_broken(self, conn: _PGConn, exc: BaseException) -> bool:
        return bool(conn.conn.broken or conn.conn.closed)

    def _begin(self, conn: _PGConn, snapshot: bool) -> None:
        conn.cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if snapshot else "BEGIN")

    def _commit(self, conn: _PGConn) -> None:
        conn.cur.execute("COMMIT")

    def _rollback(self, conn: _PGConn) -> bool:
        c = conn.conn
        if c.broken or c.closed:
            return False
        try:
            status = c.info.transaction_status
            if status == _PG_ACTIVE:  # a query still running (interrupted outside psycopg's wait)
                return False
            if status != _PG_IDLE:
                c.rollback()
                conn.forget_deallocated()
            return True
        except Exception:
            return False

    def _translate(self, op: str, exc: BaseException) -> BaseException | None:
        code = self._error_code(exc)
        diag = getattr(exc, "diag", None)
        text = (diag.message_primary if diag is not None else None) or str(exc)
        if code == "CF002":
            return ContextValueTooLargeError(
                f"{text}; store less, or open the store with a larger max_value_size"
            )
        if code == "CF001":
            return ContextValueError(f"{op}: the field holds {text}, not a number")
        if code == "CF003":
            return _NumberOutOfRangeError(
                f"{op}: the result {text} is outside the integers metadata can hold [-2**63, 2**64)"
            )
        if code == "22003" and op == "increment":
            return _NumberOutOfRangeError(f"increment: the float result overflows ({text})")
        return None

    # ---------------------------------------------------------------- schema

    def ensure_schema(self, json_column: bool, json_index: bool) -> None:
        def body(conn: _PGConn) -> None:
            cur = conn.cur
            cur.execute("SELECT current_schema(), current_setting('server_encoding')")
            schema, encoding = cur.fetchone()
            if schema is None:
                raise ContextSchemaError(
                    f"{self.where}: no schema to use: search_path names none that exists"
                )
            if encoding.upper() not in ("UTF8", "UTF-8"):
                raise ContextSchemaError(
                    f"{self.where}: the database encoding is {encoding}, but context-framework "
                    "needs a UTF8 database to store metadata exactly"
                )
            self.sql = sql = _PGSQL(schema, self.table)
            state = self._schema_state(cur, sql)
            if state != (True, str(SCHEMA_VERSION), str(CODEC_VERSION)) or json_index:
                # A session lock, then a transaction that starts once the lock is granted, so
                # that it sees (in its catalog caches too) what the previous holder committed.
                lock = (_LOCK_CLASS, sql.qualified)
                cur.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", lock)
                try:
                    cur.execute("BEGIN")
                    self._create_or_upgrade(cur, sql, schema, json_column, json_index)
                    cur.execute("COMMIT")
                finally:
                    if not (conn.conn.broken or conn.conn.closed):
                        self._rollback(conn)
                        cur.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", lock)
            self._check_columns(cur, sql)

        self.run("open", body)

    def _schema_state(self, cur: Any, sql: _PGSQL) -> tuple[bool, str | None, str | None]:
        cur.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL", (sql.qualified, sql.meta)
        )
        has_table, has_meta = cur.fetchone()
        if not has_meta:
            return has_table, None, None
        cur.execute(f"SELECT key, value FROM {sql.meta} WHERE key IN ('schema_version', 'key_codec')")
        meta = dict(cur.fetchall())
        return has_table, meta.get("schema_version", ""), meta.get("key_codec", "")

    def _create_or_upgrade(
        self, cur: Any, sql: _PGSQL, schema: str, json_column: bool, json_index: bool
    ) -> None:
        has_table, version, codec = self._schema_state(cur, sql)
        q = _pg_ident(schema)
        if version is None:
            if has_table:
                raise ContextSchemaError(
                    f"{self.where}: table {self.table!r} was not created by context-framework "
                    "(it has no meta table); use another table= name"
                )
            j = (
                r", j jsonb GENERATED ALWAYS AS (CASE WHEN strpos(v, E'\\u0000') > 0 THEN NULL "
                "ELSE v::jsonb END) STORED"
                if json_column
                else ""
            )
            cur.execute(f"CREATE TABLE {sql.qualified} (k bytea PRIMARY KEY, v text NOT NULL{j})")
            cur.execute(f"CREATE TABLE {sql.meta} (key text PRIMARY KEY, value text NOT NULL)")
            for statement in _pg_functions(q, self.table):
                cur.execute(statement)
            cur.execute(
                f"INSERT INTO {sql.meta} (key, value) VALUES ('schema_version', %s), ('key_codec', %s)",
                (str(SCHEMA_VERSION), str(CODEC_VERSION)),
            )
        else:
            number = _parse_version(version, codec, self.where, self.table, _PG_MIGRATIONS)
            while number < SCHEMA_VERSION:
                _PG_MIGRATIONS[number](cur, sql.qualified)
                number += 1
                cur.execute(
                    f"UPDATE {sql.meta} SET value = %s WHERE key = 'schema_version'", (str(number),)
                )
        if json_index:
            cur.execute(
                "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'j' "
                "AND NOT attisdropped",
                (sql.qualified,),
            )
            if cur.fetchone() is None:
                raise ContextConfigurationError(
                    f"{self.where}: json_index=True needs the column j, which this table does not "
                    "have (it was created with json_column=False)"
                )
            cur.execute(
                f"CREATE INDEX IF NOT EXISTS {_pg_ident(self.table + '_j_gin')} "
                f"ON {sql.qualified} USING gin (j jsonb_path_ops)"
            )

    def _check_columns(self, cur: Any, sql: _PGSQL) -> None:
        cur.execute(f"SELECT * FROM {sql.qualified} LIMIT 0")
        columns = [d.name for d in cur.description or ()]
        if columns not in (["k", "v", "j"], ["k", "v"]):
            raise ContextSchemaError(
                f"{self.where}: table {self.table!r} has columns {columns}, not ['k', 'v', 'j'] "
                "(or ['k', 'v'])"
            )

    # ---------------------------------------------------------------- operations

    def _sql(self) -> _PGSQL:
        assert self.sql is not None
        return self.sql

    def _call(self, op: str, stmt: _Stmt, params: tuple[Any, ...]) -> Any:
        """Run one prepared statement (autocommit) and return its libpq result.

        The per-call path: no cursor, no adaptation, no row objects. The
        statement is prepared at its first use on each connection; parameters go
        as bytes (``bytea`` in binary). Waiting is psycopg's non-blocking wait,
        so signals are handled, and Ctrl-C cancels the query on the server
        before ``KeyboardInterrupt`` propagates (the connection stays usable).
        """
        pool = self.pool
        deadline = _monotonic() + self.timeout
        delay = 0.005
        name = stmt.name
        resynced = False
        while True:
            try:
                c = pool.get(deadline)
            except _ConnectError as exc:
                raise ContextStoreError(f"{op}: {exc}") from exc.__cause__
            try:
                pgconn = c.pgconn
                if name not in c.prepared:
                    pgconn.send_prepare(name, stmt.sql, param_types=stmt.types)
                    self._result(c, pgconn)
                    c.prepared.add(name)
                pgconn.send_query_prepared(name, params, stmt.formats)
                res = self._result(c, pgconn)
            except BaseException as exc:
                code = getattr(exc, "sqlstate", None)
                if code in _PG_STMT_STATES and not resynced and self._is_driver_error(exc):
                    # The session lost the statement (DEALLOCATE, a pooler's other session) or
                    # already has it: note what the server has and try once more.
                    (c.prepared.discard if code == "26000" else c.prepared.add)(name)
                    if not self._is_broken(c, exc) and self._rollback(c):
                        resynced = True
                        pool.put(c)
                        continue
                delay = self._recover(op, c, exc, deadline, delay)
                continue
            pool.put(c)
            return res

    def _result(self, c: _PGConn, pgconn: Any) -> Any:
        """The result of the query just sent; an error result is raised as psycopg's exception."""
        results = c.wait(self._execute(pgconn))
        res = results[-1]
        if res.status > _PG_TUPLES_OK or len(results) != 1:
            bad = next((r for r in results if r.status > _PG_TUPLES_OK), res)
            raise self._error_from(bad, encoding="utf-8")
        return res

    def put(self, k: bytes, v: str) -> None:
        self._call("set", self._sql().p_upsert, (k, v.encode()))

    def fetch(self, k: bytes) -> str | None:
        res = self._call("get", self._sql().p_get, (k,))
        if not res.ntuples:
            return None
        return res.get_value(0, 0).decode()  # type: ignore[no-any-return]

    def remove(self, k: bytes) -> bool:
        return bool(self._call("delete", self._sql().p_delete, (k,)).command_tuples)

    def has(self, k: bytes) -> bool:
        return self._call("exists", self._sql().p_exists, (k,)).ntuples > 0  # type: ignore[no-any-return]

    def put_many(self, rows: dict[bytes, str]) -> None:
        """Write ``rows`` in one transaction, in encoded-key order (see ``_in_key_order``)."""
        sql = self._sql()
        keys, texts = _in_key_order(rows)
        if len(keys) < _PG_COPY_MIN:
            self.run("set_many", lambda c: c.cur.execute(sql.unnest, (keys, texts)), tx=True)
            return
        low, high = keys[0], keys[-1]
        created: list[_PGConn] = []  # the connection whose transaction created cf_load

        def body(c: _PGConn) -> None:
            created.clear()  # a retry: what an earlier attempt created was rolled back
            cur = c.cur
            if self._range_is_free(cur, sql, low, high):
                # No stored key lies between the lowest and highest of the batch, so none
                # can conflict: COPY straight into the table. A row committed meanwhile by
                # another session makes it fail with a unique violation, and the batch
                # then takes the upsert path below.
                cur.execute("SAVEPOINT cf_copy")
                try:
                    self._copy_rows(cur, sql.direct_copy, zip(keys, texts))
                except self._unique_violation:
                    cur.execute("ROLLBACK TO SAVEPOINT cf_copy")
                    c.forget_deallocated()
                else:
                    return
            if not c.loader:
                cur.execute(sql.load_create)
                created.append(c)
            self._copy_rows(cur, sql.load_copy, zip(keys, texts))
            cur.execute(sql.load_insert)  # ... ORDER BY k: the rows are locked in key order

        self.run("set_many", body, tx=True)
        for c in created:
            c.loader = True  # only now that the transaction that created the table committed

    def _range_is_free(self, cur: Any, sql: _PGSQL, low: bytes, high: bytes) -> bool:
        """Whether no stored key lies in ``[low, high]`` (one index probe)."""
        return not cur.execute(sql.range_taken, (low, high)).fetchone()[0]

    def _copy_rows(self, cur: Any, statement: str, rows: Iterable[tuple[bytes, str]]) -> None:
        with cur.copy(statement) as copy:
            write_row = copy.write_row
            for row in rows:
                write_row(row)

    def fetch_many(self, keys: list[bytes]) -> dict[bytes, str]:
        sql = self._sql().get_any

        def body(c: _PGConn) -> dict[bytes, str]:
            found: dict[bytes, str] = {}
            cur = c.cur
            for i in range(0, len(keys), _PG_READ_CHUNK):
                cur.execute(sql, (keys[i : i + _PG_READ_CHUNK],))
                found.update(cur.fetchall())
            return found

        if len(keys) <= _PG_READ_CHUNK:
            return self.run("get_many", body)
        return self.run("get_many", body, tx=True, snapshot=True)

    def remove_many(self, keys: list[bytes]) -> int:
        sql = self._sql().delete_any
        keys = sorted(keys)  # distinct keys: see _in_key_order
        return int(self.run("delete_many", lambda c: c.cur.execute(sql, (keys,)).rowcount, tx=True))

    def page(self, op: str, with_values: bool, low: bytes, high: bytes, first: bool) -> list[Any]:
        sql = self._sql().pages["k, v" if with_values else "k", first]
        return self.run(op, lambda c: c.cur.execute(sql, (low, high)).fetchall())

    def count(self, low: bytes, high: bytes) -> int:
        sql = self._sql().count
        return int(self.run("count", lambda c: c.cur.execute(sql, (low, high)).fetchone()[0]))

    def clear(self, low: bytes, high: bytes) -> int:
        sql = self._sql().clear
        return int(self.run("clear", lambda c: c.cur.execute(sql, (low, high)).rowcount))

    def update(self, k: bytes, patch: Metadata, patch_text: str, max_size: int | None) -> str:
        res = self._call("update", self._sql().p_update, (k, patch_text.encode(), _int_param(max_size)))
        return res.get_value(0, 0).decode()  # type: ignore[no-any-return]

    def increment(self, k: bytes, key: Key, field: str, by: Number, max_size: int | None) -> str:
        sql = self._sql()
        if type(by) not in (int, float):
            by = float(by)
        field_json, by_json = dumps_json(field), dumps_json(by)
        try:
            fresh = _increment_text(None, key, field, by, max_size)
        except _NumberOutOfRangeError as out_of_range:
            # ``by`` alone is out of range: only an existing number can bring it back in.
            args2 = (field_json, by_json, max_size, k)
            try:
                row = self.run(
                    "increment", lambda c: c.cur.execute(sql.increment_existing, args2).fetchone()
                )
            except ContextValueError as exc:
                raise _increment_error(exc, key, field) from exc
            if row is None:
                raise out_of_range from None
            return row[0]  # type: ignore[no-any-return]
        params = (k, fresh.encode(), field_json.encode(), by_json.encode(), _int_param(max_size))
        try:
            res = self._call("increment", sql.p_increment, params)
        except ContextValueError as exc:
            raise _increment_error(exc, key, field) from exc
        return res.get_value(0, 0).decode()  # type: ignore[no-any-return]


def _int_param(n: int | None) -> bytes | None:
    return None if n is None else str(n).encode()


def _increment_error(exc: ContextValueError, key: Key, field: str) -> ContextValueError:
    """``exc`` (raised by the server's increment) restated for ``field`` of ``key``."""
    if isinstance(exc, _NumberOutOfRangeError):
        return _NumberOutOfRangeError(f"cannot increment field {field!r} of {key!r}: {exc}")
    return ContextValueError(f"cannot increment field {field!r} of {key!r}: {str(exc).split(': ', 1)[-1]}")


# --------------------------------------------------------------------------- MariaDB / MySQL


def _my_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class _MySQL:
    """The statements of one MariaDB/MySQL table."""

    def __init__(self, table: str) -> None:
        t = _my_ident(table)
        self.table = t
        self.meta = _my_ident(table + "_meta")
        self.upsert = f"INSERT INTO {t} (k, v) VALUES (%s, %s) ON DUPLICATE KEY UPDATE v = VALUES(v)"
        self.get = f"SELECT v FROM {t} WHERE k = %s"
        self.get_locked = f"SELECT v FROM {t} WHERE k = %s FOR UPDATE"
        self.insert = f"INSERT INTO {t} (k, v) VALUES (%s, %s)"
        self.set_value = f"UPDATE {t} SET v = %s WHERE k = %s"
        self.exists = f"SELECT 1 FROM {t} WHERE k = %s"
        self.delete = f"DELETE FROM {t} WHERE k = %s"
        self.count = f"SELECT count(*) FROM {t} WHERE k >= %s AND k < %s"
        self.clear = f"DELETE FROM {t} WHERE k >= %s AND k < %s"
        self.pages = {
            (cols, first): f"SELECT {cols} FROM {t} WHERE k {'>=' if first else '>'} %s AND k < %s "
            f"ORDER BY k LIMIT {_PAGE_SIZE}"
            for cols in ("k", "k, v")
            for first in (True, False)
        }
        self._in: dict[tuple[str, int], str] = {}

    def where_in(self, what: str, n: int) -> str:
        sql = self._in.get((what, n))
        if sql is None:
            marks = ",".join(["%s"] * n)
            sql = (
                f"SELECT k, v FROM {self.table} WHERE k IN ({marks})"
                if what == "get"
                else f"DELETE FROM {self.table} WHERE k IN ({marks})"
            )
            if len(self._in) < 64:
                self._in[what, n] = sql
        return sql


class _MyConn:
    __slots__ = ("conn", "cur")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.cur = conn.cursor()


_MY_BROKEN = frozenset({0, 2006, 2013, 2014, 2045, 2055, 1927, 1053})


class _MySQLBackend(_Backend):
    name = "MariaDB/MySQL"
    # deadlock, lock wait timeout, and (in _modify) a row created by another transaction first
    retry_codes = frozenset({1213, 1205, 1062})

    def __init__(self, target: _Target, table: str, pool_size: int, connect_timeout: float,
                 timeout: float) -> None:
        try:
            import pymysql
        except ImportError as exc:
            raise MissingDependencyError.for_extra("mysql", "pymysql") from exc
        self._pymysql = pymysql
        super().__init__(target, table, pool_size, connect_timeout, timeout)
        self.sql = _MySQL(table)

    def _connect(self) -> _MyConn:
        t = self.target
        try:
            conn = self._pymysql.connect(
                host=t.host or "localhost",
                port=t.port,
                user=t.user or "root",
                # bytes: PyMySQL would encode a str password as Latin-1; servers hash UTF-8
                password=(t.password or "").encode("utf-8"),
                database=t.database,
                charset="utf8mb4",
                connect_timeout=self.connect_timeout,
                autocommit=True,
                binary_prefix=True,
            )
        except self._pymysql.Error as exc:
            raise self.connect_error(exc) from exc
        return _MyConn(conn)

    def _close_conn(self, conn: _MyConn) -> None:
        try:
            conn.conn.close()
        except Exception:
            pass

    def _is_driver_error(self, exc: BaseException) -> bool:
        return isinstance(exc, self._pymysql.Error)

    def _error_code(self, exc: BaseException) -> Any:
        args = getattr(exc, "args", ())
        return args[0] if args and isinstance(args[0], int) else None

    def _is_broken(self, conn: _MyConn, exc: BaseException) -> bool:
        if not conn.conn.open:
            return True
        return isinstance(exc, (self._pymysql.OperationalError, self._pymysql.InterfaceError)) and (
            self._error_code(exc) in _MY_BROKEN or self._error_code(exc) is None
        )

    def _begin(self, conn: _MyConn, snapshot: bool) -> None:
        conn.cur.execute(
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY" if snapshot else "START TRANSACTION"
        )

    def _commit(self, conn: _MyConn) -> None:
        conn.cur.execute("COMMIT")

    def _translate(self, op: str, exc: BaseException) -> BaseException | None:
        if self._error_code(exc) == 1153:  # ER_NET_PACKET_TOO_LARGE: the server refused it, whole
            return ContextValueTooLargeError(
                f"{self.where}: {op}: the server refused a statement larger than its "
                "max_allowed_packet; store less (a max_value_size under that limit catches it before "
                "sending), or raise max_allowed_packet on the server"
            )
        return None

    def _rollback(self, conn: _MyConn) -> bool:
        c = conn.conn
        if not c.open:
            return False
        try:
            c.rollback()
            return True
        except Exception:
            return False

    # ---------------------------------------------------------------- schema

    def ensure_schema(self, json_column: bool, json_index: bool) -> None:
        if json_index:
            raise ContextConfigurationError("json_index=True is for PostgreSQL (its jsonb column j)")
        sql = self.sql
        name = "cf_schema_" + hashlib.sha1(f"{self.target.database}.{self.table}".encode()).hexdigest()[:40]

        def body(conn: _MyConn) -> None:
            cur = conn.cur
            state = self._schema_state(cur)
            if state != (True, str(SCHEMA_VERSION), str(CODEC_VERSION)):
                cur.execute("SELECT GET_LOCK(%s, %s)", (name, max(1, int(self.timeout))))
                (got,) = cur.fetchone()
                if got != 1:
                    raise ContextStoreBusyError(
                        f"{self.where}: another process kept the schema lock for {self.timeout:g}s"
                    )
                try:
                    self._create_or_upgrade(cur, sql)
                finally:
                    cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
                    cur.fetchall()
            self._check_columns(cur)

        self.run("open", body)

    def _schema_state(self, cur: Any) -> tuple[bool, str | None, str | None]:
        cur.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name IN (%s, %s)",
            (self.table, self.table + "_meta"),
        )
        names = {row[0] for row in cur.fetchall()}
        has_table = self.table in names
        if self.table + "_meta" not in names:
            return has_table, None, None
        cur.execute(
            f"SELECT `key`, value FROM {self.sql.meta} WHERE `key` IN ('schema_version', 'key_codec')"
        )
        meta = dict(cur.fetchall())
        return has_table, meta.get("schema_version", ""), meta.get("key_codec", "")

    def _create_or_upgrade(self, cur: Any, sql: _MySQL) -> None:
        has_table, version, codec = self._schema_state(cur)
        if version is None:
            if has_table:
                raise ContextSchemaError(
                    f"{self.where}: table {self.table!r} was not created by context-framework "
                    "(it has no meta table); use another table= name"
                )
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {sql.table} (k VARBINARY({MAX_KEY_SIZE}) NOT NULL PRIMARY KEY, "
                "v LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL) ENGINE=InnoDB"
            )
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {sql.meta} (`key` VARCHAR(64) NOT NULL PRIMARY KEY, "
                "value TEXT NOT NULL) ENGINE=InnoDB"
            )
            cur.execute(
                f"INSERT IGNORE INTO {sql.meta} (`key`, value) "
                "VALUES ('schema_version', %s), ('key_codec', %s)",
                (str(SCHEMA_VERSION), str(CODEC_VERSION)),
            )
        else:
            number = _parse_version(version, codec, self.where, self.table, _MY_MIGRATIONS)
            while number < SCHEMA_VERSION:
                _MY_MIGRATIONS[number](cur, sql.table)
                number += 1
                cur.execute(
                    f"UPDATE {sql.meta} SET value = %s WHERE `key` = 'schema_version'", (str(number),)
                )

    def _check_columns(self, cur: Any) -> None:
        cur.execute(f"SELECT * FROM {self.sql.table} LIMIT 0")
        columns = [d[0] for d in cur.description or ()]
        if columns != ["k", "v"]:
            raise ContextSchemaError(
                f"{self.where}: table {self.table!r} has columns {columns}, not ['k', 'v']"
            )

    # ---------------------------------------------------------------- operations

    def put(self, k: bytes, v: str) -> None:
        sql = self.sql.upsert
        self.run("set", lambda c: c.cur.execute(sql, (k, v)))

    def fetch(self, k: bytes) -> str | None:
        sql = self.sql.get

        def body(c: _MyConn) -> Any:
            c.cur.execute(sql, (k,))
            return c.cur.fetchone()

        row = self.run("get", body)
        return None if row is None else row[0]  # type: ignore[no-any-return]

    def remove(self, k: bytes) -> bool:
        sql = self.sql.delete
        return self.run("delete", lambda c: c.cur.execute(sql, (k,))) > 0

    def has(self, k: bytes) -> bool:
        sql = self.sql.exists

        def body(c: _MyConn) -> Any:
            c.cur.execute(sql, (k,))
            return c.cur.fetchone()

        return self.run("exists", body) is not None

    def put_many(self, rows: dict[bytes, str]) -> None:
        items = list(zip(*_in_key_order(rows)))

        def body(c: _MyConn) -> None:
            for i in range(0, len(items), _MY_WRITE_CHUNK):
                self._write_chunk(c.cur, items[i : i + _MY_WRITE_CHUNK])

        self.run("set_many", body, tx=True)

    def _write_chunk(self, cur: Any, rows: list[tuple[bytes, str]]) -> None:
        cur.executemany(self.sql.upsert, rows)

    def fetch_many(self, keys: list[bytes]) -> dict[bytes, str]:
        sql = self.sql

        def body(c: _MyConn) -> dict[bytes, str]:
            found: dict[bytes, str] = {}
            cur = c.cur
            for i in range(0, len(keys), _MY_READ_CHUNK):
                part = keys[i : i + _MY_READ_CHUNK]
                cur.execute(sql.where_in("get", len(part)), part)
                found.update(cur.fetchall())
            return found

        if len(keys) <= _MY_READ_CHUNK:
            return self.run("get_many", body)
        return self.run("get_many", body, tx=True, snapshot=True)

    def remove_many(self, keys: list[bytes]) -> int:
        sql = self.sql
        keys = sorted(keys)  # distinct keys: see _in_key_order

        def body(c: _MyConn) -> int:
            total = 0
            for i in range(0, len(keys), _MY_READ_CHUNK):
                part = keys[i : i + _MY_READ_CHUNK]
                total += c.cur.execute(sql.where_in("delete", len(part)), part)
            return total

        return self.run("delete_many", body, tx=True)

    def page(self, op: str, with_values: bool, low: bytes, high: bytes, first: bool) -> list[Any]:
        sql = self.sql.pages["k, v" if with_values else "k", first]

        def body(c: _MyConn) -> list[Any]:
            c.cur.execute(sql, (low, high))
            return list(c.cur.fetchall())

        return self.run(op, body)

    def count(self, low: bytes, high: bytes) -> int:
        sql = self.sql.count

        def body(c: _MyConn) -> int:
            c.cur.execute(sql, (low, high))
            return int(c.cur.fetchone()[0])

        return self.run("count", body)

    def clear(self, low: bytes, high: bytes) -> int:
        sql = self.sql.clear
        return int(self.run("clear", lambda c: c.cur.execute(sql, (low, high))))

    def _modify(self, op: str, k: bytes, change: Callable[[str | None], str]) -> str:
        """Read ``k`` under a row lock, write ``change(old text)``: one transaction."""
        sql = self.sql

        def body(c: _MyConn) -> str:
            cur = c.cur
            cur.execute(sql.get_locked, (k,))
            row = cur.fetchone()
            text = change(None if row is None else row[0])
            if row is None:
                cur.execute(sql.insert, (k, text))
            else:
                cur.execute(sql.set_value, (text, k))
            return text

        return self.run(op, body, tx=True)

    def update(self, k: bytes, patch: Metadata, patch_text: str, max_size: int | None) -> str:
        def change(old: str | None) -> str:
            if old is None:
                return patch_text
            text = dumps_json({**_decode(old), **patch})
            check_size(text, max_size)
            return text

        return self._modify("update", k, change)

    def increment(self, k: bytes, key: Key, field: str, by: Number, max_size: int | None) -> str:
        def change(old: str | None) -> str:
            return _increment_text(None if old is None else _decode(old), key, field, by, max_size)

        return self._modify("increment", k, change)


# --------------------------------------------------------------------------- helpers


_decode = decode_stored


def _parse_version(
    version: str, codec: str | None, where: str, table: str, migrations: dict[int, Any]
) -> int:
    try:
        number = int(version)
    except ValueError:
        number = -1
    if (
        number > SCHEMA_VERSION
        or number < 1
        or (number < SCHEMA_VERSION and any(n not in migrations for n in range(number, SCHEMA_VERSION)))
    ):
        raise ContextSchemaError(
            f"{where}: table {table!r} has schema_version {version!r}, but this version of "
            f"context-framework only understands schema_version {SCHEMA_VERSION}; "
            "upgrade context-framework to open it"
        )
    if codec != str(CODEC_VERSION):
        raise ContextSchemaError(
            f"{where}: table {table!r} uses key codec {codec!r}, but this version of "
            f"context-framework writes key codec {CODEC_VERSION}"
        )
    return number


def _too_long(key: Any, size: int) -> UnsupportedKeyError:
    return UnsupportedKeyError(
        f"cannot use {key!r:.100} as a context key here: it encodes (with the namespace) to "
        f"{size:,} bytes, over the {MAX_KEY_SIZE:,}-byte limit of SQL primary keys"
    )


_UNSET: Any = object()


# --------------------------------------------------------------------------- the store


class DBContextStore(BaseContextStore):
    """A store in one PostgreSQL or MariaDB/MySQL table (see the module docstring).

    ``url``: ``postgresql://user:password@host:port/db`` or
    ``mysql://user:password@host:port/db`` (query options allowed).
    ``table``: data table name (the meta table is ``<table>_meta``).
    ``pool_size``: connections kept per store (shared by its views; one is the hot connection).
    ``connect_timeout``: seconds to wait for a connection to open (default 5;
    whole seconds, at least 2, on PostgreSQL, as libpq counts them).
    ``timeout``: seconds to keep retrying lock conflicts (deadlocks,
    serialization failures) or waiting for a pooled connection before
    :class:`ContextStoreBusyError`. ``json_column`` (PostgreSQL): give a new
    table the queryable ``jsonb`` column ``j``. ``json_index`` (PostgreSQL): create a GIN
    index on the queryable ``j`` column.
    """

    scheme = "postgresql"
    url_options: ClassVar[dict[str, type]] = {
        "table": str,
        "pool_size": int,
        "connect_timeout": float,
        "timeout": float,
        "json_column": bool,
        "json_index": bool,
    }

    def __init__(
        self,
        url: str,
        *,
        namespace: str = _UNSET,
        max_value_size: int | None = _UNSET,
        table: str = _UNSET,
        pool_size: int = _UNSET,
        connect_timeout: float = _UNSET,
        timeout: float = _UNSET,
        json_column: bool = _UNSET,
        json_index: bool = _UNSET,
    ) -> None:
        given = {
            "namespace": namespace,
            "max_value_size": max_value_size,
            "table": table,
            "pool_size": pool_size,
            "connect_timeout": connect_timeout,
            "timeout": timeout,
            "json_column": json_column,
            "json_index": json_index,
        }
        options = self._options_from(url, given)
        super().__init__(namespace=options["namespace"], max_value_size=options["max_value_size"])
        self._check_namespace_text()
        self._nsp = encode_namespace(self._namespace)
        self._target = target = _Target(options["url"])
        table = options["table"]
        if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
            raise ContextConfigurationError(
                f"table must be a plain SQL identifier of at most 48 characters "
                f"(letters, digits, _; not starting with a digit), got {table!r}"
            )
        self._table = table
        self._pool_size = _check_number("pool_size", options["pool_size"], minimum=1, integer=True)
        self._connect_timeout = _check_number("connect_timeout", options["connect_timeout"], minimum=0.5)
        self._timeout = _check_number("timeout", options["timeout"], minimum=0)
        for flag in ("json_column", "json_index"):
            if not isinstance(options[flag], bool):
                raise ContextConfigurationError(f"{flag} must be True or False, got {options[flag]!r}")
        self._json_column = options["json_column"]
        self._json_index = options["json_index"]
        backend_cls = _PostgresBackend if target.dialect == "postgresql" else _MySQLBackend
        self._backend: _Backend = backend_cls(
            target, table, self._pool_size, self._connect_timeout, self._timeout
        )
        try:
            self._backend.ensure_schema(self._json_column, self._json_index)
        except BaseException:
            self._backend.close()
            raise

    @classmethod
    def _options_from(cls, url: Any, given: dict[str, Any]) -> dict[str, Any]:
        """Constructor options: keywords, then the URL's query options, then defaults."""
        if not isinstance(url, str):
            raise ContextConfigurationError(f"a database URL must be a string, got {type(url).__name__}")
        base, query = split_options(url)
        options: dict[str, Any] = {
            "namespace": "",
            "max_value_size": DEFAULT_MAX_VALUE_SIZE,
            "table": "context",
            "pool_size": 4,
            "connect_timeout": 5.0,
            "timeout": 30.0,
            "json_column": True,
            "json_index": False,
        }
        options.update(read_options(query, cls._url_option_types(), cls.__name__))
        for name, value in given.items():
            if value is not _UNSET:
                options[name] = value
        options["url"] = base
        return options

    def _check_namespace_text(self) -> None:
        try:
            self._namespace.encode("utf-8")
        except UnicodeEncodeError:
            raise ContextConfigurationError(
                f"namespace {self._namespace!r} is not valid Unicode (lone surrogate)"
            ) from None

    # ------------------------------------------------------------------ helpers

    def _k(self, key: Key) -> bytes:
        if self._closed:
            raise self._closed_error()
        return self._nsp + encode_key(key)

    def _kw(self, key: Key) -> bytes:
        """The encoded key for a write (length-checked)."""
        k = self._k(key)
        if len(k) > MAX_KEY_SIZE:
            raise _too_long(key, len(k))
        return k

    @property
    def max_key_size(self) -> int:
        """The longest encoded key a write accepts: ``MAX_KEY_SIZE`` less this namespace's tag."""
        return MAX_KEY_SIZE - len(self._nsp)

    def check_write_key(self, key: Key) -> None:
        """Raise what ``set`` raises for ``key``: not encodable, or over :attr:`max_key_size`."""
        self._kw(key)

    def _range(self, prefix: Any) -> tuple[bytes, bytes]:
        bounds = namespace_range(self._nsp, check_prefix(prefix))
        if self._closed:
            raise self._closed_error()
        return bounds

    # ------------------------------------------------------------------ core

    def set(self, key: Key, value: Mapping[str, Any]) -> None:
        """Store ``value`` under ``key``: one upsert statement (autocommit)."""
        k = self._kw(key)
        self._backend.put(k, encode_value(value, self.max_value_size))

    def get(self, key: Key, default: Any = None) -> Metadata | None:
        text = self._backend.fetch(self._k(key))
        if text is None:
            return default  # type: ignore[no-any-return]
        return _decode(text)

    def delete(self, key: Key) -> bool:
        return self._backend.remove(self._k(key))

    def exists(self, key: Key) -> bool:
        return self._backend.has(self._k(key))

    def scan(self, prefix: tuple[Any, ...] | None = None) -> Iterator[Key]:
        """Yield the keys under ``prefix`` in encoded-key order, a page at a time."""
        n = len(self._nsp)
        return (decode_key(bytes(row[0][n:])) for row in self._pages("scan", False, prefix))

    def items(self, prefix: tuple[Any, ...] | None = None) -> Iterator[tuple[Key, Metadata]]:
        n = len(self._nsp)
        return ((decode_key(bytes(k[n:])), _decode(v)) for k, v in self._pages("items", True, prefix))

    def _pages(self, op: str, with_values: bool, prefix: Any) -> Iterator[Any]:
        """Rows of a prefix range by keyset pagination; the first page is read at the call."""
        low, high = self._range(prefix)
        backend = self._backend
        rows = backend.page(op, with_values, low, high, True)

        def generate(rows: list[Any]) -> Iterator[Any]:
            while True:
                yield from rows
                if len(rows) < _PAGE_SIZE:
                    return
                if self._closed:
                    raise self._closed_error()
                rows = backend.page(op, with_values, bytes(rows[-1][0]), high, False)

        return generate(rows)

    def count(self, prefix: tuple[Any, ...] | None = None) -> int:
        return self._backend.count(*self._range(prefix))

    def clear(self, prefix: tuple[Any, ...] | None = None) -> int:
        return self._backend.clear(*self._range(prefix))

    # ------------------------------------------------------------------ batches

    def set_many(
        self, items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]]
    ) -> None:
        """Store many entries in one transaction; nothing is written if any item is invalid."""
        pairs = list(iter_pairs(items))
        if self._closed:
            raise self._closed_error()
        if not pairs:
            return
        with gc_paused():
            keys = encode_keys([k for k, _ in pairs], self._nsp)
            texts = encode_values([v for _, v in pairs], self.max_value_size)
            longest = max(map(len, keys))
            if longest > MAX_KEY_SIZE:
                i = next(i for i, k in enumerate(keys) if len(k) > MAX_KEY_SIZE)
                raise _too_long(pairs[i][0], len(keys[i]))
            rows = dict(zip(keys, texts))  # the last value of a repeated key wins
        self._backend.put_many(rows)

    def get_many(self, keys: Iterable[Key]) -> list[Metadata | None]:
        """Metadata of each key in input order (``None`` if absent); duplicates allowed."""
        with gc_paused():
            encoded = encode_keys(keys, self._nsp)
        if self._closed:
            raise self._closed_error()
        if not encoded:
            return []
        found = self._backend.fetch_many(list(dict.fromkeys(encoded)))
        get = found.get
        with gc_paused():
            try:
                return decode_values([get(k) for k in encoded])
            except (TypeError, ValueError) as exc:
                raise ContextStoreError(f"a stored value in {self!r} is not valid JSON ({exc})") from exc

    def delete_many(self, keys: Iterable[Key]) -> int:
        """Delete many keys in one transaction; return how many existed."""
        encoded = encode_keys(keys, self._nsp)
        if self._closed:
            raise self._closed_error()
        if not encoded:
            return 0
        return self._backend.remove_many(list(dict.fromkeys(encoded)))

    # ------------------------------------------------------------------ atomic read-modify-write

    def update(self, key: Key, patch: Mapping[str, Any]) -> Metadata:
        """Shallow-merge ``patch`` into ``key`` (created if absent), atomically; return the result."""
        patch = prepare_value(patch, self.max_value_size)
        k = self._kw(key)
        text = self._backend.update(k, patch, dumps_json(patch), self.max_value_size)
        return _decode(text)

    def increment(self, key: Key, field: str, by: Number = 1) -> Number:
        """Add ``by`` to ``field`` (0 if absent), atomically; return the new number."""
        check_increment(field, by)
        k = self._kw(key)
        text = self._backend.increment(k, key, field, by, self.max_value_size)
        return _decode(text)[field]  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ lifecycle

    def _bind_namespace(self) -> None:
        self._check_namespace_text()
        self._nsp = encode_namespace(self._namespace)

    def _close_backend(self) -> None:
        self._backend.close()

    def _config(self) -> dict[str, Any]:
        """Constructor arguments that reopen this store (the URL keeps its password)."""
        return {
            "url": self._target.url(),
            "max_value_size": self.max_value_size,
            "table": self._table,
            "pool_size": self._pool_size,
            "connect_timeout": self._connect_timeout,
            "timeout": self._timeout,
            "json_column": self._json_column,
            "json_index": self._json_index,
        }

    # ------------------------------------------------------------------ URLs and repr

    @classmethod
    def _parse_url(cls, base: str) -> dict[str, Any]:
        _Target(base)  # validates the scheme, port and database
        return {"url": base}

    @property
    def dialect(self) -> str:
        """``"postgresql"`` or ``"mysql"``."""
        return self._target.dialect

    @property
    def table(self) -> str:
        return self._table

    @property
    def url(self) -> str:
        """The server's URL without the password."""
        return self._target.safe_url()

    def _describe(self) -> str:
        where = self._target.safe_url()
        return where if self._table == "context" else f"{where}, table={self._table!r}"


DatabaseContextStore = DBContextStore
