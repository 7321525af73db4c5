"""``ctx bench``'s baselines: what a careful user would write by hand, with our guarantees.

Each raw client keeps our table layout, durability and key/value rules; the
buffered rows are compared with a buffer written by hand over the same
client; every baseline reads back what it wrote.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from context_framework import ContextError
from context_framework.adapters.pandas_adapter import PandasContextAdapter
from context_framework.bench import redis_baseline, sql_baseline, sqlite_baseline
from context_framework.bench.baselines import DictBaselineAdapter, HandBuffer, check_read_back
from context_framework.bench.modes import spec_loop
from context_framework.sqlite_store import SQLiteContextStore


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return pd.DataFrame({"A": range(3000)})


def _layout(conn: sqlite3.Connection, table: str) -> tuple[Any, ...]:
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    columns = [row[2:] for row in conn.execute(f'PRAGMA table_info("{table}")')]  # type, notnull, dflt, pk
    pragmas = tuple(conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("journal_mode", "synchronous"))
    return "WITHOUT ROWID" in sql.upper(), columns, pragmas


def test_raw_sqlite3_has_our_table_layout_pragmas_and_autocommit(tmp_path: Path) -> None:
    with SQLiteContextStore(str(tmp_path / "ours.db")) as store:
        ours = _layout(store._conn, "context")  # type: ignore[arg-type]
    raw = sqlite_baseline._connect(str(tmp_path / "raw.db"))
    try:
        assert _layout(raw, "kv") == ours
        assert ours[0] and raw.isolation_level is None  # WITHOUT ROWID; autocommit, as ours
    finally:
        raw.close()


def test_dict_baseline_copies_values_in_and_out(df: pd.DataFrame) -> None:
    """Our no-aliasing guarantee: mutating what was given or returned changes nothing stored."""
    for adapter in (DictBaselineAdapter(df), PandasContextAdapter(df)):
        value: dict[str, Any] = {"meta": "a", "tags": ["x"]}
        adapter.add_context(("row", 1), value)
        value["meta"] = "changed"
        value["tags"].append("y")
        got = adapter.get_context(("row", 1))
        assert got == {"meta": "a", "tags": ["x"]}
        got["tags"].append("z")  # type: ignore[index]
        assert adapter.get_context(("row", 1)) == {"meta": "a", "tags": ["x"]}


@pytest.mark.parametrize(
    "value",
    [{"x": float("nan")}, {"x": float("inf")}, {"x": {1, 2}}, {1: "x"}, {"x": object()}, "text", None],
    ids=["nan", "inf", "set", "int-field", "object", "str", "none"],
)
def test_dict_baseline_refuses_the_values_ours_refuses(df: pd.DataFrame, value: Any) -> None:
    with pytest.raises(ContextError):
        PandasContextAdapter(df).add_context(("row", 1), value)
    with pytest.raises((TypeError, ValueError)):
        DictBaselineAdapter(df).add_context(("row", 1), value)


def test_dict_baseline_follows_a_new_index(df: pd.DataFrame) -> None:
    """The cached RangeIndex is dropped when the frame gets another index, as in our adapter."""
    frame = df.copy()
    baseline = DictBaselineAdapter(frame)
    baseline.add_context(("row", 5), {"a": 1})
    frame.index = pd.RangeIndex(100, 100 + len(frame))
    with pytest.raises(KeyError):
        baseline.add_context(("row", 5), {"a": 1})
    baseline.add_context(("row", 105), {"a": 1})


def test_hand_buffer_writes_every_n_and_serves_reads_from_its_cache(tmp_path: Path, df: pd.DataFrame) -> None:
    conn = sqlite_baseline._connect(str(tmp_path / "raw.db"))
    try:
        client = sqlite_baseline.RawSQLite(df, conn)
        buffer = HandBuffer(df, client, size=1000)
        for i in range(2500):
            buffer.add_context(("row", i), {"meta": f"value_{i}"})
        assert conn.execute("SELECT count(*) FROM kv").fetchone()[0] == 2000  # two full batches
        buffer.flush()
        assert conn.execute("SELECT count(*) FROM kv").fetchone()[0] == 2500
        assert client.get_context(("row", 2499)) == {"meta": "value_2499"}
        conn.execute("DELETE FROM kv")  # the reads that follow can only come from the cache
        assert buffer.get_context(("row", 7)) == {"meta": "value_7"}
        with pytest.raises(KeyError):
            buffer.add_context(("row", 10**6), {"meta": "x"})
    finally:
        conn.close()


@pytest.mark.parametrize(
    "fn",
    [
        sqlite_baseline.raw_sqlite_per_call,
        sqlite_baseline.raw_sqlite_batch,
        sqlite_baseline.raw_sqlite_buffered,
    ],
    ids=["per-call", "batch", "buffered"],
)
def test_sqlite_baselines_read_back_what_they_wrote(tmp_path: Path, df: pd.DataFrame, fn: Any) -> None:
    path = str(tmp_path / "raw.db")
    add_s, get_s = fn(path, df, 1200)
    assert add_s > 0 and get_s > 0
    assert not os.path.exists(path)  # the baseline removes its file


_SERVER_FNS = ("raw_per_call", "raw_batch", "raw_buffered")
_OPS = {"raw_per_call": 200, "raw_batch": 1200, "raw_buffered": 1200}  # buffered: one flush mid-loop


@pytest.mark.parametrize("name", _SERVER_FNS)
def test_redis_baselines_read_back_what_they_wrote(redis_url: str, df: pd.DataFrame, name: str) -> None:
    add_s, get_s = getattr(redis_baseline, name)(redis_url, df, _OPS[name])
    assert add_s > 0 and get_s > 0


@pytest.mark.servers
@pytest.mark.parametrize("name", _SERVER_FNS)
def test_redis_cluster_baselines_read_back_what_they_wrote(
    redis_cluster_url: str, df: pd.DataFrame, name: str
) -> None:
    from context_framework.bench.targets import cluster_url

    add_s, get_s = getattr(redis_baseline, name)(cluster_url(redis_cluster_url), df, 300)
    assert add_s > 0 and get_s > 0


@pytest.mark.parametrize("name", _SERVER_FNS)
@pytest.mark.parametrize("server", ["postgres", "mysql"])
def test_sql_baselines_read_back_what_they_wrote(
    request: pytest.FixtureRequest, server: str, name: str, df: pd.DataFrame
) -> None:
    url = request.getfixturevalue(f"{server}_url")
    add_s, get_s = getattr(sql_baseline, name)(url, df, _OPS[name])
    assert add_s > 0 and get_s > 0


def test_the_read_back_check_reads_the_backend_not_the_cache(tmp_path: Path, df: pd.DataFrame) -> None:
    """A hand-written buffer that lost its writes cannot report a time: the check asks the client."""
    conn = sqlite_baseline._connect(str(tmp_path / "raw.db"))
    try:
        client = sqlite_baseline.RawSQLite(df, conn)
        client.write_many = lambda pairs: None  # type: ignore[method-assign]
        buffer = HandBuffer(df, client, size=1000)
        spec_loop(buffer, 50, flush=True)
        assert buffer.get_context(("row", 49)) == {"meta": "value_49"}  # the cache has it...
        with pytest.raises(AssertionError, match="read back"):
            check_read_back(client, 50, "hand-written buffer")  # ...the table does not
    finally:
        conn.close()


def test_a_redis_bench_target_leaves_no_key_behind(redis_url: str) -> None:
    """Whatever namespaces a run used (adapters with name=...), its keys go when it ends."""
    import redis

    from context_framework.bench.targets import open_target

    with open_target("redis", redis_url) as store:
        prefix = store._config()["prefix"]
        store.set(("row", 1), {"a": 1})
        store.with_namespace("dataset-a").set(("row", 1), {"a": 2})
        store.with_namespace("dataset-a/sub").set(("row", 1), {"a": 3})
    client = redis.Redis.from_url(redis_url.partition("?")[0])
    try:
        assert list(client.scan_iter(match=prefix.replace("*", "\\*") + "*")) == []
    finally:
        client.close()
