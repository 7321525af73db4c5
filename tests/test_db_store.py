"""DBContextStore on PostgreSQL and MariaDB: the conformance suite plus SQL specifics.

Needs the ``postgres_url`` / ``mysql_url`` fixtures (real servers; skipped
without them outside CI). The password tests on PostgreSQL also start a
throwaway server that checks passwords (``postgres_server(use_env=False,
password_user=...)``), whatever the environment names, as the usual local
server trusts every connection; under ``CI=true`` they fail if it cannot
start. Every test works in its own table or namespace (``unique_name``) and
removes it afterwards.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from context_framework import open_store
from context_framework.base_store import BaseContextStore
from context_framework.db_store import (
    MAX_KEY_SIZE,
    SCHEMA_VERSION,
    DatabaseContextStore,
    DBContextStore,
)
from context_framework.exceptions import (
    ContextConfigurationError,
    ContextSchemaError,
    ContextSerializationError,
    ContextStoreClosedError,
    ContextStoreError,
    ContextValueError,
    ContextValueTooLargeError,
    MissingDependencyError,
    UnsupportedKeyError,
)
from context_framework.keys import encode_namespace
from context_framework.testing import StoreTests, run_state_machine
from context_framework.values import dumps_json

DIALECTS = ("postgresql", "mysql")


# --------------------------------------------------------------------------- raw access and cleanup


def _raw(url: str) -> Any:
    """A raw autocommit connection of the URL's driver (for set-up, inspection and cleanup)."""
    store_url = url.split("?")[0]
    if store_url.startswith(("postgres", "postgresql")):
        import psycopg

        return psycopg.connect(store_url.replace("+psycopg", ""), autocommit=True)
    from urllib.parse import unquote, urlsplit

    import pymysql

    p = urlsplit(store_url)
    return pymysql.connect(
        host=p.hostname or "localhost",
        port=p.port or 3306,
        user=unquote(p.username or "root"),
        password=unquote(p.password or ""),
        database=p.path.lstrip("/"),
        autocommit=True,
        binary_prefix=True,
    )


def _is_pg(url: str) -> bool:
    return url.startswith("postgres")


def _execute(url: str, sql: str, params: Any = None) -> list[Any]:
    conn = _raw(url)
    try:
        cur = conn.cursor()
        cur.execute(sql, params)
        try:
            return list(cur.fetchall())
        except Exception:
            return []
    finally:
        conn.close()


def _drop(url: str, table: str) -> None:
    if _is_pg(url):
        fns = ", ".join(f'"{table}_{f}"' for f in ("increment", "update", "merge", "nul_hide", "nul_show"))
        _execute(url, f'DROP TABLE IF EXISTS "{table}", "{table}_meta" CASCADE')
        _execute(url, f"DROP FUNCTION IF EXISTS {fns}")
    else:
        _execute(url, f"DROP TABLE IF EXISTS `{table}`, `{table}_meta`")


def _clear_namespace_tree(url: str, table: str, namespace: str) -> None:
    """Delete the rows of ``namespace`` and of every namespace below it."""
    low = encode_namespace(namespace)[:-1]  # tag + text, without the terminator
    if _is_pg(url):
        sql = f'DELETE FROM "{table}" WHERE k >= %s AND k < %s'
    else:
        sql = f"DELETE FROM `{table}` WHERE k >= %s AND k < %s"
    _execute(url, sql, (low, low + b"\xff"))


@pytest.fixture(params=DIALECTS)
def url(request: pytest.FixtureRequest) -> str:
    fixture = "postgres_url" if request.param == "postgresql" else "mysql_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def table(url: str, unique_name: str) -> Iterator[str]:
    yield unique_name
    _drop(url, unique_name)


@pytest.fixture
def store(url: str, table: str) -> Iterator[DBContextStore]:
    with DBContextStore(url, table=table) as s:
        yield s


# --------------------------------------------------------------------------- conformance


class _SuiteBase(StoreTests):
    """The conformance suite on one shared table per class, a fresh namespace per store."""

    fixture_name = ""

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _class_table(cls, request: pytest.FixtureRequest) -> Iterator[None]:
        url = str(request.getfixturevalue(cls.fixture_name))
        name = f"cftest_{uuid.uuid4().hex[:12]}"
        cls.url = url
        cls.table_name = name
        yield
        _drop(url, name)

    url: str
    table_name: str

    def make_store(self, **options: Any) -> BaseContextStore:
        return DBContextStore(
            self.url, table=self.table_name, namespace=f"t{uuid.uuid4().hex[:12]}", **options
        )

    def reopen_store(self, store: BaseContextStore) -> BaseContextStore:
        return DBContextStore(
            self.url,
            table=self.table_name,
            namespace=store.namespace,
            max_value_size=store.max_value_size,
        )

    def cleanup_store(self, store: BaseContextStore) -> None:
        try:
            if store.namespace:
                _clear_namespace_tree(self.url, self.table_name, store.namespace.split("/")[0])
        finally:
            store.close()


class TestPostgresStore(_SuiteBase):
    fixture_name = "postgres_url"


class TestMySQLStore(_SuiteBase):
    fixture_name = "mysql_url"


class TestPostgresStoreViaUrl(TestPostgresStore):
    """The suite on a store opened by URL with options, in the root namespace of its own table."""

    def make_store(self, **options: Any) -> BaseContextStore:
        self._own = f"cftest_{uuid.uuid4().hex[:12]}"
        return open_store(
            self.url.replace("postgresql://", "postgresql+psycopg://", 1)
            + f"?table={self._own}&pool_size=3&timeout=20",
            **options,
        )

    def reopen_store(self, store: BaseContextStore) -> BaseContextStore:
        assert isinstance(store, DBContextStore)
        return DBContextStore(self.url, table=store.table, max_value_size=store.max_value_size)

    def cleanup_store(self, store: BaseContextStore) -> None:
        assert isinstance(store, DBContextStore)
        store.close()
        _drop(self.url, store.table)


def test_state_machine(url: str, table: str) -> None:
    run_state_machine(
        lambda: DBContextStore(url, table=table, namespace=f"sm{uuid.uuid4().hex[:8]}"),
        max_examples=12,
        stateful_step_count=20,
    )


# --------------------------------------------------------------------------- URLs and options


@pytest.mark.parametrize(
    ("url", "dialect", "server", "safe"),
    [
        ("postgresql://u:secret@db.example:6543/ctx", "postgresql", "db.example:6543/ctx",
         "postgresql://u@db.example:6543/ctx"),
        ("postgres://u@h/ctx", "postgresql", "h:5432/ctx", "postgres://u@h:5432/ctx"),
        ("postgresql+psycopg://u:p%40ss@h:1/d", "postgresql", "h:1/d", "postgresql+psycopg://u@h:1/d"),
        ("mysql://root@127.0.0.1/test", "mysql", "127.0.0.1:3306/test", "mysql://root@127.0.0.1:3306/test"),
        ("mariadb://a:pw-b1@h:3307/x", "mysql", "h:3307/x", "mariadb://a@h:3307/x"),
        ("mysql+pymysql://a:pw-b2@[::1]:3307/x", "mysql", "::1:3307/x", "mysql+pymysql://a@[::1]:3307/x"),
    ],
)
def test_url_parsing(url: str, dialect: str, server: str, safe: str) -> None:
    from context_framework.db_store import _Target

    assert DBContextStore._parse_url(url) == {"url": url}
    target = _Target(url)
    assert target.dialect == dialect
    assert target.server == server
    assert target.safe_url() == safe
    assert _Target(target.url()).password == target.password
    if target.password:
        assert target.password not in target.safe_url()


def test_url_password_is_percent_decoded() -> None:
    from context_framework.db_store import _Target

    target = _Target("postgresql://user%20x:p%40ss%3Aw0rd@h:5/db%201")
    assert (target.user, target.password, target.database) == ("user x", "p@ss:w0rd", "db 1")
    assert _Target(target.url()).password == "p@ss:w0rd"


@pytest.mark.parametrize(
    "url",
    [
        "redis://h/0",
        "sqlite:///x.db",
        "postgresql+asyncpg://h/db",
        "mysql://h",  # no database
        "postgresql://h:notaport/db",
        "postgresql://h/a/b",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ContextConfigurationError):
        DBContextStore(url)


@pytest.mark.parametrize(
    "options",
    [
        {"table": "bad name"},
        {"table": "x" * 49},
        {"table": 'quo"te'},
        {"pool_size": 0},
        {"pool_size": 1.5},
        {"connect_timeout": 0},
        {"timeout": -1},
        {"json_index": "yes"},
        {"namespace": "bad\ud800"},
        {"max_value_size": 0},
    ],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ContextConfigurationError):
        DBContextStore("postgresql://nobody@127.0.0.1:1/x", **options)


def test_unknown_url_option_is_refused() -> None:
    with pytest.raises(ContextConfigurationError, match="unknown option"):
        open_store("postgresql://127.0.0.1:1/x?colour=red")
    with pytest.raises(ContextConfigurationError, match="unknown option"):
        DBContextStore("mysql://127.0.0.1:1/x?colour=red")


def test_registered_schemes() -> None:
    from context_framework.registry import _extras, _registry, available_schemes

    for scheme in ("postgresql", "postgres", "postgresql+psycopg", "mysql", "mariadb", "mysql+pymysql"):
        assert scheme in available_schemes()
        assert _extras[scheme] in ("postgres", "mysql")
        target = _registry[scheme]
        assert target is DBContextStore or target == "context_framework.db_store:DBContextStore"
    assert DatabaseContextStore is DBContextStore
    import context_framework
    import context_framework.context_store

    assert context_framework.DBContextStore is DBContextStore
    assert context_framework.context_store.DatabaseContextStore is DBContextStore


def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingDependencyError, match=r"context-framework\[postgres\]"):
        DBContextStore("postgresql://u@127.0.0.1:1/x")
    monkeypatch.setitem(sys.modules, "pymysql", None)
    with pytest.raises(MissingDependencyError, match=r"context-framework\[mysql\]"):
        DBContextStore("mysql://u@127.0.0.1:1/x")


def test_url_options_and_keywords(url: str, table: str) -> None:
    with open_store(f"{url}?table={table}&pool_size=2&connect_timeout=3&timeout=7&namespace=a/b") as s:
        assert isinstance(s, DBContextStore)
        assert s._config()["pool_size"] == 2
        assert s._config()["timeout"] == 7.0
        assert s._config()["connect_timeout"] == 3.0
        assert s.namespace == "a/b" and s.table == table
    with DBContextStore(f"{url}?table={table}&pool_size=2", pool_size=5) as s:  # keywords win
        assert s._config()["pool_size"] == 5 and s.table == table


# --------------------------------------------------------------------------- passwords and connection errors


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_server_down_is_a_quick_clear_error(scheme: str) -> None:
    import time

    port = _free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(ContextStoreError) as info:
        DBContextStore(f"{scheme}://someone:hunter2-secret@127.0.0.1:{port}/db")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert f"127.0.0.1:{port}/db" in message
    assert "hunter2-secret" not in message
    assert "hunter2-secret" not in repr(info.value)
    assert info.value.__cause__ is not None


_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_PG_PASSWORD_USER = ("cf_pw_user", f"pw-{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
def pg_password_url() -> Iterator[str]:
    """A throwaway PostgreSQL that checks passwords (whatever the environment names): the URL of
    its user ``_PG_PASSWORD_USER``, password included."""
    from context_framework.testing import servers

    try:
        cm = servers.postgres_server(use_env=False, fsync=False, password_user=_PG_PASSWORD_USER)
        server_url = cm.__enter__()
    except servers.ServerUnavailable as exc:
        if _IN_CI:
            pytest.fail(f"CI=true but no password-checking PostgreSQL could be had: {exc}", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield server_url
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture
def role_with_password(
    request: pytest.FixtureRequest, url: str, unique_name: str
) -> Iterator[tuple[str, str, str]]:
    """``(url, user, password)``: a user that must give its password, allowed to use the test database.

    PostgreSQL: the user of a throwaway server that checks passwords (the server of the
    environment may trust every local connection); MariaDB: a user created (and dropped
    after) on the server of the test.
    """
    if _is_pg(url):
        server_url = str(request.getfixturevalue("pg_password_url"))
        user, password = _PG_PASSWORD_USER
        yield server_url, user, password
        return
    password = f"pw-{uuid.uuid4().hex[:10]}"
    user = unique_name
    db = url.rsplit("/", 1)[1].split("?")[0]
    _execute(url, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
    _execute(url, f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'")
    _execute(url, f"GRANT ALL ON `{db}`.* TO '{user}'@'%'")
    _execute(url, f"GRANT ALL ON `{db}`.* TO '{user}'@'localhost'")
    try:
        yield _with_user(url, user, password), user, password
    finally:
        _execute(url, f"DROP USER IF EXISTS '{user}'@'%'")
        _execute(url, f"DROP USER IF EXISTS '{user}'@'localhost'")


def _with_user(url: str, user: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    host = rest.split("@", 1)[-1]
    return f"{scheme}://{user}:{password}@{host}"


def test_password_is_never_shown(role_with_password: tuple[str, str, str], unique_name: str) -> None:
    good, _, password = role_with_password
    table = f"{unique_name}_pw"
    try:
        with DBContextStore(good, table=table) as s:
            assert password not in repr(s)
            assert password not in str(s)
            assert password not in s.url
            assert password not in repr(s.with_namespace("a"))
            s.set("k", {"v": 1})
            clone = pickle.loads(pickle.dumps(s))  # the password survives pickling
            try:
                assert clone.get("k") == {"v": 1}
                assert password not in repr(clone)
            finally:
                clone.close()
    finally:
        _drop(good, table)


def test_wrong_password_is_refused(role_with_password: tuple[str, str, str]) -> None:
    good, user, password = role_with_password
    bad = "not-" + password
    server = good.split("@")[-1]  # host:port/db
    with pytest.raises(ContextStoreError) as info:
        DBContextStore(_with_user(good, user, bad), table="cf_never_created")
    exc = info.value
    assert type(exc) is ContextStoreError
    message = str(exc)
    assert bad not in message and password not in message
    assert bad not in repr(exc) and password not in repr(exc)
    assert message.startswith("open: cannot connect"), message  # the operation, then what failed
    assert repr(user) in message and server in message
    assert "password" in message.lower()  # the server's reason: password authentication failed
    cause = exc.__cause__
    if _is_pg(good):
        import psycopg

        assert isinstance(cause, psycopg.OperationalError), repr(cause)
    else:
        import pymysql

        assert isinstance(cause, pymysql.OperationalError), repr(cause)
    assert bad not in str(cause) and password not in str(cause)
    # the same account with its password works
    with DBContextStore(good, table="cf_pw_check") as s:
        s.set("k", {"v": 1})
    _drop(good, "cf_pw_check")


# --------------------------------------------------------------------------- schema


def test_schema_is_created_with_meta_and_version(url: str, table: str, store: DBContextStore) -> None:
    meta = dict(
        _execute(url, f'SELECT key, value FROM "{table}_meta"')
        if _is_pg(url)
        else _execute(url, f"SELECT `key`, value FROM `{table}_meta`")
    )
    assert meta == {"schema_version": str(SCHEMA_VERSION), "key_codec": "1"}
    if _is_pg(url):
        cols = _execute(
            url,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
            "ORDER BY ordinal_position",
            (table,),
        )
        assert cols == [("k", "bytea"), ("v", "text"), ("j", "jsonb")]
    else:
        cols = _execute(url, f"SHOW COLUMNS FROM `{table}`")
        assert [(c[0], c[1].lower()) for c in cols] == [("k", "varbinary(2048)"), ("v", "longtext")]


@pytest.mark.parametrize("version", ["2", "99", "banana", "0"])
def test_unknown_schema_version_is_refused(url: str, table: str, version: str) -> None:
    DBContextStore(url, table=table).close()
    key = "key" if _is_pg(url) else "`key`"
    quote = '"' if _is_pg(url) else "`"
    _execute(
        url, f"UPDATE {quote}{table}_meta{quote} SET value = %s WHERE {key} = 'schema_version'", (version,)
    )
    with pytest.raises(ContextSchemaError, match="schema_version"):
        DBContextStore(url, table=table)


def test_foreign_table_is_refused(url: str, table: str) -> None:
    _execute(url, f"CREATE TABLE {table} (k VARBINARY(10) PRIMARY KEY)" if not _is_pg(url)
             else f"CREATE TABLE {table} (k bytea PRIMARY KEY)")
    with pytest.raises(ContextSchemaError, match="not created by context-framework"):
        DBContextStore(url, table=table)


def test_migration_path_runs_registered_steps(
    url: str, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import context_framework.db_store as mod

    DBContextStore(url, table=table).close()
    steps: list[str] = []
    migrations = mod._PG_MIGRATIONS if _is_pg(url) else mod._MY_MIGRATIONS
    monkeypatch.setattr(mod, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(migrations, 1, lambda cur, name: steps.append(name))
    with DBContextStore(url, table=table) as s:
        s.set("k", {"v": 1})
    assert len(steps) == 1
    key = "key" if _is_pg(url) else "`key`"
    quote = '"' if _is_pg(url) else "`"
    rows = _execute(url, f"SELECT value FROM {quote}{table}_meta{quote} WHERE {key} = 'schema_version'")
    assert rows == [("2",)]


def test_concurrent_first_use_creates_the_schema_once(url: str, table: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_one(i: int) -> None:
        try:
            barrier.wait(10)
            with DBContextStore(url, table=table, namespace=f"n{i}") as s:
                s.set("k", {"i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with DBContextStore(url, table=table) as s:
        assert [s.with_namespace(f"n{i}").get("k") for i in range(4)] == [{"i": i} for i in range(4)]


# --------------------------------------------------------------------------- PostgreSQL specifics


@pytest.fixture
def pg(postgres_url: str, unique_name: str) -> Iterator[DBContextStore]:
    with DBContextStore(postgres_url, table=unique_name) as s:
        yield s
    _drop(postgres_url, unique_name)


def test_pg_prefix_scan_and_count_use_an_index_range_scan(pg: DBContextStore, postgres_url: str) -> None:
    pg.set_many([(("row", i), {"i": i}) for i in range(20_000)])
    pg.set_many([(("col", str(i)), {"i": i}) for i in range(200)])
    _execute(postgres_url, f'ANALYZE "{pg.table}"')
    low, high = pg._range(("col",))
    conn = _raw(postgres_url)
    try:
        for sql in (
            f'SELECT count(*) FROM "public"."{pg.table}" WHERE k >= %s AND k < %s',
            f'SELECT k FROM "public"."{pg.table}" WHERE k >= %s AND k < %s ORDER BY k LIMIT 1000',
        ):
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, (low, high)).fetchall())
            assert "Index" in plan and f"{pg.table}_pkey" in plan, plan
            assert "Seq Scan" not in plan, plan
            assert "k >= " in plan and "k < " in plan, plan
    finally:
        conn.close()
    # and the store's own statements are exactly those
    sql = pg._backend.sql  # type: ignore[attr-defined]
    assert sql.count.endswith("WHERE k >= %s AND k < %s")
    assert "WHERE k >= %s AND k < %s ORDER BY k LIMIT" in sql.pages["k", True]
    assert pg.count(("col",)) == 200


def test_pg_jsonb_column_is_queryable(pg: DBContextStore, postgres_url: str) -> None:
    pg.set(("row", 1), {"source": "PubMed", "n": 1, "f": 1e308})
    pg.set(("row", 2), {"source": "arXiv"})
    pg.set(("row", 3), {"source": "PubMed", "nul": "a\x00b"})  # jsonb cannot hold NUL: j is NULL
    rows = _execute(
        postgres_url,
        f"""SELECT k FROM "{pg.table}" WHERE j @> '{{"source": "PubMed"}}' ORDER BY k""",
    )
    assert [bytes(r[0]) for r in rows] == [pg._k(("row", 1))]
    rows = _execute(postgres_url, f'SELECT j ->> \'source\', v FROM "{pg.table}" WHERE j IS NULL')
    assert len(rows) == 1 and rows[0][0] is None and "\\u0000" in rows[0][1]


def test_pg_json_index_option(postgres_url: str, unique_name: str) -> None:
    try:
        with DBContextStore(postgres_url, table=unique_name, json_index=True) as s:
            s.set("k", {"source": "x"})
        rows = _execute(
            postgres_url, "SELECT indexdef FROM pg_indexes WHERE tablename = %s", (unique_name,)
        )
        assert any("gin" in r[0] and "jsonb_path_ops" in r[0] for r in rows), rows
    finally:
        _drop(postgres_url, unique_name)


def test_pg_dropped_connection_mid_batch_writes_nothing(
    pg: DBContextStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.set("before", {"v": 1})
    backend: Any = pg._backend
    real = backend._copy_rows

    def copy_then_die(cur: Any, sql: Any, rows: Any) -> None:
        real(cur, sql, rows)
        cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    monkeypatch.setattr(backend, "_copy_rows", copy_then_die)
    with pytest.raises(ContextStoreError) as info:
        pg.set_many([(("row", i), {"i": i}) for i in range(5000)])
    assert "nothing of this batch was written" in str(info.value)
    assert pg._target.server in str(info.value)
    assert "set_many" in str(info.value)
    monkeypatch.undo()
    assert pg.count() == 1  # the next call reconnects
    assert pg.get(("row", 1)) is None
    pg.set_many([(("row", i), {"i": i}) for i in range(5000)])
    assert pg.count() == 5001


def _lock_row(postgres_url: str, table: str) -> Any:
    """A connection holding the row lock of every row of ``table`` (roll it back to release)."""
    holder = _raw(postgres_url)
    holder.execute("BEGIN")
    holder.execute(f'SELECT * FROM "{table}" FOR UPDATE')
    return holder


def _no_stuck_connection(store: DBContextStore) -> None:
    """Every connection the pool keeps is idle (not inside a query or a transaction)."""
    pool: Any = store._backend.pool
    for conn in [*pool._idle, *([pool._hot] if pool._hot is not None else [])]:
        assert conn.conn.info.transaction_status == 0, conn.conn.info.transaction_status  # IDLE


def test_pg_call_waiting_for_a_row_lock_is_interrupted_by_ctrl_c(
    pg: DBContextStore, postgres_url: str
) -> None:
    import signal
    import time

    pg.set("k", {"v": 1})
    holder = _lock_row(postgres_url, pg.table)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            pg.set("k", {"v": 2})  # blocks on the row lock until interrupted
        elapsed = time.monotonic() - start
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
        holder.rollback()
        holder.close()
    assert 0.4 < elapsed < 5, elapsed
    _no_stuck_connection(pg)  # the query was cancelled on the server (or the connection dropped)
    assert pg.get("k") == {"v": 1}  # the interrupted write did not happen
    pg.set("k", {"v": 3})
    assert pg.get("k") == {"v": 3}


def test_pg_statement_timeout_while_waiting_for_a_row_lock(
    postgres_url: str, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import psycopg

    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=300")  # read by libpq when connecting
    try:
        with DBContextStore(postgres_url, table=unique_name) as s:
            s.set("k", {"v": 1})
            holder = _lock_row(postgres_url, unique_name)
            try:
                for op in (lambda: s.set("k", {"v": 2}), lambda: s.update("k", {"w": 1}),
                           lambda: s.increment("k", "n"), lambda: s.delete("k")):
                    start = time.monotonic()
                    with pytest.raises(ContextStoreError) as info:
                        op()
                    assert time.monotonic() - start < 5
                    assert "statement timeout" in str(info.value)
                    assert s._target.server in str(info.value)
                    assert isinstance(info.value.__cause__, psycopg.errors.QueryCanceled)
                    _no_stuck_connection(s)
            finally:
                holder.rollback()
                holder.close()
            assert s.get("k") == {"v": 1}
            s.set("k", {"v": 4})
            assert s.get("k") == {"v": 4}
    finally:
        _drop(postgres_url, unique_name)


def test_pg_set_many_paths(pg: DBContextStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """COPY straight into the table when no stored key lies in the batch's range; the upsert
    through the temporary table otherwise, and when a key appears in between (a race)."""
    backend: Any = pg._backend
    copies: list[str] = []
    real_copy = backend._copy_rows

    def copy_rows(cur: Any, statement: str, rows: Any) -> None:
        copies.append("direct" if "cf_load" not in statement else "temp")
        real_copy(cur, statement, rows)

    monkeypatch.setattr(backend, "_copy_rows", copy_rows)
    pg.set_many([(("row", i), {"i": i}) for i in range(2000)])
    assert copies == ["direct"]
    pg.set_many([(("row", i), {"i": -i}) for i in range(1000, 3000)])  # overlaps: upsert
    assert copies == ["direct", "temp"]
    pg.set_many([(("row", i), {"i": i}) for i in range(5000, 6000)])  # beyond: direct again
    assert copies == ["direct", "temp", "direct"]
    # a key stored "after the check": the COPY fails on it and the batch is upserted instead
    monkeypatch.setattr(backend, "_range_is_free", lambda *args: True)
    pg.set_many([(("row", i), {"i": i * 10}) for i in range(2990, 4000)])
    assert copies == ["direct", "temp", "direct", "direct", "temp"]
    got = pg.get_many([("row", i) for i in range(6000)])
    expected = (
        [{"i": i} for i in range(1000)]
        + [{"i": -i} for i in range(1000, 2990)]
        + [{"i": i * 10} for i in range(2990, 4000)]
        + [None] * 1000
        + [{"i": i} for i in range(5000, 6000)]
    )
    assert got == expected
    assert pg.count() == 5000


def test_pg_session_that_lost_or_already_has_a_prepared_statement(pg: DBContextStore) -> None:
    pg.set("k", {"v": 1})
    assert pg.get("k") == {"v": 1}
    hot: Any = pg._backend.pool._hot
    assert {b"cf_set", b"cf_get"} <= hot.prepared
    hot.conn.execute("DEALLOCATE cf_get")  # the session lost it
    assert pg.get("k") == {"v": 1}
    hot.prepared.discard(b"cf_set")  # the session has it, the store thinks not
    pg.set("k", {"v": 2})
    assert pg.get("k") == {"v": 2}
    assert pg._backend.pool._hot is hot and {b"cf_set", b"cf_get"} <= hot.prepared


def test_pool_of_one_shared_by_threads(url: str, table: str) -> None:
    """pool_size=1: the one connection is the hot one; contending threads wait for it."""
    with DBContextStore(url, table=table, pool_size=1, timeout=60) as s:
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                for j in range(30):
                    s.set(("t", i, j), {"j": j})
                    assert s.get(("t", i, j)) == {"j": j}
                    if j % 10 == 0:
                        s.set_many([(("b", i, j, n), {"n": n}) for n in range(20)])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        pool: Any = s._backend.pool
        assert len(pool._all) == 1 and pool._idle == []
        assert s.count(("t",)) == 120


def test_hot_connection_is_replaced_after_a_failure_and_closed_with_the_store(
    url: str, table: str
) -> None:
    s = DBContextStore(url, table=table)
    s.set("k", {"v": 1})
    pool: Any = s._backend.pool
    hot = pool._hot
    assert hot is not None and pool._all == {hot}
    if _is_pg(url):
        _execute(url, "SELECT pg_terminate_backend(%s)", (hot.conn.info.backend_pid,))
    else:
        _execute(url, f"KILL CONNECTION {hot.conn.thread_id()}")
    with pytest.raises(ContextStoreError, match="next call reconnects"):
        s.get("k")
    assert pool._hot is None and pool._all == set()
    assert s.get("k") == {"v": 1}
    assert pool._hot is not None and pool._hot is not hot
    new = pool._hot
    s.close()
    assert pool._hot is None and pool._all == set()
    assert new.conn.closed if _is_pg(url) else not new.conn.open


# --------------------------------------------------------------------------- MariaDB specifics


def test_mysql_dropped_connection_mid_batch_writes_nothing(
    mysql_url: str, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import context_framework.db_store as mod

    monkeypatch.setattr(mod, "_MY_WRITE_CHUNK", 500)
    with DBContextStore(mysql_url, table=unique_name) as s:
        try:
            s.set("before", {"v": 1})
            backend: Any = s._backend
            real = backend._write_chunk
            calls = []

            def write_then_die(cur: Any, rows: Any) -> None:
                real(cur, rows)
                calls.append(1)
                if len(calls) == 2:
                    cur.execute("SELECT CONNECTION_ID()")
                    (own,) = cur.fetchone()
                    _execute(mysql_url, f"KILL CONNECTION {own}")

            monkeypatch.setattr(backend, "_write_chunk", write_then_die)
            with pytest.raises(ContextStoreError) as info:
                s.set_many([(("row", i), {"i": i}) for i in range(2000)])
            assert "nothing of this batch was written" in str(info.value)
            monkeypatch.setattr(backend, "_write_chunk", real)
            assert s.count() == 1
            s.set_many([(("row", i), {"i": i}) for i in range(2000)])
            assert s.count() == 2001
        finally:
            _drop(mysql_url, unique_name)


# --------------------------------------------------------------------------- both: behaviour


def test_value_is_stored_as_the_exact_json_text(url: str, store: DBContextStore) -> None:
    value = {"b": 1e308, "a": -0.0, "big": 2**64 - 1, "s": 'q"\\\x00é😀', "z": [1.0, {"x": None}]}
    store.set("k", value)
    quote = '"' if _is_pg(url) else "`"
    rows = _execute(url, f"SELECT v FROM {quote}{store.table}{quote}")
    assert rows == [(dumps_json(value),)]


def test_keys_longer_than_the_limit_are_refused_on_write(store: DBContextStore) -> None:
    long_key = ("row", "x" * MAX_KEY_SIZE)
    for op in (
        lambda: store.set(long_key, {"a": 1}),
        lambda: store.set_many([("ok", {}), (long_key, {"a": 1})]),
        lambda: store.update(long_key, {"a": 1}),
        lambda: store.increment(long_key, "n"),
    ):
        with pytest.raises(UnsupportedKeyError, match="2,048-byte limit"):
            op()
    assert store.get(long_key) is None
    assert store.count() == 0
    fits = ("row", "x" * (MAX_KEY_SIZE - 20))
    store.set(fits, {"a": 1})
    assert store.get(fits) == {"a": 1}


def test_get_many_order_duplicates_and_missing_across_chunks(store: DBContextStore) -> None:
    store.set_many([(("row", i), {"i": i}) for i in range(0, 25_000, 2)])
    keys = [("row", i) for i in range(25_000, -1, -1)] + [("row", 4), ("row", 4)]
    got = store.get_many(keys)
    assert len(got) == len(keys)
    for key, value in zip(keys, got):
        assert value == ({"i": key[1]} if key[1] % 2 == 0 and key[1] < 25_000 else None)


def test_scan_pages_in_key_order(store: DBContextStore) -> None:
    store.set_many([(("row", i), {}) for i in range(2_500)])
    store.set_many([(("row", -i), {}) for i in range(1, 6)])
    assert list(store.scan(("row",))) == [("row", i) for i in range(-5, 2_500)]
    assert [k for k, _ in store.items(("row",))][:3] == [("row", -5), ("row", -4), ("row", -3)]


def test_failed_batch_is_rolled_back(store: DBContextStore) -> None:
    store.set("keep", {"v": 1})
    store.set_many([(("row", i), {"i": i}) for i in range(10)])
    with pytest.raises(ContextSerializationError):
        store.set_many([(("row", i), {"i": -i}) for i in range(10)] + [("bad", {"x": {1}})])
    assert store.get(("row", 3)) == {"i": 3}
    assert store.count() == 11


def test_update_and_increment_exactness(store: DBContextStore) -> None:
    base = {
        "big": 2**63,
        "u64": 2**64 - 1,
        "f308": 1e308,
        "tiny": 5e-324,
        "neg0": -0.0,
        "two": 2.0,
        "nested": {"deep": [1.5, {"x": "y\\z", "e": 1e20}], "t": True},
        "s": 'quote " backslash \\ nul \x00 unicode é 😀 \u2028',
        "key \x00 with nul": "v\x00",
        "ctl\x01\x02": "\x01\x02\x1f",
        "esc\\u0000": "literal backslash-u",
        "lit": "\\u005c \\u0001\\u0001 \\\\u0000 \\u0001\\u0002 \x01\x01\x02 \\",
        "": "empty key",
    }
    store.set("k", base)
    patch = {"new": [None, 1e-7], "s": "replaced \x00 \\", "key \x00 with nul": {"n": 1}}
    merged = store.update("k", patch)
    expected = {**base, **patch}
    assert dumps_json(merged) == dumps_json(expected)  # same members, same order
    assert store.get("k") == expected
    assert merged == store.get("k")
    assert {k: type(v) for k, v in store.get("k").items()} == {k: type(v) for k, v in expected.items()}
    assert str(store.get("k")["neg0"]) == "-0.0"

    assert store.increment("k", "big") == 2**63 + 1 and type(store.get("k")["big"]) is int
    assert store.increment("k", "big", -(2**63) - 1) == 0
    assert store.increment("k", "two", 1) == 3.0 and type(store.get("k")["two"]) is float
    assert store.increment("k", "f308", 1) == 1e308
    assert store.increment("k", "neg0", 0) == 0.0
    assert store.increment("k", "fresh", 0.1) == 0.1
    assert store.increment("k", "fresh", 0.2) == 0.1 + 0.2  # 0.30000000000000004
    assert store.increment("k", "1e15", 1e15) == 1e15
    assert store.increment("k", "1e15", 1) == 1e15 + 1
    assert store.increment("k", "key \x00 with nul 2", 5) == 5
    assert store.increment("k", "u64", -1) == 2**64 - 2
    assert store.increment("k", "u64", 1) == 2**64 - 1
    with pytest.raises(ContextValueError):  # 2**64 is outside the 64-bit rule
        store.increment("k", "u64", 1)
    with pytest.raises(ContextSerializationError):  # the same error other stores raise
        store.increment("k", "u64", 1)
    with pytest.raises(ContextValueError):
        store.increment("k", "f308", 1.7e308)  # inf
    with pytest.raises(ContextValueError):
        store.increment("k", "s", 1)
    with pytest.raises(ContextValueError):
        store.increment("k", "nested", 1)
    with pytest.raises(ContextValueError, match="not a number"):
        store.increment("k", "key \x00 with nul", 1)  # a dict
    with pytest.raises(ContextValueError):
        store.increment("k", "u64", True)  # type: ignore[arg-type]
    final = store.get("k")
    assert final is not None
    assert final["nested"] == base["nested"]
    assert final["s"] == patch["s"]
    assert final["u64"] == 2**64 - 1
    assert final["key \x00 with nul 2"] == 5
    assert final["1e15"] == 1e15 + 1 and type(final["1e15"]) is float
    assert final["ctl\x01\x02"] == "\x01\x02\x1f" and final["esc\\u0000"] == "literal backslash-u"


def test_update_refuses_an_oversized_merge_without_writing(url: str, table: str) -> None:
    with DBContextStore(url, table=table, max_value_size=100) as s:
        s.set("k", {"a": "x" * 60})
        with pytest.raises(ContextValueTooLargeError):
            s.update("k", {"b": "y" * 40})
        assert s.get("k") == {"a": "x" * 60}
        s.set("n", {"a": "x" * 80, "n": 1})
        with pytest.raises(ContextValueTooLargeError):
            s.increment("n", "another_long_field_name_here")
        assert s.get("n") == {"a": "x" * 80, "n": 1}


def test_namespace_views_share_one_pool(store: DBContextStore) -> None:
    view = store.with_namespace("a")
    assert view._backend is store._backend
    view.set("k", {"v": 1})
    assert store.get("k") is None and view.get("k") == {"v": 1}
    view.close()
    assert store.get("k") is None  # the pool is still open
    store.close()
    with pytest.raises(ContextStoreClosedError):
        store.with_namespace("a")


def test_threads_share_the_pool(url: str, table: str) -> None:
    with DBContextStore(url, table=table, pool_size=2) as s:
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                for j in range(50):
                    s.set(("t", i, j), {"j": j})
                    assert s.get(("t", i, j)) == {"j": j}
                    s.increment("c", "n")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert s.get("c") == {"n": 300}
        assert len(s._backend.pool._all) <= 2


def test_reconnects_after_the_server_dropped_the_connection(url: str, store: DBContextStore) -> None:
    store.set("k", {"v": 1})
    pool = store._backend.pool
    assert pool._idle == []  # a single thread uses the hot connection only
    conn = pool._hot
    if _is_pg(url):
        pid = conn.conn.info.backend_pid
        _execute(url, "SELECT pg_terminate_backend(%s)", (pid,))
    else:
        _execute(url, f"KILL CONNECTION {conn.conn.thread_id()}")
    with pytest.raises(ContextStoreError) as info:
        store.get("k")
    assert "next call reconnects" in str(info.value)
    assert store.get("k") == {"v": 1}


def test_driver_errors_are_wrapped(url: str, table: str) -> None:
    store = DBContextStore(url, table=table)
    try:
        _drop(url, table)
        with pytest.raises(ContextStoreError) as info:
            store.get("k")
        assert type(info.value) is ContextStoreError
        assert "get failed" in str(info.value)
        assert info.value.__cause__ is not None
    finally:
        store.close()


def test_pickle_reopens_by_configuration(url: str, table: str) -> None:
    with DBContextStore(url, table=table, pool_size=2, max_value_size=1000, timeout=9) as s:
        view = s.with_namespace("x")
        view.set("k", {"v": 1})
        clone = pickle.loads(pickle.dumps(view))
        try:
            assert clone._config() == view._config()
            assert clone.namespace == "x"
            assert clone.get("k") == {"v": 1}
            assert clone._backend is not view._backend
        finally:
            clone.close()


def _fork_child(store: DBContextStore, queue: Any) -> None:
    try:
        store.set("child", {"pid": 1})
        queue.put(("ok", store.get("child"), len(store._backend.pool._all)))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        queue.put(("error", repr(exc), 0))


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_forked_child_uses_its_own_connections(store: DBContextStore) -> None:
    store.set("parent", {"v": 1})
    parent_conn = store._backend.pool._hot
    assert parent_conn is not None and store._backend.pool._all == {parent_conn}
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_fork_child, args=(store, queue))
    proc.start()
    result = queue.get(timeout=60)
    proc.join(60)
    assert result == ("ok", {"pid": 1}, 1), result
    # the parent's connection still works: the child neither used nor closed it
    assert store._backend.pool._hot is parent_conn
    assert store.get("child") == {"pid": 1}
    assert store.get("parent") == {"v": 1}


# --------------------------------------------------------------------------- acceptance: processes


def _worker_keys_and_counter(url: str, table: str, worker: int, n_keys: int, n_incr: int) -> None:
    with DBContextStore(url, table=table) as s:
        for i in range(n_keys):
            s.set(("w", worker, i), {"w": worker, "i": i})
            if i % 5 == 0 and i // 5 < n_incr:
                s.increment("counter", "n")
        done = min(n_incr, (n_keys + 4) // 5)
        for _ in range(n_incr - done):
            s.increment("counter", "n")


def _worker_fields(url: str, table: str, worker: int, n: int) -> None:
    with DBContextStore(url, table=table) as s:
        for j in range(n):
            s.update("shared", {f"w{worker}": j, f"w{worker}_{j % 7}": j})


def _run_spawned(target: Callable[..., None], args: list[tuple[Any, ...]]) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=a) for a in args]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
    assert [p.exitcode for p in procs] == [0] * len(procs)


def test_processes_write_distinct_keys_and_share_a_counter(url: str, table: str) -> None:
    DBContextStore(url, table=table).close()  # schema first, as a deployment would
    _run_spawned(_worker_keys_and_counter, [(url, table, w, 5_000, 1_000) for w in range(4)])
    with DBContextStore(url, table=table) as s:
        assert s.get("counter") == {"n": 4_000}
        assert s.count(("w",)) == 20_000
        for w in range(4):
            got = s.get_many([("w", w, i) for i in range(5_000)])
            assert got == [{"w": w, "i": i} for i in range(5_000)]


def test_processes_updating_fields_of_one_key_lose_none(url: str, table: str) -> None:
    # no schema beforehand: the processes race to create it
    _run_spawned(_worker_fields, [(url, table, w, 300) for w in range(4)])
    with DBContextStore(url, table=table) as s:
        value = s.get("shared")
        assert value is not None
        for w in range(4):
            assert value[f"w{w}"] == 299
            for r in range(7):
                assert value[f"w{w}_{r}"] == max(j for j in range(300) if j % 7 == r)
        assert len(value) == 4 * 8


def test_unknown_user_is_a_clear_error(url: str, unique_name: str) -> None:
    secret = f"pw-{uuid.uuid4().hex[:10]}"
    with pytest.raises(ContextStoreError) as info:
        DBContextStore(_with_user(url, f"{unique_name}_nobody", secret))
    message = str(info.value)
    assert "cannot connect" in message and f"{unique_name}_nobody" in message
    assert url.split("@")[-1].split("/")[0] in message
    assert secret not in message and secret not in repr(info.value)
    assert info.value.__cause__ is not None


def test_pg_table_without_json_column(postgres_url: str, unique_name: str) -> None:
    try:
        with DBContextStore(postgres_url, table=unique_name, json_column=False) as s:
            s.set("k", {"a": 1})
            assert s.update("k", {"b": 2.0}) == {"a": 1, "b": 2.0}
            assert s.increment("k", "a") == 2
        cols = _execute(
            postgres_url,
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "ORDER BY ordinal_position",
            (unique_name,),
        )
        assert cols == [("k",), ("v",)]
        with DBContextStore(postgres_url, table=unique_name) as s:  # opens either layout
            assert s.get("k") == {"a": 2, "b": 2.0}
        with pytest.raises(ContextConfigurationError, match="json_column=False"):
            DBContextStore(postgres_url, table=unique_name, json_index=True)
    finally:
        _drop(postgres_url, unique_name)


@pytest.mark.parametrize("copy_min", [1, 10**9])
def test_batch_paths_round_trip_every_sample_value(
    store: DBContextStore, monkeypatch: pytest.MonkeyPatch, copy_min: int
) -> None:
    import context_framework.db_store as mod
    from context_framework.testing.store_tests import SAMPLE_VALUES

    monkeypatch.setattr(mod, "_PG_COPY_MIN", copy_min)  # COPY path, or INSERT ... unnest()
    values = [*SAMPLE_VALUES, {"nul": "a\x00b", "key\x00": ["\x00", "\t\n\r\\"], "f": -0.0}]
    store.set_many([(("v", i), v) for i, v in enumerate(values)])
    got = store.get_many([("v", i) for i in range(len(values))])
    assert [dumps_json(g) for g in got] == [dumps_json(v) for v in values]


def test_pg_update_merge_is_exact_for_tricky_text(pg: DBContextStore) -> None:
    """The server-side merge against Python's, on text full of escapes, NUL, SOH and STX."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    text = st.text(alphabet='\x00\x01\x02\\u0015c"é😀\n', max_size=8)
    scalars = st.one_of(
        text,
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.none(),
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=6,
    )
    docs = st.dictionaries(text, values, max_size=5)

    @settings(max_examples=80, deadline=None)
    @given(old=docs, patch=docs)
    def check(old: dict[str, Any], patch: dict[str, Any]) -> None:
        pg.set("k", old)
        merged = pg.update("k", patch)
        expected = {**old, **patch}
        assert dumps_json(merged) == dumps_json(expected)
        assert dumps_json(pg.get("k")) == dumps_json(expected)

    check()


def test_increment_matches_python_arithmetic(store: DBContextStore) -> None:
    """Random numbers: same type and value as Python's ``old + by``, or both refuse."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    numbers = st.one_of(
        st.integers(-(2**63), 2**64 - 1),
        st.integers(-1000, 1000),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([0.1, 0.2, -0.0, 1e15, 1e16, 1e22, 5e-324, 1.7976931348623157e308, 2.5]),
    )

    @settings(max_examples=120, deadline=None)
    @given(old=numbers, by=numbers)
    def check(old: Any, by: Any) -> None:
        store.set("k", {"n": old, "other": "x"})
        python = old + by
        fits = (type(python) is int and -(2**63) <= python < 2**64) or (
            type(python) is float and python - python == 0
        )
        if not fits:
            with pytest.raises(ContextValueError):
                store.increment("k", "n", by)
            assert store.get("k") == {"n": old, "other": "x"}
            return
        result = store.increment("k", "n", by)
        assert type(result) is type(python) and dumps_json(result) == dumps_json(python)
        stored = store.get("k")
        assert stored is not None and dumps_json(stored["n"]) == dumps_json(python)

    check()
