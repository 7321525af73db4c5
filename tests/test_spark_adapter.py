"""SparkContextAdapter: key checks, executor-side writes, idempotent retries, on a real Spark.

One SparkSession (``local[2, 4]``: 2 cores, a task may fail up to 4 times)
is shared by the module; executors run this interpreter (``PYSPARK_PYTHON``).
The shared stores are a real Redis and a real PostgreSQL (``redis_url`` /
``postgres_url``), each test in its own namespace or table, removed afterwards.
Task functions live at module level and travel by value (the executors cannot
import this test module).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from context_framework.testing.fixtures import IN_CI

try:
    import pyarrow  # noqa: F401
    import pyspark
    from pyspark import TaskContext
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
except ImportError as exc:  # pragma: no cover - depends on the environment
    if IN_CI:
        raise
    pytest.skip(f"pyspark and pyarrow are needed: {exc}", allow_module_level=True)

if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):  # pragma: no cover
    if IN_CI:
        pytest.fail("CI=true but no Java runtime for Spark", pytrace=False)
    pytest.skip("Spark needs a Java runtime (java on PATH or JAVA_HOME)", allow_module_level=True)

from context_framework.adapters.spark_adapter import SparkContextAdapter
from context_framework.bench.targets import open_target
from context_framework.exceptions import (
    ContextConfigurationError,
    ContextKeyError,
    ContextSerializationError,
    LabelNotFoundError,
)
from context_framework.in_memory_context_store import InMemoryContextStore

pyspark.cloudpickle.register_pickle_by_value(sys.modules[__name__])

# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2, 4]")
        .appName("context-framework-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture
def redis_store(redis_url: str) -> Iterator[Any]:
    with open_target("redis", redis_url) as store:
        yield store


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Any]:
    with open_target("postgres", postgres_url) as store:
        yield store


def numbers(spark: SparkSession, rows: int = 100, partitions: int = 4) -> Any:
    """``id`` 0..rows-1 in ``partitions`` equal partitions, ``v = id / 2``, ``s = "s<id>"``."""
    return (
        spark.range(0, rows, numPartitions=partitions)
        .withColumn("v", F.col("id") / 2)
        .withColumn("s", F.concat(F.lit("s"), F.col("id").cast("string")))
    )


# ---------------------------------------------------------------------- task functions


def rows_and_group(rows: Any, ctx: Any) -> None:
    """Rows mode: every 10th row, and a count in the partition's "checks" group."""
    n = 0
    for row in rows:
        n += 1
        if row.id % 10 == 0:
            ctx.add(("row", row.id), {"v": row.v})
    ctx.add_partition_context({"rows": n}, "checks", "rows")


def summary_and_rows(frame: Any, ctx: Any) -> None:
    """Pandas mode: the built-in summary and 10,000 row contexts (the acceptance job)."""
    ctx.summarize()
    ctx.add_row_context(frame["id"].iloc[:10_000], {"source": "executor", "partition": ctx.number})


def where_opened(rows: Any, ctx: Any) -> None:
    ctx.add_partition_context({"pid": os.getpid(), "store": id(ctx.store)}, "opened")


def group_of(keys: int) -> Any:
    def write(frame: Any, ctx: Any) -> None:
        for i in range(keys):
            ctx.add_partition_context({"i": i}, "checks", i)

    return write


def only_rows(frame: Any, ctx: Any) -> None:
    ctx.add_row_context(None, {"seen": True})


def wrong_partition(rows: Any, ctx: Any) -> None:
    ctx.add(("partition", ctx.number + 1), {"x": 1})


def fail_first_attempt(victim: int, how: str) -> Any:
    """Partition ``victim`` fails on its first attempt, after leaving context behind."""

    def write(data: Any, ctx: Any) -> None:
        attempt = TaskContext.get().attemptNumber()
        labels = data["id"].tolist() if hasattr(data, "columns") else [row.id for row in data]
        ctx.add_partition_context({"attempt": attempt, "rows": len(labels)})
        for k in range(3):
            ctx.add_partition_context({"k": k, "attempt": attempt}, "parts", k)
        if ctx.number == victim and attempt == 0:
            ctx.add_row_context(labels, {"attempt": attempt})  # recorded, never committed
            # what an earlier attempt cut short mid-commit may leave: some rows (with
            # other values) and a key of the group that the retry does not write
            ctx.store.set_many([(("row", label), {"attempt": "partial"}) for label in labels[:5]])
            ctx.store.set(("partition", victim, "parts", "stale"), {"attempt": attempt})
            if how == "kill":
                os.kill(os.getpid(), 9)
            raise RuntimeError("first attempt fails on purpose")
        ctx.add_row_context(labels, {"attempt": attempt})

    return write


def doubled(frame: Any, ctx: Any) -> Any:
    ctx.add_partition_context({"rows": len(frame)}, "doubled")
    return frame.assign(v=frame.v * 2)[["id", "v"]]


def doubled_rows(rows: Any, ctx: Any) -> Iterator[tuple[int, float]]:
    n = 0
    for row in rows:
        n += 1
        yield (row.id, row.v * 2)
    ctx.add_partition_context({"rows": n}, "doubled")


# ---------------------------------------------------------------------- driver-side keys


def test_keys_are_checked_against_the_schema(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1, (2, "x"), "a")], "id long, st struct<b: int, c: string>, `a.b` string")
    adapter = SparkContextAdapter(df, row_column="id")
    assert adapter._num_partitions is None  # not computed before a partition key needs it
    adapter.add_context(("dataset",), {"d": 1})
    adapter.add_column_context("id", {"unit": "m"})
    adapter.add_column_context("st.b", {"nested": True})
    adapter.add_column_context("a.b", {"dotted": True})
    adapter.add_context(("row", 7), {"r": 1})
    adapter.add_context(("row", 7, "column", "st.c"), {"cell": 1})
    n = adapter.num_partitions
    adapter.add_partition_context(n - 1, {"p": 1}, "checks", 1)
    adapter.add_partition_context(0, {"p": 0})
    assert adapter.columns == ["id", "st", "st.b", "st.c", "a.b"]
    expected = {("dataset",), ("column", "id"), ("column", "st.b"), ("column", "a.b"), ("row", 7)}
    expected |= {("row", 7, "column", "st.c"), ("partition", n - 1, "checks", 1), ("partition", 0)}
    assert set(adapter.list_context_keys()) == expected
    assert adapter.get_partition_contexts()[0] == {"p": 0}
    for bad, error in [
        (("column", "ID"), LabelNotFoundError),
        (("column", "st.x"), LabelNotFoundError),
        (("column",), ContextKeyError),
        (("partition", n), LabelNotFoundError),
        (("partition", -1), LabelNotFoundError),
        (("partition", True), LabelNotFoundError),
        (("partition", 0.0), LabelNotFoundError),
        (("partition",), LabelNotFoundError),
        (("row", "7"), LabelNotFoundError),
        (("row", True), LabelNotFoundError),
        (("row", 7, "column", "zz"), LabelNotFoundError),
        (("row", 7, "cell"), ContextKeyError),
        (("dataset", 1), ContextKeyError),
        (("other", 1), ContextKeyError),
    ]:
        with pytest.raises(error):
            adapter.add_context(bad, {"x": 1})
        with pytest.raises(error):
            adapter.get_context(bad)
    with pytest.raises(LabelNotFoundError, match="did you mean 'id'"):
        adapter.get_context(("column", "idx"))
    assert adapter.count_context() == len(expected)
    loose = SparkContextAdapter(df, strict=False)
    assert loose.validate_key(("other", 1)) == ("other", 1)
    with pytest.raises(ContextKeyError, match="row_column"):
        loose.add_context(("row", 1), {"x": 1})


def test_constructor_errors(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1, [1])], "id long, arr array<int>")
    with pytest.raises(TypeError, match="Spark DataFrame"):
        SparkContextAdapter([1, 2])  # type: ignore[arg-type]
    with pytest.raises(LabelNotFoundError):
        SparkContextAdapter(df, row_column="zz")
    with pytest.raises(ContextConfigurationError, match="cannot label rows"):
        SparkContextAdapter(df, row_column="arr")
    with pytest.raises(ContextConfigurationError):
        SparkContextAdapter(df, batch_size=0)


def test_string_row_labels_and_namespaces(spark: SparkSession, redis_store: Any) -> None:
    df = spark.createDataFrame([("a", 1)], "name string, n int")
    one = SparkContextAdapter(df, redis_store, name="one", row_column="name")
    two = SparkContextAdapter(df, redis_store, name="two", row_column="name")
    one.add_context(("row", "a"), {"x": 1})
    with pytest.raises(LabelNotFoundError, match="holds str"):
        one.add_context(("row", 1), {"x": 1})
    assert two.list_context_keys() == []
    assert redis_store.with_namespace("one").list_keys() == [("row", "a")]


def test_in_memory_store_cannot_reach_executors(spark: SparkSession) -> None:
    adapter = SparkContextAdapter(numbers(spark), InMemoryContextStore())
    with pytest.raises(ContextConfigurationError, match="this process only"):
        adapter.write_partition_context(rows_and_group)


# ---------------------------------------------------------------------- executor-side writes


def test_rows_mode_writes_from_executors(spark: SparkSession, redis_store: Any) -> None:
    adapter = SparkContextAdapter(numbers(spark), redis_store, name="ds", row_column="id")
    assert adapter.write_partition_context(rows_and_group) == [4, 3, 4, 3]  # rows id % 10 == 0, 1 count
    expected = {("row", i) for i in range(0, 100, 10)}
    expected |= {("partition", p, "checks", "rows") for p in range(4)}
    assert set(adapter.list_context_keys()) == expected
    assert adapter.get_context(("row", 30)) == {"v": 15.0}
    assert adapter.get_partition_context(2, "checks", "rows") == {"rows": 25}
    assert redis_store.count() == 0  # all of it in the adapter's namespace


def test_pandas_mode_summary_and_rows(spark: SparkSession, redis_store: Any) -> None:
    adapter = SparkContextAdapter(numbers(spark, rows=40, partitions=2), redis_store, row_column="id")
    assert adapter.write_partition_context(summary_and_rows, pandas=True) == [21, 21]
    summary = adapter.get_partition_context(1)
    assert summary == {
        "partition": 1,
        "rows": 20,
        "columns": {
            "id": {"nulls": 0, "min": 20, "max": 39},
            "v": {"nulls": 0, "min": 10.0, "max": 19.5},
            "s": {"nulls": 0, "min": "s20", "max": "s39"},
        },
    }
    assert adapter.get_context(("row", 25)) == {"source": "executor", "partition": 1}
    assert sorted(k[1] for k in adapter.list_context_keys(("row",))) == list(range(40))


def test_store_opened_once_per_executor_process(spark: SparkSession, redis_store: Any) -> None:
    adapter = SparkContextAdapter(spark.range(0, 16, numPartitions=8), redis_store)
    adapter.write_partition_context(where_opened)
    opened = [adapter.get_partition_context(p, "opened") for p in range(8)]
    stores_by_pid: dict[int, set[int]] = {}
    for entry in opened:
        assert entry is not None
        stores_by_pid.setdefault(entry["pid"], set()).add(entry["store"])
    assert all(len(stores) == 1 for stores in stores_by_pid.values())  # one store per process
    assert len(stores_by_pid) < 8  # executor processes ran several tasks each, reusing it


def test_summaries_of_every_type(spark: SparkSession, redis_store: Any) -> None:
    rows = [
        (1, 1.5, "b", dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, 3, 4, 5), True, Decimal("1.25"), [1]),
        (None, float("nan"), None, None, None, None, None, None),
        (3, float("inf"), "a", dt.date(2023, 1, 2), dt.datetime(2023, 1, 2), False, Decimal("-2.50"), [2]),
    ]
    schema = (
        "i long, f double, s string, d date, t timestamp_ntz, b boolean, dec decimal(10,2), arr array<int>"
    )
    df = spark.createDataFrame(rows, schema).coalesce(1)
    adapter = SparkContextAdapter(df, redis_store)
    adapter.add_partition_context(0, {"kept": True}, "checks", 1)
    [summary] = adapter.summarize_partitions()
    assert summary == {
        "partition": 0,
        "rows": 3,
        "columns": {
            "i": {"nulls": 1, "min": 1, "max": 3},
            "f": {"nulls": 1, "min": 1.5, "max": None},  # NaN counted as null, inf has no JSON form
            "s": {"nulls": 1, "min": "a", "max": "b"},
            "d": {"nulls": 1, "min": "2023-01-02", "max": "2024-01-02"},
            "t": {"nulls": 1, "min": "2023-01-02T00:00:00", "max": "2024-01-02T03:04:05"},
            "b": {"nulls": 1, "min": False, "max": True},
            "dec": {"nulls": 1, "min": "-2.50", "max": "1.25"},
            "arr": {"nulls": 1},
        },
    }
    assert adapter.get_partition_context(0) == summary
    assert adapter.get_partition_context(0, "checks", 1) == {"kept": True}  # only ("partition", 0) rewritten
    [narrow] = adapter.summarize_partitions(columns=["i"])
    assert narrow["columns"] == {"i": {"nulls": 1, "min": 1, "max": 3}}
    [custom] = adapter.summarize_partitions(fn=lambda frame: {"n": len(frame)})
    assert custom == {"n": 3} == adapter.get_partition_context(0)
    [streamed] = adapter.summarize_partitions(fn=lambda rows: {"n": sum(1 for _ in rows)}, pandas=False)
    assert streamed == {"n": 3}
    with pytest.raises(LabelNotFoundError):
        adapter.summarize_partitions(columns=["zz"])


def test_empty_partitions_are_summarized(spark: SparkSession, redis_store: Any) -> None:
    adapter = SparkContextAdapter(spark.range(0, 2, numPartitions=4), redis_store)
    summaries = adapter.summarize_partitions()
    assert [s["rows"] for s in summaries] == [0, 1, 0, 1]
    assert summaries[0]["columns"] == {"id": {"nulls": 0, "min": None, "max": None}}


def test_groups_replace_only_what_a_job_writes(spark: SparkSession, redis_store: Any) -> None:
    adapter = SparkContextAdapter(spark.range(0, 20, numPartitions=2), redis_store, row_column="id")
    adapter.summarize_partitions()
    adapter.write_partition_context(group_of(5), pandas=True)
    assert adapter.count_context(("partition", 1, "checks")) == 5
    adapter.write_partition_context(group_of(2), pandas=True)  # a group is replaced as a whole
    assert sorted(adapter.list_context_keys(("partition", 1, "checks"))) == [
        ("partition", 1, "checks", 0),
        ("partition", 1, "checks", 1),
    ]
    adapter.write_partition_context(only_rows, pandas=True)  # rows only: partition context stays
    assert adapter.get_partition_context(1)["rows"] == 10  # type: ignore[index]
    assert adapter.count_context(("partition", 1)) == 3
    assert adapter.count_context(("row",)) == 20
    adapter.write_partition_context(group_of(1), pandas=True, replace=False)
    assert adapter.count_context(("partition", 1, "checks")) == 2  # overwritten, nothing removed


def test_tasks_check_their_keys(spark: SparkSession, redis_store: Any) -> None:
    adapter = SparkContextAdapter(spark.range(0, 4, numPartitions=2), redis_store)
    with pytest.raises(Exception, match="is not a key of this task's partition"):
        adapter.write_partition_context(wrong_partition)
    assert redis_store.count() == 0


def test_map_partitions_is_lazy(spark: SparkSession, redis_store: Any) -> None:
    adapter = SparkContextAdapter(numbers(spark, rows=20, partitions=2), redis_store)
    mapped = adapter.map_partitions_with_context(doubled, "id long, v double")
    assert adapter.count_context() == 0  # nothing runs before an action
    assert sorted(mapped.collect())[3] == (3, 3.0)
    assert adapter.get_partition_context(1, "doubled") == {"rows": 10}
    rows = adapter.map_partitions_with_context(doubled_rows, "id long, v double", pandas=False)
    assert rows.count() == 20
    assert adapter.count_context() == 2  # computed twice, written idempotently


# ---------------------------------------------------------------------- retries


@pytest.mark.parametrize(("how", "pandas"), [("raise", False), ("kill", False), ("kill", True)])
def test_a_retried_task_leaves_complete_context(
    spark: SparkSession, redis_store: Any, how: str, pandas: bool
) -> None:
    victim = 1
    adapter = SparkContextAdapter(spark.range(0, 40, numPartitions=4), redis_store, row_column="id")
    written = adapter.write_partition_context(fail_first_attempt(victim, how), pandas=pandas)
    assert written == [14, 14, 14, 14]  # 10 rows, the partition, 3 parts
    assert adapter.get_partition_context(victim) == {"attempt": 1, "rows": 10}  # the retry's
    assert adapter.get_partition_context(0) == {"attempt": 0, "rows": 10}
    parts = {("partition", victim, "parts", k) for k in range(3)}
    assert set(adapter.list_context_keys(("partition", victim, "parts"))) == parts  # no stale key
    rows = dict(adapter.iter_context(("row",)))
    assert sorted(rows) == [("row", i) for i in range(40)]
    assert {rows[("row", i)]["attempt"] for i in range(10, 20)} == {1}  # no partial value left
    assert adapter.count_context() == 40 + 4 * 4


# ---------------------------------------------------------------------- StructField.metadata


def test_column_context_travels_in_the_schema(spark: SparkSession, redis_store: Any) -> None:
    df = spark.createDataFrame([(1, (2, "x"))], "a long, st struct<b: int, c: string>")
    df = df.withMetadata("a", {"comment": "kept"})
    adapter = SparkContextAdapter(df, redis_store, name="src")
    adapter.add_column_context("a", {"unit": "m", "tags": ["x", "y"], "n": None, "deep": {"k": 1.5}})
    adapter.add_column_context("st.b", {"source": "lab"})
    mirrored = adapter.with_column_metadata()
    assert mirrored.schema["a"].metadata == {
        "comment": "kept",
        "context": {"unit": "m", "tags": ["x", "y"], "n": None, "deep": {"k": 1.5}},
    }
    assert mirrored.schema["st"].dataType["b"].metadata == {"context": {"source": "lab"}}
    assert mirrored.collect() == df.collect()
    copy = SparkContextAdapter(mirrored, redis_store, name="copy")
    assert copy.load_column_metadata() == 2
    assert copy.get_column_context("st.b") == {"source": "lab"}
    assert copy.get_column_context("a") == adapter.get_column_context("a")

    adapter.add_column_context("st.c", {"mixed": [1, "a"], "big": 2**63 + 1})
    with pytest.raises(ContextSerializationError, match="as_json=True"):
        adapter.with_column_metadata()
    as_json = adapter.with_column_metadata("ctx", as_json=True)
    assert as_json.schema["st"].dataType["c"].metadata == {
        "ctx": '{"mixed":[1,"a"],"big":9223372036854775809}'
    }
    again = SparkContextAdapter(as_json, redis_store, name="again")
    assert again.load_column_metadata("ctx") == 3
    assert again.get_column_context("st.c") == {"mixed": [1, "a"], "big": 2**63 + 1}


# ---------------------------------------------------------------------- acceptance


@pytest.mark.slow
@pytest.mark.parametrize("store_kind", ["redis", "postgres"])
def test_million_rows_from_executors(spark: SparkSession, request: Any, store_kind: str) -> None:
    """1,000,000 rows in 8 partitions: a summary and 10,000 row contexts per partition."""
    url = request.getfixturevalue("redis_url" if store_kind == "redis" else "postgres_url")
    with open_target(store_kind, url) as store:
        df = spark.range(0, 1_000_000, numPartitions=8).withColumn("x", F.col("id") % 7)
        adapter = SparkContextAdapter(df, store, row_column="id")
        assert adapter.write_partition_context(summary_and_rows, pandas=True) == [10_001] * 8
        keys = adapter.list_context_keys()
        expected = {("partition", p) for p in range(8)}
        expected |= {("row", p * 125_000 + i) for p in range(8) for i in range(10_000)}
        assert len(keys) == len(expected) == 80_008
        assert set(keys) == expected
        assert all(type(k[1]) is int for k in keys)
        summaries = adapter.get_partition_contexts()
        assert [s["rows"] for s in summaries] == [125_000] * 8  # type: ignore[index]
        assert summaries[7]["columns"]["id"] == {"nulls": 0, "min": 875_000, "max": 999_999}  # type: ignore[index]
        assert adapter.get_context(("row", 125_000)) == {"source": "executor", "partition": 1}


# ---------------------------------------------------------------------- benchmark


def test_engine_benchmark_runs(spark: SparkSession, redis_url: str) -> None:
    from context_framework.bench.engine_spark import format_spark_bench, run_spark_bench

    result = run_spark_bench(redis_url, partitions=2, keys_per_partition=500, spark=spark)
    assert result["keys"] == 1_000 and result["keys_per_s"] > 0 and result["per_call_keys_per_s"] > 0
    assert "executors writing" in format_spark_bench(result)
