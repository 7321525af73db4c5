"""``SparkContextAdapter``: context for a Spark DataFrame, written from the executors.

Key conventions (validated on the driver, and inside tasks for the task's own partition):

==================================  ==========================================
key                                 part of the DataFrame
==================================  ==========================================
``("dataset",)``                    the whole DataFrame
``("column", name)``                a column of the schema; a field nested in
                                    struct columns by its dotted name (``"a.b"``)
``("partition", i, ...)``           partition ``i`` (an int, ``0 <= i <
                                    df.rdd.getNumPartitions()``), or a key under it
``("row", label)``                  a row, by the value of ``row_column``
``("row", label, "column", name)``  a cell
==================================  ==========================================

Rows live on the executors, so the driver checks a row label's *type* against
``row_column`` (an int for integral columns, a str for strings...), not that
such a row exists (that would be a Spark job per key). Inside a task with
``pandas=True`` the labels are also checked against the partition's rows.
The partition count is computed once, on first use.

**Executor-side writes.** :meth:`SparkContextAdapter.write_partition_context`
runs ``fn(data, ctx)`` on every partition: ``data`` is the partition's rows
(an iterator of ``Row``, as ``rdd.mapPartitionsWithIndex`` gives them) or,
with ``pandas=True``, one pandas DataFrame (shipped through Arrow with
``mapInArrow``); ``ctx`` is a :class:`SparkPartitionContext` bound to the
partition (``ctx.number``). The store travels as its configuration
(:class:`~context_framework.distributed.StoreRef`) and is reopened once per
executor Python process, whose later tasks reuse it and its connections. What
``fn`` records is committed through the store's batch path when it returns.
:meth:`~SparkContextAdapter.summarize_partitions` records a summary per
partition (rows, nulls/min/max per column, or a user function) in one job;
:meth:`~SparkContextAdapter.map_partitions_with_context` is the lazy form whose
``fn`` returns the partition's new data.

**Idempotent under task retries.** Keys are deterministic (partition number,
row labels taken from the data), values are replaced, never merged or
incremented, and nothing is sent before ``fn`` returned: an attempt that fails
or whose Python worker dies writes nothing through ``ctx``, and one killed
during its commit leaves a subset of the keys its retry writes again. Partition
keys come in groups, ``("partition", i, group, ...)``: a task that writes keys
of a group first removes what an earlier attempt left in that group
(``replace=True``), so a retry that writes fewer keys leaves no stale one.
``("partition", i)`` itself is simply overwritten. Jobs that write different
groups, only rows, or only the summary never remove each other's context.
(Same rules as the Dask adapter.)

**Column metadata in the schema.** :meth:`~SparkContextAdapter.with_column_metadata`
returns the DataFrame with each column's context copied into its
``StructField.metadata`` (so it travels with the DataFrame, e.g. into Parquet);
:meth:`~SparkContextAdapter.load_column_metadata` reads it back into the store.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

try:
    from pyspark.sql import DataFrame
    from pyspark.sql import types as T
except ImportError as exc:  # pragma: no cover - exercised without pyspark installed
    from ..exceptions import MissingDependencyError

    raise MissingDependencyError.for_extra("spark", "pyspark") from exc

from ..base_store import ContextStore
from ..distributed import StoreRef, check_batch_size
from ..exceptions import (
    ContextConfigurationError,
    ContextKeyError,
    ContextSerializationError,
    LabelNotFoundError,
)
from ..keys import Key, normalize_key
from ..values import dumps_json, loads_json
from .partitioned import PartitionedAdapter, PartitionKeys, PartitionTaskContext, free_form_key

__all__ = ["SparkContextAdapter", "SparkPartitionContext"]
#: Key used in ``StructField.metadata`` by :meth:`SparkContextAdapter.with_column_metadata`.
METADATA_KEY = "context"
_INT64 = (-(1 << 63), (1 << 63) - 1)
_ORDERED = (T.NumericType, T.StringType, T.BooleanType, T.DateType, T.TimestampType, T.TimestampNTZType)
_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
# Row labels: the Python types a label may have for each kind of row_column.
_LABEL_TYPES: tuple[tuple[type, tuple[type, ...]], ...] = (
    (T.ByteType, (int,)),
    (T.ShortType, (int,)),
    (T.IntegerType, (int,)),
    (T.LongType, (int,)),
    (T.StringType, (str,)),
    (T.BinaryType, (bytes,)),
    (T.DateType, (date,)),
    (T.TimestampType, (datetime,)),
    (T.TimestampNTZType, (datetime,)),
    (T.FloatType, (float,)),
    (T.DoubleType, (float,)),
    (T.BooleanType, (bool,)),
)


# ---------------------------------------------------------------------- the schema's rules


def _fields(schema: T.StructType, prefix: str = "") -> Iterator[tuple[str, T.StructField]]:
    """Every field of ``schema`` by dotted name, struct fields nested inside included."""
    for f in schema.fields:
        name = prefix + f.name
        yield name, f
        if isinstance(f.dataType, T.StructType):
            yield from _fields(f.dataType, name + ".")


@dataclass(frozen=True)
class _Rules:
    """What key checks need of the DataFrame: picklable, so tasks check keys too."""

    columns: frozenset[str]
    top: tuple[str, ...]  # top-level columns, in order
    ordered: frozenset[str]  # top-level columns whose values have an order (min/max)
    integral: frozenset[str]
    row_column: str | None
    label_types: tuple[type, ...]
    strict: bool

    @classmethod
    def of(cls, schema: T.StructType, row_column: str | None, strict: bool) -> _Rules:
        label_types: tuple[type, ...] = ()
        if row_column is not None:
            if row_column not in schema.fieldNames():
                raise LabelNotFoundError(
                    f"row_column {row_column!r} is not a top-level column of the DataFrame "
                    f"(columns: {schema.fieldNames()!r})"
                )
            kind = schema[row_column].dataType
            label_types = next((t for c, t in _LABEL_TYPES if isinstance(kind, c)), ())
            if not label_types:
                raise ContextConfigurationError(
                    f"row_column {row_column!r} has type {kind.simpleString()}, which cannot label "
                    "rows; use an integer, string, binary, date, timestamp or floating-point column"
                )
        top = tuple(schema.fieldNames())
        return cls(
            columns=frozenset(name for name, _ in _fields(schema)),
            top=top,
            ordered=frozenset(f.name for f in schema.fields if isinstance(f.dataType, _ORDERED)),
            integral=frozenset(f.name for f in schema.fields if isinstance(f.dataType, _INTEGRAL)),
            row_column=row_column,
            label_types=label_types,
            strict=strict,
        )

    def column(self, name: Any, key: Any) -> str:
        if type(name) is not str:
            name = normalize_key(name)
        if type(name) is str and name in self.columns:
            return name
        close = difflib.get_close_matches(str(name), self.columns, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise LabelNotFoundError(f"{key!r}: {name!r} is not a column of the DataFrame{hint}")

    def label(self, label: Any, key: Any) -> Any:
        if self.row_column is None:
            raise ContextKeyError(
                f"{key!r}: Spark rows have no labels of their own; create the adapter with "
                "row_column='<id column>' to key rows by that column's values"
            )
        norm = normalize_key(label)
        if type(norm) not in self.label_types:
            wanted = " or ".join(t.__name__ for t in self.label_types)
            raise LabelNotFoundError(
                f"row label {label!r} in {key!r}: row_column {self.row_column!r} holds {wanted} values"
            )
        return norm

    def free_form(self, key: Any) -> Key:
        return free_form_key(key, self.strict, "Spark")


class _RuleKeys(PartitionKeys):
    """Key checks by the schema's :class:`_Rules` (``self.rules``), on the driver and in tasks."""

    rules: _Rules

    def _row_label(self, label: Any, key: Any) -> Any:
        return self.rules.label(label, key)

    def _column_name(self, name: Any, key: Any) -> Any:
        return self.rules.column(name, key)

    def _free_form_key(self, key: Any) -> Key:
        return self.rules.free_form(key)


# ---------------------------------------------------------------------- summaries


def _json_scalar(value: Any, integral: bool = False) -> Any:
    """A JSON-safe form of a summary value (``None`` for non-finite floats and unknown types)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return int(value) if integral and value.is_integer() else value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return None


def arrow_summary(table: Any, rules: _Rules, columns: Iterable[str] | None = None) -> dict[str, Any]:
    """``{"rows": n, "columns": {name: {"nulls", "min", "max"}}}`` of one partition's Arrow table.

    ``nulls`` counts nulls and NaNs; ``min``/``max`` (columns with ordered
    values only) skip both, exactly as Spark holds the values: numbers (decimals
    as strings), strings, booleans, dates and timestamps as ISO 8601 (an aware
    timestamp with its offset); ``None`` for an all-null column or an infinite bound.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, Any] = {}
    for name in rules.top if columns is None else columns:
        col = table.column(name)
        nulls = col.null_count
        if pa.types.is_floating(col.type):
            nulls += pc.sum(pc.is_nan(col)).as_py() or 0
        stats: dict[str, Any] = {"nulls": nulls}
        if name in rules.ordered:
            bounds = pc.min_max(col)
            integral = name in rules.integral
            stats["min"] = _json_scalar(bounds["min"].as_py(), integral)
            stats["max"] = _json_scalar(bounds["max"].as_py(), integral)
        out[name] = stats
    return {"rows": table.num_rows, "columns": out}


# ---------------------------------------------------------------------- the task's handle


class SparkPartitionContext(_RuleKeys, PartitionTaskContext):
    """The context handle a task gets for its partition (see the module docstring).

    Adds to :class:`~context_framework.adapters.partitioned.PartitionTaskContext`:
    key checks by the schema's rules, :meth:`add_row_context`, :meth:`summarize`
    and, with ``pandas=True``, the partition's data as ``frame`` (pandas) and
    ``table`` (Arrow).
    """

    def __init__(
        self,
        store: ContextStore,
        number: int,
        *,
        rules: _Rules,
        table: Any = None,
        batch_size: int = 10_000,
        replace: bool = True,
    ) -> None:
        super().__init__(store, number, batch_size=batch_size, replace=replace)
        self.rules = rules
        self.table = table
        self._frame: Any = None

    @property
    def frame(self) -> Any:
        """The partition as a pandas DataFrame (``pandas=True`` jobs; converted on first use)."""
        if self._frame is None:
            if self.table is None:
                raise ContextConfigurationError(
                    "this task got the partition as rows; run the job with pandas=True for a frame"
                )
            self._frame = self.table.to_pandas()
        return self._frame

    def add_row_context(self, rows: Any, metadata: Any) -> int:
        """Record per-row context under ``("row", label)``; return how many rows.

        ``rows``: labels (values of ``row_column``: a list, array or Series);
        with ``pandas=True`` also ``None`` (every row of the partition) or a
        boolean mask over :attr:`frame`, and labels are checked to be in the
        partition. ``metadata``: one dict for every row, or one per row in order
        (a list or Series of dicts, or a DataFrame whose rows become dicts, NaN as None).
        """
        return self._add_rows(self._labels(rows), metadata)

    def _labels(self, rows: Any) -> list[Any]:
        rules = self.rules
        if rules.row_column is None:
            rules.label(None, ("row", "?"))  # raises: no row_column
        ids = None if self.table is None else self.frame[rules.row_column]
        if rows is None or _is_mask(rows):
            if ids is None:
                raise ContextConfigurationError(
                    "rows=None or a boolean mask needs the partition's frame: run the job with pandas=True"
                )
            selected = ids if rows is None else ids[_mask(rows, len(ids))]
            if selected.isna().any():
                raise LabelNotFoundError(f"row_column {rules.row_column!r} is null in some selected rows")
            rows = selected
        if hasattr(rows, "to_pylist"):  # a pyarrow array or column
            rows = rows.to_pylist()
        labels = rows.tolist() if hasattr(rows, "tolist") else list(rows)
        ok = rules.label_types
        bad = next((x for x in labels if type(x) not in ok), _NONE)
        if bad is not _NONE:
            labels = [rules.label(x, ("row", x)) for x in labels]  # normalises numpy/pandas, or raises
        if ids is not None:
            import pandas as pd

            missing = ~pd.Index(labels).isin(ids)
            if labels and missing.any():
                absent = [x for x, m in zip(labels, missing) if m][:5]
                raise LabelNotFoundError(f"row label(s) {absent!r} are not in partition {self.number}")
        return labels

    def summarize(self, columns: Iterable[Any] | None = None) -> dict[str, Any]:
        """Record the built-in summary as this partition's context, ``("partition", i)``; return it."""
        if self.table is None:
            raise ContextConfigurationError(
                "summarize() needs the partition's data: run the job with pandas=True, "
                "or call adapter.summarize_partitions()"
            )
        cols = None if columns is None else [self.rules.column(c, ("column", c)) for c in columns]
        summary = {"partition": self.number, **arrow_summary(self.table, self.rules, cols)}
        self.add_partition_context(summary)
        return summary


_NONE: Any = object()


def _is_mask(rows: Any) -> bool:
    dtype = getattr(rows, "dtype", None)
    if dtype is not None:
        return getattr(dtype, "kind", None) == "b" or str(dtype) == "boolean"
    return isinstance(rows, list) and bool(rows) and all(type(x) is bool for x in rows)


def _mask(rows: Any, n: int) -> Any:
    import numpy as np

    mask = np.asarray(rows, dtype=bool)
    if mask.ndim != 1 or len(mask) != n:
        raise ContextKeyError(f"a boolean mask of {len(mask)} for a partition of {n} rows")
    return mask


# ---------------------------------------------------------------------- tasks


@dataclass
class _Job:
    """What a task needs: the store reference, the rules, the user's function and options."""

    ref: StoreRef
    rules: _Rules
    partitions: int
    kind: str  # "write" (returns a count), "summary", "map" (fn returns data)
    fn: Callable[..., Any] | None = None
    batch_size: int = 10_000
    replace: bool = True
    columns: tuple[str, ...] | None = None
    arrow_input: Any = None  # pandas=True: the DataFrame's Arrow schema (for empty partitions)
    arrow_schema: Any = None  # map jobs with pandas=True: the output's Arrow schema

    def context(self, number: int, table: Any = None) -> SparkPartitionContext:
        return SparkPartitionContext(
            self.ref.open(),
            number,
            rules=self.rules,
            table=table,
            batch_size=self.batch_size,
            replace=self.replace,
        )

    def run(self, ctx: SparkPartitionContext, data: Any) -> tuple[int, Any]:
        """Run the job on one partition and commit; return (entries written, result)."""
        result: Any = None
        if self.kind == "summary":
            result = ctx.record_summary(self.fn, data, self.columns)
        else:
            result = self.fn(data, ctx)  # type: ignore[misc]
            if self.kind == "map" and ctx.table is None:
                result = list(result)  # fn "returns" once its rows are all produced
        return ctx.commit(), result


def _task_number(job: _Job) -> int:
    from pyspark import TaskContext

    task = TaskContext.get()
    if task is None:
        raise ContextConfigurationError("this function runs inside Spark tasks only")
    number = task.partitionId()
    if not 0 <= number < job.partitions:
        raise ContextConfigurationError(
            f"Spark ran this job as partition {number}, but the DataFrame has {job.partitions} "
            "(adaptive query execution may have coalesced them); use pandas=False"
        )
    return number


def _arrow_task(job: _Job, batches: Iterator[Any]) -> Iterator[Any]:
    """``mapInArrow``: one partition's batches as a table, then the job; yields its report/output."""
    import pyarrow as pa

    number = _task_number(job)
    received = list(batches)  # Spark sends none for an empty partition
    table = pa.Table.from_batches(received, schema=None if received else job.arrow_input)
    ctx = job.context(number, table)
    written, result = job.run(ctx, ctx.frame if job.kind != "summary" or job.fn else None)
    if job.kind == "map":
        if isinstance(result, (pa.Table, pa.RecordBatch)):
            out = result
        else:
            out = pa.Table.from_pandas(result, schema=job.arrow_schema, preserve_index=False)
        yield from out.to_batches() if isinstance(out, pa.Table) else [out]
        return
    report = None if job.kind == "write" else dumps_json(result)
    yield pa.RecordBatch.from_pydict(
        {"partition": [number], "written": [written], "result": [report]}, schema=_report_arrow()
    )


def _rows_task(job: _Job, number: int, rows: Iterator[Any]) -> Iterator[Any]:
    """``rdd.mapPartitionsWithIndex``: the job on one partition's rows."""
    ctx = job.context(number)
    written, result = job.run(ctx, rows)
    for _ in rows:  # read what fn left: Spark reuses a Python worker (and its store) only then
        pass
    if job.kind == "map":
        yield from result
        return
    yield (number, written, None if job.kind == "write" else dumps_json(result))


_REPORT_SCHEMA = "partition long, written long, result string"


def _report_arrow() -> Any:
    import pyarrow as pa

    return pa.schema([("partition", pa.int64()), ("written", pa.int64()), ("result", pa.string())])


# ---------------------------------------------------------------------- the adapter


class SparkContextAdapter(_RuleKeys, PartitionedAdapter):
    """Context for a Spark DataFrame. See the module docstring for key conventions.

    Args:
        spark_df: the Spark DataFrame.
        context_store: a store or URL. Executors need a store they can reach
            (``redis://``, ``postgresql://``, ``sqlite:///path`` on one machine);
            the in-memory default serves driver-side keys only.
        name: optional namespace for this dataset inside the store.
        row_column: the top-level column whose values label rows (``("row", value)``).
        strict: refuse keys of other kinds (``False`` stores them unchecked).
        batch_size: writes per ``set_many`` when a task commits.
    """

    def __init__(
        self,
        spark_df: DataFrame,
        context_store: ContextStore | str | None = None,
        *,
        name: str | None = None,
        row_column: str | None = None,
        strict: bool = True,
        batch_size: int = 10_000,
        **wrapping: Any,
    ) -> None:
        if not isinstance(spark_df, DataFrame):
            raise TypeError(f"SparkContextAdapter wraps a Spark DataFrame, got {type(spark_df).__name__}")
        check_batch_size(batch_size)
        rules = _Rules.of(spark_df.schema, row_column, strict)
        super().__init__(spark_df, context_store, name=name, **wrapping)
        self.rules = rules
        self.row_column = row_column
        self.strict = strict
        self.batch_size = batch_size
        self._num_partitions: int | None = None

    @property
    def df(self) -> DataFrame:
        """The wrapped Spark DataFrame."""
        return self.data  # type: ignore[no-any-return]

    @property
    def num_partitions(self) -> int:
        """``df.rdd.getNumPartitions()``, computed once."""
        if self._num_partitions is None:
            self._num_partitions = int(self.data.rdd.getNumPartitions())
        return self._num_partitions

    @property
    def columns(self) -> list[str]:
        """Every column key name: top-level columns and dotted names of nested struct fields."""
        return [name for name, _ in _fields(self.data.schema)]

    _PARTITION_COUNT = "df.rdd.getNumPartitions()"

    def _partition_count(self) -> int:
        return self.num_partitions

    # ------------------------------------------------------------------ executor-side writes

    def _job(self, kind: str, fn: Any, **opts: Any) -> _Job:
        if fn is not None and not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        batch_size = opts.pop("batch_size", None) or self.batch_size
        return _Job(StoreRef(self._store), self.rules, self.num_partitions, kind, fn, batch_size, **opts)

    def _arrow_input(self, job: _Job) -> None:
        from pyspark.sql.pandas.types import to_arrow_schema

        job.arrow_input = to_arrow_schema(self.data.schema)

    def _collect(self, job: _Job, pandas: bool) -> list[tuple[int, int, Any]]:
        """Run a write or summary job; its (partition, written, result) reports in partition order."""
        if pandas:
            self._arrow_input(job)
            task = functools.partial(_arrow_task, job)
            rows = [tuple(r) for r in self.data.mapInArrow(task, _REPORT_SCHEMA).collect()]
        else:
            task = functools.partial(_rows_task, job)
            rows = self.data.rdd.mapPartitionsWithIndex(task).collect()
        rows.sort()
        numbers = [r[0] for r in rows]
        if numbers != list(range(job.partitions)):
            raise ContextConfigurationError(
                f"Spark reported partitions {numbers[:10]!r}... for a DataFrame of {job.partitions} "
                "partitions (adaptive query execution may have coalesced them); use pandas=False"
            )
        return rows

    def write_partition_context(
        self,
        fn: Callable[[Any, SparkPartitionContext], Any],
        *,
        pandas: bool = False,
        batch_size: int | None = None,
        replace: bool = True,
    ) -> list[int]:
        """Run ``fn(data, ctx)`` on every partition, on the executors; one Spark job.

        ``data`` is the partition's rows (an iterator of ``Row``) or, with
        ``pandas=True``, a pandas DataFrame (through Arrow); ``ctx`` is its
        :class:`SparkPartitionContext`. What ``fn`` records is committed in
        batches when it returns (``fn``'s own return value is ignored).
        Returns how many entries each partition wrote, in partition order.
        """
        job = self._job("write", fn, batch_size=batch_size, replace=replace)
        return [written for _, written, _ in self._collect(job, pandas)]

    def summarize_partitions(
        self,
        columns: Iterable[str] | None = None,
        fn: Callable[[Any], Mapping[str, Any]] | None = None,
        *,
        pandas: bool = True,
    ) -> list[dict[str, Any]]:
        """Record a summary of each partition under ``("partition", i)`` in one Spark job.

        The built-in summary is ``{"partition", "rows", "columns": {name:
        {"nulls", "min", "max"}}}`` over the top-level ``columns`` (all by
        default; min/max for columns with ordered values), computed with Arrow.
        ``fn(data) -> dict`` replaces it (``data`` as in
        :meth:`write_partition_context`). Only ``("partition", i)`` itself is
        overwritten: keys under it stay. Returns the summaries in order.
        """
        cols = None
        if columns is not None:
            cols = tuple(self.rules.column(c, ("column", c)) for c in columns)
            nested = [c for c in cols if c not in self.rules.top]
            if nested:
                raise ContextKeyError(f"summaries cover top-level columns; {nested!r} are nested fields")
        job = self._job("summary", fn, columns=cols)
        return [loads_json(result) for _, _, result in self._collect(job, pandas or fn is None)]

    def map_partitions_with_context(
        self,
        fn: Callable[[Any, SparkPartitionContext], Any],
        schema: T.StructType | str,
        *,
        pandas: bool = True,
        batch_size: int | None = None,
        replace: bool = True,
    ) -> DataFrame:
        """Lazy: a DataFrame of ``schema`` whose partitions are ``fn(data, ctx)``.

        ``fn`` returns the partition's new data: a pandas DataFrame (or Arrow
        table) with ``pandas=True``, else an iterable of rows. The context it
        records is committed when it returns, i.e. when (and each time) the
        partition is computed; the writes are idempotent.
        """
        if isinstance(schema, str):
            parsed = T._parse_datatype_string(schema)
            if not isinstance(parsed, T.StructType):
                raise ContextConfigurationError(f"schema must describe a struct, got {schema!r}")
            schema = parsed
        job = self._job("map", fn, batch_size=batch_size, replace=replace)
        if pandas:
            from pyspark.sql.pandas.types import to_arrow_schema

            self._arrow_input(job)
            job.arrow_schema = to_arrow_schema(schema)
            return self.data.mapInArrow(functools.partial(_arrow_task, job), schema)
        rdd = self.data.rdd.mapPartitionsWithIndex(functools.partial(_rows_task, job))
        return self.data.sparkSession.createDataFrame(rdd, schema)

    # ------------------------------------------------------------------ schema metadata

    def with_column_metadata(self, key: str = METADATA_KEY, *, as_json: bool = False) -> DataFrame:
        """The DataFrame with each column's context in its ``StructField.metadata[key]``.

        Nested struct fields (dotted names) get theirs too; other metadata is
        kept. Spark's metadata holds JSON objects with some limits (no nested or
        mixed-type lists, integers within 64 bits): a context beyond them raises
        :class:`ContextSerializationError`, unless ``as_json=True``, which stores
        every context as a JSON string instead. The data is not touched (a projection).
        """
        contexts = {
            k[1]: v
            for k, v in self._store.items(("column",))
            if type(k) is tuple and len(k) == 2 and k[1] in self.rules.columns
        }
        schema = self.data.schema
        return self.data.to(_with_metadata(schema, contexts, key, as_json, "", _owners(schema)))

    def load_column_metadata(self, key: str = METADATA_KEY) -> int:
        """Store the context found in ``StructField.metadata[key]`` of every column; return how many."""
        schema = self.data.schema
        owners = _owners(schema)
        pairs = []
        for name, f in _fields(schema):
            if owners[name] is not f or key not in f.metadata:
                continue
            value = f.metadata[key]
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    value = None
            if not isinstance(value, dict):
                raise ContextSerializationError(
                    f"StructField.metadata[{key!r}] of column {name!r} is not a context dict: {value!r}"
                )
            pairs.append((("column", name), value))
        self._store.set_many(pairs)
        return len(pairs)


def _owners(schema: T.StructType) -> dict[str, T.StructField]:
    """Dotted name -> the field it names (a top-level ``"a.b"`` wins over ``a``'s field ``b``)."""
    owners: dict[str, T.StructField] = {}
    for f in schema.fields:
        owners.setdefault(f.name, f)
    for name, f in _fields(schema):
        owners.setdefault(name, f)
    return owners


def _with_metadata(
    schema: T.StructType,
    contexts: Mapping[str, Any],
    key: str,
    as_json: bool,
    prefix: str,
    owners: Mapping[str, T.StructField],
) -> T.StructType:
    fields = []
    for f in schema.fields:
        name = prefix + f.name
        kind = f.dataType
        if isinstance(kind, T.StructType):
            kind = _with_metadata(kind, contexts, key, as_json, name + ".", owners)
        metadata = dict(f.metadata or {})
        if name in contexts and owners.get(name) is f:
            value = contexts[name]
            if as_json:
                metadata[key] = dumps_json(value)
            elif _spark_safe(value):
                metadata[key] = value
            else:
                raise ContextSerializationError(
                    f"the context of column {name!r} does not fit Spark's StructField metadata "
                    "(lists must hold one type of scalar or objects, integers 64 bits); "
                    "use with_column_metadata(as_json=True)"
                )
        fields.append(T.StructField(f.name, kind, f.nullable, metadata))
    return T.StructType(fields)


def _spark_safe(value: Any) -> bool:
    """Whether Spark's ``Metadata`` holds ``value`` exactly."""
    if value is None or isinstance(value, (str, bool, float)):
        return True
    if isinstance(value, int):
        return _INT64[0] <= value <= _INT64[1]
    if isinstance(value, dict):
        return all(_spark_safe(v) for v in value.values())
    if isinstance(value, list):
        kinds = {type(v) for v in value}
        if len(kinds) > 1 or kinds & {list, type(None)}:
            return False
        return all(_spark_safe(v) for v in value)
    return False
