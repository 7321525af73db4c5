"""SQLiteContextStore: the conformance suite plus SQLite specifics.

URLs, pragmas, the schema version check, key order and prefix scans,
batches (chunking, atomicity, rollback), lock handling (busy errors and
retries), closing, pickling, threads, and several processes sharing one file.
"""

from __future__ import annotations

import multiprocessing
import pickle
import random
import sqlite3
import threading
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import context_framework.sqlite_store as sqlite_store_module
from context_framework import open_store
from context_framework.base_store import BaseContextStore
from context_framework.exceptions import (
    ContextConfigurationError,
    ContextSchemaError,
    ContextSerializationError,
    ContextStoreBusyError,
    ContextStoreClosedError,
    ContextStoreError,
    ContextValueError,
    ContextValueTooLargeError,
    UnsupportedKeyError,
)
from context_framework.keys import encode_key, encode_namespace
from context_framework.sqlite_store import SCHEMA_VERSION, SQLiteContextStore
from context_framework.testing import StoreTests, make_state_machine_test

# --------------------------------------------------------------------------- conformance


class TestSQLiteFileStore(StoreTests):
    shares_data_when_pickled = True

    @pytest.fixture(autouse=True)
    def _workdir(self, tmp_path: Path) -> None:
        self._dir = tmp_path

    def make_store(self, **options: Any) -> BaseContextStore:
        return SQLiteContextStore(self._dir / f"{uuid.uuid4().hex}.db", **options)

    def reopen_store(self, store: BaseContextStore) -> BaseContextStore:
        assert isinstance(store, SQLiteContextStore)
        return SQLiteContextStore(store.path, namespace=store.namespace, max_value_size=store.max_value_size)


class TestSQLiteMemoryStore(StoreTests):
    shares_data_when_pickled = False  # an in-memory database pickles as a snapshot

    def make_store(self, **options: Any) -> BaseContextStore:
        return SQLiteContextStore(**options)


class TestSQLiteStoreViaUrl(TestSQLiteFileStore):
    """The same suite on a store opened by URL, bound to a namespace, in a custom table."""

    def make_store(self, **options: Any) -> BaseContextStore:
        path = self._dir / f"{uuid.uuid4().hex}.db"
        return open_store(f"sqlite:///{path}?namespace=tenant/one&table=ctx&timeout=5", **options)

    def reopen_store(self, store: BaseContextStore) -> BaseContextStore:
        assert isinstance(store, SQLiteContextStore)
        return SQLiteContextStore(
            store.path,
            namespace=store.namespace,
            max_value_size=store.max_value_size,
            table="ctx",
        )


TestSQLiteStoreStateMachine = make_state_machine_test(lambda: SQLiteContextStore())


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "ctx.db")


@pytest.fixture
def store(db: str) -> Any:
    with SQLiteContextStore(db) as s:
        yield s


def _snapshot(store: SQLiteContextStore) -> dict[bytes, Any]:
    return {encode_key(k): v for k, v in store.items()}


# --------------------------------------------------------------------------- URLs and options


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite://", ":memory:"),
        ("sqlite:///", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite:///ctx.db", "ctx.db"),
        ("sqlite:///sub/dir/ctx.db", "sub/dir/ctx.db"),
        ("sqlite:////abs/path/ctx.db", "/abs/path/ctx.db"),
        ("SQLITE:////abs/my%20file.db", "/abs/my file.db"),
    ],
)
def test_parse_url(url: str, path: str) -> None:
    assert SQLiteContextStore._parse_url(url) == {"path": path}


@pytest.mark.parametrize("url", ["sqlite://host/ctx.db", "sqlite://ctx.db", "memory://"])
def test_parse_url_refuses_hosts_and_other_schemes(url: str) -> None:
    with pytest.raises(ContextConfigurationError):
        SQLiteContextStore._parse_url(url)


def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///rel.db") as rel:
        assert rel.path == str(tmp_path / "rel.db")
        rel.set("k", {"v": 1})
    assert (tmp_path / "rel.db").exists()
    with open_store(f"sqlite:///{tmp_path / 'rel.db'}") as absolute:  # four slashes
        assert absolute.get("k") == {"v": 1}
        assert repr(absolute) == f"SQLiteContextStore(sqlite:///{tmp_path / 'rel.db'})"


def test_memory_urls_give_private_databases() -> None:
    with open_store("sqlite://") as a, open_store("sqlite:///:memory:") as b:
        assert a.path == b.path == ":memory:"
        a.set("k", {"v": 1})
        assert b.get("k") is None
        assert repr(a) == "SQLiteContextStore(sqlite:///:memory:)"


def test_url_options(db: str) -> None:
    url = f"sqlite:///{db}?timeout=2.5&synchronous=full&namespace=a/b&max_value_size=100"
    with open_store(url) as s:
        assert s._config() == {
            "path": db,
            "max_value_size": 100,
            "timeout": 2.5,
            "synchronous": "FULL",
            "journal_mode": "WAL",
            "table": "context",
        }
        assert s.namespace == "a/b"
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with open_store(f"sqlite:///{db}", timeout=1) as s:  # keyword options override
        assert s._config()["timeout"] == 1.0


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": -1},
        {"timeout": "soon"},
        {"synchronous": "sometimes"},
        {"journal_mode": "MEMORY"},
        {"table": "bad name"},
        {"table": "sqlite_master"},
        {"namespace": "bad\ud800"},
    ],
)
def test_bad_options_are_refused(db: str, options: dict[str, Any]) -> None:
    with pytest.raises(ContextConfigurationError):
        SQLiteContextStore(db, **options)


def test_unknown_url_option_is_refused(db: str) -> None:
    with pytest.raises(ContextConfigurationError, match="unknown option"):
        open_store(f"sqlite:///{db}?colour=red")


def test_open_failure_is_a_store_error(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "ctx.db"
    with pytest.raises(ContextStoreError, match="open") as info:
        SQLiteContextStore(missing)
    assert isinstance(info.value.__cause__, sqlite3.Error)


# --------------------------------------------------------------------------- pragmas and schema


def test_file_uses_wal_and_configured_synchronous(db: str) -> None:
    with SQLiteContextStore(db, synchronous="normal") as s:
        s.set("k", {"v": 1})
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert s._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
        other = sqlite3.connect(db)
        try:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent
        finally:
            other.close()


def test_rollback_journal_mode_option(db: str) -> None:
    with SQLiteContextStore(db, journal_mode="DELETE") as s:
        s.set("k", {"v": 1})
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert s.get("k") == {"v": 1}


def test_schema_layout(db: str) -> None:
    SQLiteContextStore(db).close()
    conn = sqlite3.connect(db)
    try:
        meta = dict(conn.execute("SELECT key, value FROM context_meta"))
        assert meta["schema_version"] == str(SCHEMA_VERSION) == "2"
        for table, rowid in (("context", False), ("context_large", True)):
            assert [r[1] for r in conn.execute(f"PRAGMA table_info({table})")] == ["k", "v"]
            sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
            assert ("WITHOUT ROWID" not in sql) is rowid and "PRIMARY KEY" in sql
    finally:
        conn.close()


def test_stored_rows_are_encoded_key_and_json(store: SQLiteContextStore) -> None:
    ns_store = store.with_namespace("a/b")
    ns_store.set(("row", 1), {"x": [1, "é"]})
    rows = store._conn.execute("SELECT k, v FROM context").fetchall()
    assert rows == [(encode_namespace("a/b") + encode_key(("row", 1)), '{"x":[1,"é"]}')]
    # namespaces are disjoint key ranges: "a" is not a prefix range of "a/b" or "a\x00"
    store.with_namespace("a").set(("row", 1), {"x": 0})
    store.with_namespace("a\x01").set(("row", 1), {"x": 2})
    assert store.with_namespace("a").count() == 1
    assert store.with_namespace("a").list_keys() == [("row", 1)]


@pytest.mark.parametrize("version", ["3", "999", "0", "garbage", ""])
def test_unknown_schema_version_is_refused(db: str, version: str) -> None:
    with SQLiteContextStore(db) as s:
        s.set("k", {"v": 1})
    conn = sqlite3.connect(db)
    conn.execute("UPDATE context_meta SET value = ? WHERE key = 'schema_version'", (version,))
    conn.commit()
    conn.close()
    with pytest.raises(ContextSchemaError, match="schema_version"):
        SQLiteContextStore(db)


def test_missing_schema_version_row_is_refused(db: str) -> None:
    SQLiteContextStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM context_meta")
    conn.commit()
    conn.close()
    with pytest.raises(ContextSchemaError):
        SQLiteContextStore(db)


def test_foreign_table_is_refused(db: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE context (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(ContextSchemaError, match="not created by context-framework"):
        SQLiteContextStore(db)
    with SQLiteContextStore(db, table="ctx") as s:  # another table in the same file works
        s.set("k", {"v": 1})
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE other_large (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    with pytest.raises(ContextSchemaError, match=r"'other_large'.*not created by context-framework"):
        SQLiteContextStore(db, table="other")


def test_tables_in_one_file_are_separate(db: str) -> None:
    with SQLiteContextStore(db) as a, SQLiteContextStore(db, table="other") as b:
        a.set("k", {"from": "a"})
        b.set("k", {"from": "b"})
        assert a.get("k") == {"from": "a"}
        assert b.get("k") == {"from": "b"}


def test_read_only_file_with_schema_opens(db: str) -> None:
    with SQLiteContextStore(db) as s:
        s.set("k", {"v": 1})
    # The schema exists, so opening needs no write (checked on a read-only connection).
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        sqlite_store_module._ensure_schema(conn, conn.cursor(), "context", db)
    finally:
        conn.close()


# --------------------------------------------------------------------------- keys, values, order

TYPED_KEYS: list[Any] = [
    "plain",
    "",
    0,
    -1,
    2**70,
    -(2**70),
    1.5,
    float("-inf"),
    True,
    False,
    None,
    b"\x00bytes\xff",
    date(2024, 1, 2),
    datetime(2024, 1, 2, 3, 4, 5, 6),
    datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
    ("row", 1),
    ("row", 1.0),
    ("row", True),
    ("row", "1"),
    ("cell", 3, "A", None),
    ("nested", ("a", 1), (("b",),)),
    (),
]


def test_typed_keys_round_trip_and_stay_distinct(store: SQLiteContextStore) -> None:
    for i, key in enumerate(TYPED_KEYS):
        store.set(key, {"i": i})
    assert store.count() == len(TYPED_KEYS)
    for i, key in enumerate(TYPED_KEYS):
        assert store.get(key) == {"i": i}
    listed = store.list_keys()
    assert sorted(map(encode_key, listed)) == sorted(map(encode_key, TYPED_KEYS))
    by_encoding = {encode_key(k): k for k in listed}
    for key in TYPED_KEYS:
        got = by_encoding[encode_key(key)]
        assert got == key and type(got) is type(key)


def test_values_round_trip(db: str) -> None:
    value = {
        "str": "héllo \x00 ☃ 𝄞",
        "int": -(2**63),
        "uint": 2**64 - 1,
        "float": 1e-300,
        "bool": True,
        "none": None,
        "list": [1, [2, {"x": "y"}], []],
        "dict": {"nested": {"deep": [None]}},
        "tuple": (1, 2),
    }
    with SQLiteContextStore(db) as s:
        s.set("v", value)
    with SQLiteContextStore(db) as s:  # persisted
        got = s.get("v")
    assert got == {**value, "tuple": [1, 2]}
    assert type(got["float"]) is float and type(got["uint"]) is int


def test_lone_surrogate_is_refused_before_writing(store: SQLiteContextStore) -> None:
    with pytest.raises(ContextSerializationError, match="surrogate"):
        store.set("k", {"s": "a\ud800"})
    with pytest.raises(ContextSerializationError):
        store.set_many([("ok", {"s": "fine"}), ("bad", {"s": ["\udfff"]})])
    store.set("k", {"a": 1})
    with pytest.raises(ContextSerializationError):
        store.update("k", {"s": "\ud800"})
    assert _snapshot(store) == {encode_key("k"): {"a": 1}}


def test_scan_is_in_encoded_key_order(store: SQLiteContextStore) -> None:
    keys = [("row", i) for i in (-(2**40), -5, -1, 0, 1, 2, 255, 256, 2**40)]
    keys += [("column", "A"), ("column", "B"), ("row",), "scalar", 7]
    shuffled = keys[:]
    random.Random(1).shuffle(shuffled)
    for key in shuffled:
        store.set(key, {"k": repr(key)})
    assert list(store.scan()) == sorted(keys, key=encode_key)
    rows = [("row", i) for i in (-(2**40), -5, -1, 0, 1, 2, 255, 256, 2**40)]
    assert list(store.scan(("row",))) == [("row",), *rows]
    assert [k for k, _ in store.items(("row",))] == [("row",), *rows]
    assert store.count(("row",)) == len(rows) + 1
    assert store.count(("column",)) == 2
    assert store.count(("nothing",)) == 0
    assert store.count() == len(keys)
    assert store.count(()) == len(keys)


def test_scan_pages_through_many_keys(store: SQLiteContextStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store_module, "_PAGE_SIZE", 7)
    store.set_many([(("row", i), {"i": i}) for i in range(100)])
    store.set_many([(("col", i), {"i": i}) for i in range(10)])
    assert list(store.scan(("row",))) == [("row", i) for i in range(100)]
    assert list(store.items(("row",))) == [(("row", i), {"i": i}) for i in range(100)]
    assert len(store.list_keys()) == 110
    assert len(list(store.scan(("row",)))) == 100
    # Modifying the store during a scan neither repeats nor breaks it.
    seen = []
    for key in store.scan(("row",)):
        seen.append(key)
        if key == ("row", 10):
            store.delete(("row", 50))
            store.set(("row", 200), {"i": 200})
    assert seen == [("row", i) for i in range(100) if i != 50] + [("row", 200)]


def test_prefix_range_at_byte_boundary(store: SQLiteContextStore) -> None:
    # b"\xff" parts make prefix_range's upper bound None or a carry.
    store.set((b"\xff",), {"a": 1})
    store.set((b"\xff", 1), {"a": 2})
    store.set((b"\xfe",), {"a": 3})
    assert list(store.scan((b"\xff",))) == [(b"\xff",), (b"\xff", 1)]
    assert store.clear((b"\xff",)) == 2
    assert list(store.scan()) == [(b"\xfe",)]


def test_clear_prefix_and_namespaces(store: SQLiteContextStore) -> None:
    child = store.with_namespace("child")
    store.set_many([(("row", i), {"i": i}) for i in range(5)])
    store.set(("column", "A"), {"c": 1})
    child.set(("row", 1), {"child": True})
    assert store.clear(("row",)) == 5
    assert store.list_keys() == [("column", "A")]
    assert store.clear() == 1
    assert store.count() == 0
    assert child.get(("row", 1)) == {"child": True}  # other namespaces untouched


# --------------------------------------------------------------------------- batches


def test_get_many_order_duplicates_and_missing(store: SQLiteContextStore) -> None:
    store.set_many({("row", i): {"i": i} for i in range(10)})
    keys = [("row", 3), ("row", 99), ("row", 0), ("row", 3), ("row", True), "x"]
    got = store.get_many(keys)
    assert got == [{"i": 3}, None, {"i": 0}, {"i": 3}, None, None]
    assert got[0] is not got[3]  # duplicates are separate copies
    assert store.get_many([]) == []
    assert store.get_many(iter([("row", 1)])) == [{"i": 1}]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_get_many_chunks_dense_and_sparse(store: SQLiteContextStore, chunk: int) -> None:
    store._chunk = chunk
    store.set_many([(("row", i), {"i": i}) for i in range(300)])
    store.set(("other", 1), {"o": 1})
    rng = random.Random(chunk)
    dense = list(range(-5, 305))
    sparse = [0, 299, 150, 150, 7, 1000]
    shuffled = dense[:]
    rng.shuffle(shuffled)
    for wanted in (dense, sparse, shuffled, sparse + dense):
        got = store.get_many([("row", i) for i in wanted] + [("other", 1)])
        assert got == [{"i": i} if 0 <= i < 300 else None for i in wanted] + [{"o": 1}]
    # IN lists are padded to powers of two: few distinct statements get cached.
    assert all(n & (n - 1) == 0 or n == chunk for n in store._sql.in_cache)


def test_set_many_mapping_pairs_generator_and_last_wins(store: SQLiteContextStore) -> None:
    store.set_many({("a", 1): {"v": 1}})
    store.set_many([(("a", 2), {"v": 2}), (("a", 2), {"v": 3})])
    store.set_many((("a", i), {"v": i}) for i in range(3, 5))
    store.set_many([])
    assert store.get_many([("a", i) for i in range(1, 5)]) == [
        {"v": 1},
        {"v": 3},
        {"v": 3},
        {"v": 4},
    ]


@pytest.mark.parametrize(
    ("bad_item", "error"),
    [
        (("bad", {"s": {1, 2}}), ContextSerializationError),
        (("bad", {"f": float("nan")}), ContextSerializationError),
        ((["list", "key"], {"v": 1}), UnsupportedKeyError),
        (("big", {"s": "x" * 200}), ContextValueTooLargeError),
        ("not a pair", ContextSerializationError),
    ],
)
def test_set_many_bad_item_leaves_store_unchanged(db: str, bad_item: Any, error: type[Exception]) -> None:
    with SQLiteContextStore(db, max_value_size=100) as s:
        s.set("existing", {"v": 0})
        before = _snapshot(s)
        items = [(("row", i), {"i": i}) for i in range(50)] + [bad_item]
        items += [("existing", {"v": 1})]
        with pytest.raises(error):
            s.set_many(items)
        assert _snapshot(s) == before


def test_failed_batch_is_rolled_back(store: SQLiteContextStore) -> None:
    store.set("existing", {"v": 0})
    store._conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON context WHEN NEW.v LIKE '%boom%' "
        "BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    before = _snapshot(store)
    items = [(("row", i), {"i": i}) for i in range(100)] + [("x", {"s": "boom"})]
    with pytest.raises(ContextStoreError, match="set_many") as info:
        store.set_many(items)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert not isinstance(info.value, sqlite3.Error)
    assert _snapshot(store) == before
    assert not store._conn.in_transaction
    store.set("after", {"ok": True})  # the connection is still usable
    assert store.get("after") == {"ok": True}


def test_delete_many(store: SQLiteContextStore) -> None:
    store.set_many([(("row", i), {"i": i}) for i in range(5)])
    assert store.delete_many([("row", 1), ("row", 1), ("row", 3), ("row", 99)]) == 2
    assert store.delete_many([]) == 0
    assert store.list_keys() == [("row", 0), ("row", 2), ("row", 4)]
    with pytest.raises(UnsupportedKeyError):
        store.delete_many([("row", 0), ["bad"]])
    assert store.count() == 3  # nothing deleted


def test_delete_and_exists(store: SQLiteContextStore) -> None:
    store.set(("row", 1), {})
    assert store.exists(("row", 1)) and ("row", 1) in store
    assert store.get(("row", 1)) == {}
    assert not store.exists(("row", True))
    assert store.delete(("row", 1)) is True
    assert store.delete(("row", 1)) is False
    assert store.get(("row", 1), "default") == "default"


# --------------------------------------------------------------------------- large values

BIG = {"blob": "x" * 300_000}


def _records(store: SQLiteContextStore, table: str = "context") -> list[tuple[bytes, str]]:
    return store._conn.execute(f'SELECT k, v FROM "{table}" ORDER BY k').fetchall()


def _assert_side_table_matches(store: SQLiteContextStore) -> None:
    """Every large value has one row in the side table, and nothing else is there."""
    markers = [k for k, v in _records(store) if v == ""]
    assert [k for k, _ in _records(store, "context_large")] == markers


def test_large_values_are_kept_out_of_the_key_table(store: SQLiteContextStore) -> None:
    store.set(("annotation", "a", 0), BIG)
    store.set_many([(("annotation", "a", 1), BIG), (("row", 1), {"v": 1})])
    # Every record of the key table fits in its B-tree page, so a point lookup that
    # compares keys with it never reads a large value's overflow pages.
    longest = store._conn.execute("SELECT max(length(k) + length(v)) FROM context").fetchone()[0]
    assert longest < 512
    assert store.get(("annotation", "a", 0)) == BIG
    assert store.get_many([("annotation", "a", 1), ("row", 1), ("row", 2)]) == [BIG, {"v": 1}, None]
    _assert_side_table_matches(store)


def test_large_values_through_every_operation(
    store: SQLiteContextStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = store.with_namespace("a"), store.with_namespace("b")
    a.set("k", BIG)
    b.set("k", BIG)
    assert a.get("k") == BIG and a.exists("k") and a.count() == 1
    assert dict(a.items()) == {"k": BIG} and a.list_keys() == ["k"]
    a.set("k", {"small": 1})  # large -> small frees the side row
    assert a.get("k") == {"small": 1}
    _assert_side_table_matches(store)
    a.set_many([("k", BIG), ("m", {"small": 2}), ("n", BIG)])  # small -> large, and a new one
    assert a.get_many(["n", "k", "m", "none"]) == [BIG, BIG, {"small": 2}, None]
    _assert_side_table_matches(store)
    a.set_many([("k", {"small": 3}), ("k", BIG), ("n", {"small": 4})])  # last one wins
    assert a.get_many(["k", "n"]) == [BIG, {"small": 4}]
    _assert_side_table_matches(store)
    grown = a.update("m", {"pad": "y" * 5_000})  # update: small -> large
    assert a.get("m") == grown == {"small": 2, "pad": "y" * 5_000}
    assert a.update("k", {"blob": "z"}) == {"blob": "z"}  # update: large -> small
    assert a.increment("m", "small") == 3 and a.get("m") == {"small": 3, "pad": "y" * 5_000}
    _assert_side_table_matches(store)
    assert a.delete("m") is True and a.delete("m") is False and a.get("m") is None
    a.set_many([("p", BIG), ("q", BIG)])
    assert a.delete_many(["p", "nope"]) == 1 and a.get("p") is None
    _assert_side_table_matches(store)
    monkeypatch.setattr(store, "_chunk", 2)  # get_many of several chunks (one snapshot)
    assert a.get_many(["q", "k", "n", "q"]) == [BIG, {"blob": "z"}, {"small": 4}, BIG]
    monkeypatch.setattr(sqlite_store_module, "_PAGE_SIZE", 1)  # items() a page at a time
    assert dict(a.items()) == {"k": {"blob": "z"}, "n": {"small": 4}, "q": BIG}
    assert a.clear() == 3
    assert b.get("k") == BIG  # the other namespace keeps its large value
    _assert_side_table_matches(store)


def test_large_values_never_vanish_for_a_concurrent_reader(db: str) -> None:
    with SQLiteContextStore(db) as writer, SQLiteContextStore(db) as reader:
        writer.set("k", {"small": 0})
        errors: list[BaseException] = []
        done = threading.Event()

        def write() -> None:
            try:
                for i in range(150):
                    writer.set("k", BIG if i % 2 else {"small": i})
                    writer.set_many([("k", {"small": i}), ("other", BIG)] if i % 3 else [("k", BIG)])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=write)
        thread.start()
        reads = 0
        while not done.is_set() or reads < 10:
            assert reader.get("k") is not None
            assert reader.get_many(["k", "other"])[0] is not None
            assert "k" in dict(reader.items())
            reads += 1
        thread.join()
        assert errors == []
        _assert_side_table_matches(writer)


def test_version_1_file_is_migrated(db: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE context (k BLOB NOT NULL PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID")
    conn.execute("CREATE TABLE context_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.executemany("INSERT INTO context_meta VALUES (?, ?)", [("schema_version", "1"), ("key_codec", "1")])
    nsp = encode_namespace("")
    rows = [(("row", 1), '{"v":1}'), (("row", 2), '{"blob":"' + "x" * 300_000 + '"}')]
    conn.executemany("INSERT INTO context VALUES (?, ?)", [(nsp + encode_key(k), v) for k, v in rows])
    conn.commit()
    conn.close()
    with SQLiteContextStore(db) as s:
        assert s.get_many([("row", 1), ("row", 2)]) == [{"v": 1}, BIG]
        version = s._conn.execute("SELECT value FROM context_meta WHERE key = 'schema_version'").fetchone()
        assert version == (str(SCHEMA_VERSION),)
        assert [v for _, v in _records(s)] == ['{"v":1}', ""]
        _assert_side_table_matches(s)


# --------------------------------------------------------------------------- update / increment


def test_update_merges_and_creates(store: SQLiteContextStore) -> None:
    assert store.update("k", {"a": 1}) == {"a": 1}
    assert store.update("k", {"b": [1], "a": 2}) == {"a": 2, "b": [1]}
    assert store.get("k") == {"a": 2, "b": [1]}


def test_update_checks_merged_size(db: str) -> None:
    with SQLiteContextStore(db, max_value_size=40) as s:
        s.set("k", {"a": "x" * 20})
        with pytest.raises(ContextValueTooLargeError):
            s.update("k", {"b": "y" * 20})
        assert s.get("k") == {"a": "x" * 20}
        assert not s._conn.in_transaction


def test_increment(store: SQLiteContextStore) -> None:
    assert store.increment("c", "n") == 1
    assert store.increment("c", "n", 5) == 6
    assert store.increment("c", "f", 0.5) == 0.5
    assert store.get("c") == {"n": 6, "f": 0.5}
    store.set("s", {"n": "text", "b": True})
    for field in ("n", "b"):
        with pytest.raises(ContextValueError):
            store.increment("s", field)
    with pytest.raises(ContextValueError):
        store.increment("c", "n", float("nan"))
    with pytest.raises(ContextValueError):  # would leave the 64-bit range
        store.increment("c", "n", 2**64)
    assert store.get("c") == {"n": 6, "f": 0.5}
    assert store.get("s") == {"n": "text", "b": True}


# --------------------------------------------------------------------------- errors and locking


def _hold_write_lock(db: str, mode: str = "IMMEDIATE") -> sqlite3.Connection:
    other = sqlite3.connect(db, isolation_level=None, timeout=0, check_same_thread=False)
    other.execute(f"BEGIN {mode}")
    other.execute("INSERT INTO context (k, v) VALUES (x'00', '{}')")
    return other


@pytest.mark.parametrize("mode", ["IMMEDIATE", "EXCLUSIVE"])
def test_busy_database_raises_busy_error(db: str, mode: str) -> None:
    with SQLiteContextStore(db, timeout=0.2) as s:
        s.set("k", {"v": 1})
        other = _hold_write_lock(db, mode)
        try:
            operations = {
                "set": lambda: s.set("k", {"v": 2}),
                "set_many": lambda: s.set_many([("k", {"v": 2}), ("j", {"v": 3})]),
                "delete": lambda: s.delete("k"),
                "delete_many": lambda: s.delete_many(["k"]),
                "clear": lambda: s.clear(),
                "update": lambda: s.update("k", {"v": 2}),
                "increment": lambda: s.increment("k", "v"),
            }
            for op, call in operations.items():
                start = time.monotonic()
                with pytest.raises(ContextStoreBusyError) as info:
                    call()
                elapsed = time.monotonic() - start
                assert 0.15 < elapsed < 5, (op, elapsed)
                error = info.value
                assert not isinstance(error, sqlite3.Error)
                assert isinstance(error, ContextStoreError)
                assert isinstance(error.__cause__, sqlite3.OperationalError)
                assert db in str(error) and op in str(error)
            # WAL: readers are not blocked by the writer.
            assert s.get("k") == {"v": 1}
            assert s.get_many(["k"]) == [{"v": 1}]
            assert s.count() == 1
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert _snapshot(s) == {encode_key("k"): {"v": 1}}  # data intact
        s.set("k", {"v": 2})  # and writable again
        assert s.get("k") == {"v": 2}


def test_busy_reads_in_rollback_journal_mode(db: str) -> None:
    with SQLiteContextStore(db, timeout=0.2, journal_mode="DELETE") as s:
        s.set("k", {"v": 1})
        other = _hold_write_lock(db, "EXCLUSIVE")
        try:
            for call in (lambda: s.get("k"), lambda: list(s.scan()), lambda: s.exists("k")):
                with pytest.raises(ContextStoreBusyError):
                    call()
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert s.get("k") == {"v": 1}


def test_waits_for_a_short_lock(db: str) -> None:
    with SQLiteContextStore(db, timeout=10) as s:
        other = _hold_write_lock(db)
        releaser = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        releaser.start()
        try:
            start = time.monotonic()
            s.set("k", {"v": 1})
            assert time.monotonic() - start >= 0.2
        finally:
            releaser.join()
            other.close()
        assert s.get("k") == {"v": 1}


class _FlakyCursor:
    """Raises the given errors from execute/executemany first, then delegates."""

    def __init__(self, cursor: Any, errors: list[sqlite3.Error]) -> None:
        self._cursor = cursor
        self.errors = errors

    def _maybe_fail(self) -> None:
        if self.errors:
            raise self.errors.pop(0)

    def execute(self, *args: Any) -> Any:
        self._maybe_fail()
        return self._cursor.execute(*args)

    def executemany(self, *args: Any) -> Any:
        self._maybe_fail()
        return self._cursor.executemany(*args)


def _error(message: str, code: int) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


def test_busy_snapshot_errors_are_retried(store: SQLiteContextStore) -> None:
    # SQLITE_BUSY_SNAPSHOT (517) comes back at once, without SQLite's busy handler.
    flaky = _FlakyCursor(store._cur, [_error("database is locked", 517) for _ in range(3)])
    store._cur = flaky
    store.set("k", {"v": 1})
    flaky.errors = [_error("database is locked", 517), _error("database table is locked", 6)]
    assert store.increment("k", "v") == 2
    flaky.errors = [_error("database is locked", 5)]
    assert store.get("k") == {"v": 2}
    flaky.errors = [_error("database is locked", 5)]
    store.set_many([("a", {"x": 1}), ("b", {"x": 2})])
    assert store.get_many(["a", "b", "k"]) == [{"x": 1}, {"x": 2}, {"v": 2}]


def test_other_driver_errors_are_wrapped_at_once(store: SQLiteContextStore) -> None:
    store._cur = _FlakyCursor(store._cur, [_error("disk I/O error", 10)])
    start = time.monotonic()
    with pytest.raises(ContextStoreError, match="set failed") as info:
        store.set("k", {"v": 1})
    assert time.monotonic() - start < 1
    assert type(info.value) is ContextStoreError
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)


def test_dropped_table_is_a_store_error(db: str, store: SQLiteContextStore) -> None:
    store.set("k", {"v": 1})
    other = sqlite3.connect(db)
    other.execute("DROP TABLE context")
    other.commit()
    other.close()
    with pytest.raises(ContextStoreError, match="no such table") as info:
        store.get("k")
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    assert str(store) in str(info.value) or db in str(info.value)


# --------------------------------------------------------------------------- lifecycle


def test_closed_store_raises_closed_error(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store_module, "_PAGE_SIZE", 1)
    s = SQLiteContextStore(db)
    s.set_many([(("row", i), {"v": i}) for i in range(1, 4)])
    view = s.with_namespace("v")
    scan = s.scan()  # has fetched its first page
    s.close()
    s.close()  # idempotent
    assert s.closed and view.closed
    assert "closed" in repr(s)
    calls = {
        "set": lambda st: st.set("k", {"v": 1}),
        "get": lambda st: st.get("k"),
        "delete": lambda st: st.delete("k"),
        "exists": lambda st: st.exists("k"),
        "contains": lambda st: "k" in st,
        "scan": lambda st: st.scan(),
        "items": lambda st: st.items(),
        "count": lambda st: st.count(),
        "list_keys": lambda st: st.list_keys(),
        "set_many": lambda st: st.set_many([("k", {"v": 1})]),
        "set_many empty": lambda st: st.set_many([]),
        "get_many": lambda st: st.get_many(["k"]),
        "get_many empty": lambda st: st.get_many([]),
        "delete_many": lambda st: st.delete_many(["k"]),
        "delete_many empty": lambda st: st.delete_many([]),
        "clear": lambda st: st.clear(),
        "update": lambda st: st.update("k", {"v": 1}),
        "increment": lambda st: st.increment("k", "v"),
        "with_namespace": lambda st: st.with_namespace("x"),
        "enter": lambda st: st.__enter__(),
    }
    for name, call in calls.items():
        for target in (s, view):
            with pytest.raises(ContextStoreClosedError):
                call(target)
                pytest.fail(f"{name} did not raise")
    assert next(scan) == ("row", 1)
    with pytest.raises(ContextStoreClosedError):
        next(scan)  # a scan started before closing cannot fetch its next page
    with SQLiteContextStore(db) as again:  # the data is still in the file
        assert again.get(("row", 1)) == {"v": 1}


def test_closing_a_view_closes_only_the_view(store: SQLiteContextStore) -> None:
    view = store.with_namespace("a")
    grandchild = view.with_namespace("b")
    view.close()
    assert view.closed and not store.closed and not grandchild.closed
    with pytest.raises(ContextStoreClosedError):
        view.get("k")
    store.set("k", {"v": 1})
    grandchild.set("k", {"v": 2})
    assert store.get("k") == {"v": 1}
    assert grandchild.namespace == "a/b" and grandchild.get("k") == {"v": 2}
    store.close()
    assert grandchild.closed


def test_context_manager_closes(db: str) -> None:
    with SQLiteContextStore(db) as s:
        s.set("k", {"v": 1})
    assert s.closed
    with pytest.raises(ContextStoreClosedError):
        s.get("k")


def test_pickle_reopens_the_same_file(db: str) -> None:
    with SQLiteContextStore(db, timeout=3, table="t2", max_value_size=1000) as s:
        view = s.with_namespace("tenant")
        view.set("k", {"v": 1})
        clone = pickle.loads(pickle.dumps(view))
        try:
            assert clone is not view and clone._conn is not view._conn
            assert clone.namespace == "tenant"
            assert clone._config() == s._config()
            assert clone.get("k") == {"v": 1}
            clone.set("k2", {"v": 2})
            assert view.get("k2") == {"v": 2}  # same file, same data
        finally:
            clone.close()
        closed_clone = pickle.loads(pickle.dumps(s))
        closed_clone.close()


def test_pickle_memory_store_is_a_snapshot() -> None:
    with SQLiteContextStore() as s:
        s.with_namespace("n").set("k", {"v": [1]})
        clone = pickle.loads(pickle.dumps(s))
        s.set("later", {"v": 2})
        with clone:
            assert clone.with_namespace("n").get("k") == {"v": [1]}
            assert clone.get("later") is None
            clone.set("x", {"v": 3})
        assert s.get("x") is None


def test_namespace_views_share_the_connection(store: SQLiteContextStore) -> None:
    a = store.with_namespace("a")
    b = store.with_namespace("b")
    assert a._conn is store._conn is b._conn
    a.set("k", {"ns": "a"})
    b.set("k", {"ns": "b"})
    assert store.get("k") is None
    assert (a.get("k"), b.get("k")) == ({"ns": "a"}, {"ns": "b"})
    assert a.count() == b.count() == 1 and store.count() == 0


# --------------------------------------------------------------------------- threads


def test_threads_share_one_store(store: SQLiteContextStore) -> None:
    threads, per_thread = 8, 200
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            view = store.with_namespace(f"t{t}")
            for i in range(per_thread):
                store.increment("counter", "n")
                view.set(("row", i), {"t": t, "i": i})
                if i % 50 == 0:
                    store.set_many([((t, i, j), {"j": j}) for j in range(20)])
                    assert len(list(store.scan((t,)))) % 20 == 0
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert store.get("counter") == {"n": threads * per_thread}
    for t in range(threads):
        assert store.with_namespace(f"t{t}").count() == per_thread


# --------------------------------------------------------------------------- processes

MP_PROCESSES = 4
MP_KEYS = 5_000
MP_INCREMENTS = 1_000
MP_CHUNK = 250


def _mp_worker(store: SQLiteContextStore, worker: int, keys: int, increments: int) -> None:
    """Write ``keys`` distinct keys in chunks, interleaved with ``increments`` increments."""
    chunks = max(1, keys // MP_CHUNK)
    done = 0
    for c in range(chunks):
        start, stop = c * keys // chunks, (c + 1) * keys // chunks
        if c % 2:
            store.set_many([(("w", worker, i), {"w": worker, "i": i}) for i in range(start, stop)])
        else:
            for i in range(start, stop):
                store.set(("w", worker, i), {"w": worker, "i": i})
        target = (c + 1) * increments // chunks
        while done < target:
            store.increment(("counter",), "n")
            done += 1
    store.close()


def _run_processes(context: Any, store: SQLiteContextStore, keys: int, increments: int) -> None:
    procs = [
        context.Process(target=_mp_worker, args=(store, w, keys, increments)) for w in range(MP_PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * MP_PROCESSES


def _check_processes(store: SQLiteContextStore, keys: int, increments: int) -> None:
    expected = [("w", w, i) for w in range(MP_PROCESSES) for i in range(keys)]
    got = store.get_many(expected)
    assert [v for v in got if v is None] == []
    assert got == [{"w": k[1], "i": k[2]} for k in expected]
    assert store.count(("w",)) == MP_PROCESSES * keys
    assert store.get(("counter",)) == {"n": MP_PROCESSES * increments}


def test_processes_share_one_file_without_losing_updates(db: str) -> None:
    """4 spawned processes x (5,000 keys + 1,000 increments of one counter) on one file."""
    with SQLiteContextStore(db) as store:  # pickled to each child, which reopens the file
        _run_processes(multiprocessing.get_context("spawn"), store, MP_KEYS, MP_INCREMENTS)
        _check_processes(store, MP_KEYS, MP_INCREMENTS)
    with SQLiteContextStore(db) as store:
        _check_processes(store, MP_KEYS, MP_INCREMENTS)


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_store_inherited_through_fork_opens_its_own_connection(db: str) -> None:
    with SQLiteContextStore(db) as store:
        store.set(("counter",), {"n": 0})
        view = store.with_namespace("v")
        view.set("k", {"v": 1})
        _run_processes(multiprocessing.get_context("fork"), store, 500, 200)
        store.increment(("counter",), "n")  # the parent's connection is unharmed
        assert store.get(("counter",)) == {"n": MP_PROCESSES * 200 + 1}
        assert view.get("k") == {"v": 1}
        expected = [("w", w, i) for w in range(MP_PROCESSES) for i in range(500)]
        assert None not in store.get_many(expected)


def _fork_child_check(store: SQLiteContextStore, queue: Any) -> None:
    view = store.with_namespace("v")
    queue.put((store._conn is None, view.get("k"), store.get("k")))
    store.close()


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_fork_child_reopens_lazily_and_memory_keeps_a_copy(db: str) -> None:
    ctx = multiprocessing.get_context("fork")
    with SQLiteContextStore(db) as store, SQLiteContextStore() as memory:
        store.with_namespace("v").set("k", {"file": True})
        memory.with_namespace("v").set("k", {"memory": True})
        for target, expected in (
            (store, (True, {"file": True}, None)),
            (memory, (False, {"memory": True}, None)),
        ):
            queue = ctx.Queue()
            proc = ctx.Process(target=_fork_child_check, args=(target, queue))
            proc.start()
            result = queue.get(timeout=60)
            proc.join(timeout=60)
            assert proc.exitcode == 0
            assert result == expected
        assert store.with_namespace("v").get("k") == {"file": True}
        assert memory.with_namespace("v").get("k") == {"memory": True}


def test_concurrent_first_open_creates_the_schema_once(tmp_path: Path) -> None:
    db = str(tmp_path / "fresh.db")
    errors: list[BaseException] = []
    stores: list[SQLiteContextStore] = []

    def open_and_write(i: int) -> None:
        try:
            s = SQLiteContextStore(db)
            s.set(("opened", i), {"i": i})
            stores.append(s)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_and_write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert stores[0].count(("opened",)) == 8
    for s in stores:
        s.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM context_meta").fetchone()[0] == 2
    finally:
        conn.close()
