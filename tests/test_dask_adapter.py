"""DaskContextAdapter: key checks, worker-side writes, idempotent retries, real engines.

The driver-side tests run on Dask's threads scheduler. The others run on one
``distributed.LocalCluster`` of 2 worker processes shared by the module, with
a real Redis and a real PostgreSQL (``redis_url`` / ``postgres_url``) as the
shared store, each test in its own namespace or table (removed afterwards).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from context_framework.testing.fixtures import IN_CI

try:
    import dask
    import dask.dataframe as dd
    import distributed
except ImportError as exc:  # pragma: no cover - depends on the environment
    if IN_CI:
        raise
    pytest.skip(f"dask[dataframe] and distributed are needed: {exc}", allow_module_level=True)

import numpy as np
import pandas as pd

from context_framework.adapters.dask_adapter import DaskContextAdapter, partition_summary
from context_framework.bench.targets import open_target
from context_framework.distributed import StoreRef
from context_framework.exceptions import (
    ContextConfigurationError,
    ContextKeyError,
    LabelNotFoundError,
)
from context_framework.sqlite_store import SQLiteContextStore

# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    )
    dask_client = distributed.Client(cluster)
    try:
        yield dask_client
    finally:
        dask_client.close()
        cluster.close()


@pytest.fixture
def threads() -> Iterator[None]:
    """Dask's in-process threads scheduler, even while the module's cluster client is up."""
    with dask.config.set(scheduler="threads"):
        yield


@pytest.fixture
def redis_store(redis_url: str) -> Iterator[Any]:
    with open_target("redis", redis_url) as store:
        yield store


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Any]:
    with open_target("postgres", postgres_url) as store:
        yield store


def make_partition(start: int, size: int) -> pd.DataFrame:
    """Rows ``start .. start + size - 1``: A = the label, B = a string, C = a float with NaN."""
    labels = np.arange(start, start + size, dtype="int64")
    return pd.DataFrame(
        {
            "A": labels,
            "B": [f"s{i:07d}" for i in labels],
            "C": np.where(labels % 10 == 0, np.nan, labels / 2),
        },
        index=pd.Index(labels),
    )


def frame(rows: int = 100, npartitions: int = 4) -> dd.DataFrame:
    """``rows`` rows in ``npartitions`` equal partitions, made on the workers (known divisions)."""
    size = rows // npartitions
    starts = [p * size for p in range(npartitions)]
    return dd.from_map(make_partition, starts, args=(size,), divisions=(*starts, rows - 1))


# ---------------------------------------------------------------------- task functions
# (module level: the worker processes import them by name)


def rows_and_summary(part: pd.DataFrame, ctx: Any, per_partition: int) -> None:
    ctx.summarize()
    ctx.add_row_context(part.index[:per_partition], {"source": "worker", "partition": ctx.number})


def where_opened(part: pd.DataFrame, ctx: Any) -> None:
    ctx.add_partition_context({"pid": os.getpid(), "store": id(ctx.store)}, "opened")


def fail_first_attempt(part: pd.DataFrame, ctx: Any, marker: str, victim: int, how: str) -> None:
    """Partition ``victim`` fails once, after leaving what a commit cut short would leave."""
    labels = part.index.tolist()
    if ctx.number == victim and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        # a first attempt cut short mid-commit: some rows, and a group key the retry won't write
        ctx.store.set_many([(("row", label), {"attempt": 1}) for label in labels[:3]])
        ctx.store.set(("partition", victim, "checks", "stale"), {"attempt": 1})
        if how == "kill":
            os._exit(1)
        raise RuntimeError("first attempt fails on purpose")
    ctx.add_partition_context({"rows": len(part)}, "checks", "rows")
    ctx.add_row_context(None, {"attempt": "final"})


def holds_open(payload: bytes) -> bool:
    from context_framework import distributed as shared

    return payload in shared._open


def row_records(part: pd.DataFrame, ctx: Any) -> None:
    ctx.add_row_context(None, part[["A", "C"]])


def wrong_partition(part: pd.DataFrame, ctx: Any) -> None:
    ctx.add_row_context(None, {"x": 1})
    ctx.add(("partition", ctx.number + 1), {"x": 1})


def checks_group(part: pd.DataFrame, ctx: Any, keys: int) -> None:
    for i in range(keys):
        ctx.add_partition_context({"i": i}, "checks", i)


def doubled(part: pd.DataFrame, ctx: Any) -> pd.DataFrame:
    ctx.add_partition_context({"rows": len(part)}, "doubled")
    return part.assign(A=part.A * 2)


# ---------------------------------------------------------------------- driver-side keys


def test_keys_are_checked_against_the_frame() -> None:
    adapter = DaskContextAdapter(frame())
    adapter.add_context(("dataset",), {"d": 1})
    adapter.add_column_context("A", {"unit": "m"})
    adapter.add_partition_context(3, {"p": 3})
    adapter.add_partition_context(np.int64(0), {"p": 0}, "checks", 1)
    adapter.add_context(("row", 99), {"r": 1})
    adapter.add_context(("row", 5, "column", "B"), {"cell": 1})
    assert adapter.get_partition_context(3) == {"p": 3}
    expected = [("dataset",), ("column", "A"), ("partition", 3), ("partition", 0, "checks", 1)]
    expected += [("row", 99), ("row", 5, "column", "B")]
    assert sorted(adapter.list_context_keys(), key=repr) == sorted(expected, key=repr)
    for bad in [
        ("column", "Z"),
        ("partition", 4),
        ("partition", -1),
        ("partition", True),
        ("partition", "0"),
        ("partition",),
        ("row", 100),  # beyond the last division
        ("row", 1.0),  # an integer index
        ("row", 5, "column", "Z"),
        ("row", 5, "cell"),
        ("dataset", 1),
        ("other", 1),
    ]:
        with pytest.raises(ContextKeyError):
            adapter.add_context(bad, {"x": 1})
    assert adapter.count_context() == 6
    assert DaskContextAdapter(frame(), strict=False).validate_key(("other", np.int64(1))) == ("other", 1)


def test_constructor_errors() -> None:
    with pytest.raises(TypeError, match="Dask DataFrame"):
        DaskContextAdapter(pd.DataFrame({"A": [1]}))
    with pytest.raises(LabelNotFoundError):
        DaskContextAdapter(frame(), row_column="Z")
    with pytest.raises(ContextConfigurationError):
        DaskContextAdapter(frame(), batch_size=0)


def test_partition_summary_is_json_safe() -> None:
    pdf = pd.DataFrame(
        {
            "n": [np.nan, np.nan],
            "t": pd.to_datetime(["2024-01-02", "2024-01-01"]),
            "mixed": [1, "a"],
            "cat": pd.Categorical(["x", "y"]),
            "flag": [True, False],
        }
    )
    assert partition_summary(pdf) == {
        "rows": 2,
        "columns": {
            "n": {"nulls": 2, "min": None, "max": None},
            "t": {"nulls": 0, "min": "2024-01-01T00:00:00", "max": "2024-01-02T00:00:00"},
            "mixed": {"nulls": 0},
            "cat": {"nulls": 0},
            "flag": {"nulls": 0, "min": False, "max": True},
        },
    }


# ---------------------------------------------------------------------- in-process schedulers


@pytest.mark.usefixtures("threads")
def test_in_process_scheduler_uses_the_store_itself() -> None:
    adapter = DaskContextAdapter(frame())  # in-memory store: fine when tasks run in this process
    summaries = adapter.summarize_partitions(columns=["A"])
    assert [s["rows"] for s in summaries] == [25] * 4
    assert summaries[1] == {
        "partition": 1,
        "rows": 25,
        "division": 25,
        "columns": {"A": {"nulls": 0, "min": 25, "max": 49}},
    }
    assert adapter.get_partition_contexts() == summaries
    assert adapter.write_partition_context(row_records) == [25] * 4
    assert adapter.get_context(("row", 10)) == {"A": 10, "C": None}
    assert adapter.get_context(("row", 11)) == {"A": 11, "C": 5.5}
    # a row-only job leaves the summaries alone
    assert adapter.get_partition_contexts() == summaries
    assert adapter.summarize_partitions(fn=lambda part: {"n": len(part)}) == [{"n": 25}] * 4
    assert adapter.get_partition_context(3) == {"n": 25}
    with pytest.raises(LabelNotFoundError):
        adapter.summarize_partitions(columns=["Z"])


@pytest.mark.usefixtures("threads")
def test_task_keys_are_scoped_to_the_partition() -> None:
    adapter = DaskContextAdapter(frame())
    with pytest.raises(LabelNotFoundError, match="not a key of this task's partition"):
        adapter.write_partition_context(wrong_partition)
    assert adapter.count_context(("partition",)) == 0  # a failed task sends nothing


@pytest.mark.usefixtures("threads")
def test_a_group_is_replaced_and_other_groups_stay(tmp_path: Path) -> None:
    adapter = DaskContextAdapter(frame(), SQLiteContextStore(str(tmp_path / "ctx.db")))
    adapter.summarize_partitions()
    adapter.add_partition_context(0, {"kept": True}, "notes")
    adapter.write_partition_context(checks_group, 5)
    assert adapter.count_context(("partition", 0, "checks")) == 5
    adapter.write_partition_context(checks_group, 2)  # fewer keys: no stale one left
    assert adapter.count_context(("partition", 0, "checks")) == 2
    assert adapter.get_partition_context(0, "notes") == {"kept": True}
    assert adapter.get_partition_context(0)["rows"] == 25  # type: ignore[index]
    adapter.write_partition_context(checks_group, 1, replace=False)
    assert adapter.count_context(("partition", 0, "checks")) == 2
    adapter.close()


@pytest.mark.usefixtures("threads")
def test_row_labels_from_a_column_or_a_datetime_index(tmp_path: Path) -> None:
    store = SQLiteContextStore(str(tmp_path / "ctx.db"))
    by_column = DaskContextAdapter(frame(20, 2), store, name="by_b", row_column="B")
    by_column.write_partition_context(row_records)
    keys = by_column.list_context_keys()
    assert sorted(keys) == [("row", f"s{i:07d}") for i in range(20)]
    assert by_column.get_context(("row", "s0000003")) == {"A": 3, "C": 1.5}

    times = pd.DataFrame({"v": range(6)}, index=pd.date_range("2024-01-01", periods=6, freq="h"))
    by_time = DaskContextAdapter(dd.from_pandas(times, npartitions=2), store, name="by_time")
    by_time.write_partition_context(lambda part, ctx: ctx.add_row_context(part.v > 0, {"ok": True}))
    keys = sorted(by_time.list_context_keys())
    assert keys == [("row", datetime(2024, 1, 1, h)) for h in range(1, 6)]
    assert all(type(k[1]) is datetime for k in keys)
    assert by_time.get_context(("row", pd.Timestamp("2024-01-01 02:00"))) == {"ok": True}
    with pytest.raises(LabelNotFoundError):
        by_time.get_context(("row", 3))
    store.close()


@pytest.mark.usefixtures("threads")
def test_lazy_map_partitions_with_context() -> None:
    adapter = DaskContextAdapter(frame())
    result = adapter.map_partitions_with_context(doubled)  # meta inferred: a dry run, not stored
    assert adapter.count_context() == 0
    assert result.A.sum().compute() == 2 * sum(range(100))
    assert [adapter.get_partition_context(i, "doubled") for i in range(4)] == [{"rows": 25}] * 4


# ---------------------------------------------------------------------- on a LocalCluster


def test_a_store_local_to_the_driver_is_refused(client: distributed.Client) -> None:
    adapter = DaskContextAdapter(frame())
    with pytest.raises(ContextConfigurationError, match="lives in this process only"):
        adapter.summarize_partitions()


def test_the_store_is_opened_once_per_worker_process(client: distributed.Client, redis_store: Any) -> None:
    adapter = DaskContextAdapter(frame(160, 16), redis_store)
    assert adapter.write_partition_context(where_opened) == [1] * 16
    opened = [m for _, m in adapter.iter_context(("partition",))]
    assert len(opened) == 16
    stores_by_pid: dict[int, set[int]] = {}
    for meta in opened:
        stores_by_pid.setdefault(meta["pid"], set()).add(meta["store"])
    assert os.getpid() not in stores_by_pid  # written from the workers
    assert 1 <= len(stores_by_pid) <= 2
    assert all(len(ids) == 1 for ids in stores_by_pid.values())  # one store per process
    payload = StoreRef(redis_store).payload
    held = client.run(holds_open, payload)
    assert set(held.values()) == {True}  # the workers keep it open for the next tasks


@pytest.mark.parametrize("how", ["raise", pytest.param("kill", marks=pytest.mark.slow)])
def test_a_retried_partition_leaves_complete_unduplicated_context(
    client: distributed.Client, redis_store: Any, tmp_path: Path, how: str
) -> None:
    adapter = DaskContextAdapter(frame(), redis_store)
    marker = str(tmp_path / "failed-once")
    retries = 1 if how == "raise" else None  # a dead worker is retried by the scheduler anyway
    written = adapter.write_partition_context(fail_first_attempt, marker, 2, how, retries=retries)
    assert os.path.exists(marker)  # the first attempt did fail
    assert written == [26] * 4
    keys = adapter.list_context_keys()
    assert len(keys) == len(set(keys)) == 104
    assert sorted(keys, key=repr) == sorted(
        [("row", i) for i in range(100)] + [("partition", p, "checks", "rows") for p in range(4)], key=repr
    )
    assert {m["attempt"] for k, m in adapter.iter_context(("row",))} == {"final"}


def test_namespaced_adapter_writes_only_its_namespace(client: distributed.Client, redis_store: Any) -> None:
    adapter = DaskContextAdapter(frame(), redis_store, name="dataset-a")
    adapter.write_partition_context(rows_and_summary, 5)
    assert adapter.count_context() == 4 + 20
    assert redis_store.count() == 0
    assert redis_store.with_namespace("dataset-a").count() == 24
    summaries = adapter.summarize_partitions(columns=["C"], retries=1)
    assert summaries[0]["columns"] == {"C": {"nulls": 3, "min": 0.5, "max": 12.0}}
    assert adapter.get_partition_contexts() == summaries
    assert adapter.count_context() == 24


def test_lazy_map_on_the_cluster(client: distributed.Client, redis_store: Any) -> None:
    adapter = DaskContextAdapter(frame(), redis_store)
    result = adapter.map_partitions_with_context(doubled, meta=frame()._meta)
    assert result.A.sum().compute() == 2 * sum(range(100))
    assert adapter.count_context(("partition",)) == 4


# ---------------------------------------------------------------------- acceptance


def _expected(pdf_rows: int, npartitions: int, per_partition: int) -> set[Any]:
    size = pdf_rows // npartitions
    rows = {("row", p * size + i) for p in range(npartitions) for i in range(per_partition)}
    return rows | {("partition", p) for p in range(npartitions)}


def _check_acceptance(store: Any, rows: int, npartitions: int, per_partition: int) -> None:
    adapter = DaskContextAdapter(frame(rows, npartitions), store)
    written = adapter.write_partition_context(rows_and_summary, per_partition)
    assert written == [per_partition + 1] * npartitions
    keys = adapter.list_context_keys()
    assert len(keys) == len(set(keys)) == npartitions * (per_partition + 1)
    assert set(keys) == _expected(rows, npartitions, per_partition)
    assert all(type(k[1]) is int for k in keys)
    summaries = adapter.get_partition_contexts()
    size = rows // npartitions
    assert [s["rows"] for s in summaries] == [size] * npartitions  # type: ignore[index]
    assert summaries[-1]["columns"]["A"] == {"nulls": 0, "min": rows - size, "max": rows - 1}  # type: ignore[index]
    assert adapter.get_context(("row", size + 1)) == {"source": "worker", "partition": 1}


@pytest.mark.parametrize("target", ["redis", "postgres"])
def test_workers_write_summaries_and_rows(client: distributed.Client, request: Any, target: str) -> None:
    store = request.getfixturevalue(f"{'redis' if target == 'redis' else 'pg'}_store")
    _check_acceptance(store, 40_000, 4, 1_000)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["redis", "postgres"])
def test_acceptance_one_million_rows_eight_partitions(
    client: distributed.Client, request: Any, target: str
) -> None:
    store = request.getfixturevalue(f"{'redis' if target == 'redis' else 'pg'}_store")
    _check_acceptance(store, 1_000_000, 8, 10_000)


# ---------------------------------------------------------------------- benchmark


def test_bench_reports_worker_throughput(client: distributed.Client, redis_url: str) -> None:
    from context_framework.bench.engine_dask import format_dask_bench, run_dask_bench
    from context_framework.bench.targets import store_kind

    result = run_dask_bench(redis_url, partitions=4, keys_per_partition=500, client=client)
    assert result["keys"] == 2_000 and result["workers"] == 2
    assert result["keys_per_s"] > 0 and result["baseline_keys_per_s"] > 0
    assert "keys/s" in format_dask_bench(result)
    assert store_kind("postgresql://u@h/db") == "postgres"
    with pytest.raises(ValueError, match="cannot be shared"):
        store_kind("memory://")
