"""``DaskContextAdapter``: context for a Dask DataFrame, written from the workers.

Key conventions (validated on the driver, and inside tasks for the task's own partition):

==================================  ==========================================
key                                 part of the frame
==================================  ==========================================
``("dataset",)``                    the whole frame
``("column", name)``                a column (``name in ddf.columns``)
``("partition", i, ...)``           partition ``i`` (``0 <= i < npartitions``),
                                    or a key under it
``("row", label)``                  a row, by index label (or by the value of
                                    ``row_column``)
``("row", label, "column", name)``  a cell
==================================  ==========================================

Rows live on the workers, so the driver checks only what it knows without
computing: the label's type against the index dtype and, when divisions are
known, that it falls between them.

**Executor-side writes.** :meth:`DaskContextAdapter.write_partition_context`
runs ``fn(partition, ctx)`` on every partition (``map_partitions`` with
``partition_info``); ``ctx`` is a :class:`DaskPartitionContext` bound to the
partition. The store travels as its configuration (:class:`~context_framework.
distributed.StoreRef`) and is reopened once per worker process, whose tasks
then share its connections. Writes are collected and committed through the
store's batch path when ``fn`` returns. :meth:`summarize_partitions` records
a summary per partition (rows, min/max/nulls per column, or a user function)
in one compute; :meth:`map_partitions_with_context` is the lazy form whose
``fn`` returns the partition's new data.

**Idempotent under retries.** Keys are deterministic (partition number,
row labels), values are replaced, never merged or incremented, and nothing is
sent before ``fn`` returned: a failed attempt writes nothing, and an attempt
killed during its commit leaves a subset of the keys its retry writes again.
Partition keys come in groups, ``("partition", i, group, ...)``: a task that
writes keys of a group first removes what an earlier attempt left in that
group (``replace=True``, the default), so a retry whose function writes fewer
keys leaves no stale one. ``("partition", i)`` itself is simply overwritten.
Jobs that write different groups (or only rows, or only the summary) never
remove each other's context.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

try:
    import dask
    import dask.dataframe as dd
    import dask.local
    import dask.threaded
    import numpy as np
    import pandas as pd
except ImportError as exc:  # pragma: no cover - exercised without dask installed
    from ..exceptions import MissingDependencyError

    raise MissingDependencyError.for_extra("dask", "dask") from exc

from ..base_store import ContextStore
from ..distributed import StoreRef, check_batch_size
from ..exceptions import ContextConfigurationError, ContextKeyError, LabelNotFoundError
from ..in_memory_context_store import InMemoryContextStore
from ..keys import Key, normalize_key
from .partitioned import PartitionedAdapter, PartitionTaskContext, free_form_key

__all__ = ["DaskContextAdapter", "DaskPartitionContext", "partition_summary"]


# ---------------------------------------------------------------------- key checks


def _column(columns: pd.Index, name: Any, key: Any) -> Any:
    if type(name) is str and name in columns:
        return name
    norm = normalize_key(name)
    for col in columns:
        actual = normalize_key(col)
        if actual == norm and type(actual) is type(norm):
            return actual
    sample = ", ".join(repr(c) for c in list(columns)[:5]) + (", ..." if len(columns) > 5 else "")
    raise LabelNotFoundError(f"column {name!r} in key {key!r} is not a column of the frame ([{sample}])")


# ---------------------------------------------------------------------- summaries


def _json_scalar(value: Any) -> Any:
    """A JSON-safe form of a pandas/numpy scalar (``None`` for missing values)."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return pd.Timedelta(value).isoformat()
    return None


def partition_summary(frame: pd.DataFrame, columns: Iterable[Any] | None = None) -> dict[str, Any]:
    """The built-in summary of one partition: ``{"rows": n, "columns": {name: {...}}}``.

    Per column: ``nulls`` and, where the values are ordered, ``min`` and ``max``
    (numbers and strings as they are, timestamps as ISO 8601; ``None`` for an
    all-null column). Column names become strings (JSON object keys).
    """
    selected = list(frame.columns) if columns is None else list(columns)
    out: dict[str, Any] = {}
    for name in selected:
        series = frame[name]
        stats: dict[str, Any] = {"nulls": int(series.isna().sum())}
        if not isinstance(series.dtype, pd.CategoricalDtype) or series.cat.ordered:
            try:
                stats["min"] = _json_scalar(series.min())
                stats["max"] = _json_scalar(series.max())
            except (TypeError, ValueError):  # mixed types: no order
                pass
        out[str(name)] = stats
    return {"rows": len(frame), "columns": out}


# ---------------------------------------------------------------------- the task's handle


class DaskPartitionContext(PartitionTaskContext):
    """The context handle a task gets for its partition (see the module docstring).

    Adds to :class:`~context_framework.adapters.partitioned.PartitionTaskContext`:
    the partition's data (``frame``), its ``division``, :meth:`add_row_context`
    and :meth:`summarize`.
    """

    def __init__(
        self,
        store: ContextStore,
        number: int,
        frame: pd.DataFrame,
        *,
        division: Any = None,
        batch_size: int = 10_000,
        replace: bool = True,
        strict: bool = True,
        row_column: Any = None,
    ) -> None:
        super().__init__(store, number, batch_size=batch_size, replace=replace)
        self.frame = frame
        self.division = division
        self.strict = strict
        self.row_column = row_column

    def _row_label(self, label: Any, key: Any) -> Any:
        return normalize_key(label)

    def _column_name(self, name: Any, key: Any) -> Any:
        return _column(self.frame.columns, name, key)

    def _free_form_key(self, key: Any) -> Key:
        return free_form_key(key, self.strict, "Dask")

    def row_labels(self, rows: Any = None) -> list[Any]:
        """The row labels of ``rows`` (all rows, a boolean mask, a label slice or labels)."""
        selected = self._select(rows)
        values = selected.index if self.row_column is None else selected[self.row_column]
        if values.dtype.kind in "iub":
            return values.tolist()  # type: ignore[no-any-return]
        return [normalize_key(v) for v in values]

    def _select(self, rows: Any) -> pd.DataFrame:
        frame = self.frame
        if rows is None:
            return frame
        if isinstance(rows, slice):
            return frame.loc[rows]
        if isinstance(rows, (pd.Series, np.ndarray, list)) and np.asarray(rows).dtype == bool:
            mask = np.asarray(rows)
            if len(mask) != len(frame):
                raise ContextKeyError(f"a boolean mask of {len(mask)} for a partition of {len(frame)} rows")
            return frame[mask]
        labels = list(rows) if not isinstance(rows, pd.Index) else rows
        missing = pd.Index(labels).difference(frame.index)
        if len(missing):
            raise LabelNotFoundError(
                f"row label(s) {list(missing[:5])!r} are not in partition {self.number} ({len(frame)} rows)"
            )
        return frame.loc[labels]

    def add_row_context(self, rows: Any, metadata: Any) -> int:
        """Record per-row context under ``("row", label)``; return how many rows.

        ``rows``: ``None`` (every row of the partition), a boolean mask, a label
        slice (as with ``.loc``) or a list of index labels. ``metadata``: one
        dict for every row, or one per selected row in order (a list or Series
        of dicts, or a DataFrame whose rows become dicts, NaN as ``None``).
        Labels come from the index, or from ``row_column`` when the adapter has one.
        """
        return self._add_rows(self.row_labels(rows), metadata)

    def summarize(self, columns: Iterable[Any] | None = None) -> dict[str, Any]:
        """Record :func:`partition_summary` (plus the division) as this partition's context."""
        summary = {"partition": self.number, **partition_summary(self.frame, columns)}
        summary["division"] = _json_scalar(self.division)
        self.add_partition_context(summary)
        return summary


# ---------------------------------------------------------------------- shipping the store


class _LocalRef:
    """The store itself, for schedulers that run tasks in this process (threads, sync)."""

    def __init__(self, store: ContextStore) -> None:
        self.store = store

    def open(self) -> ContextStore:
        return self.store

    def __dask_tokenize__(self) -> Any:
        return ("context-local-store", id(self.store))

    def __reduce__(self) -> Any:
        raise ContextConfigurationError(
            f"{self.store!r} lives in this process only and cannot go to other processes; "
            "use a store they can reach (sqlite:///path, redis://, postgresql://...)"
        )


@dataclass
class _Job:
    """What a task needs: the store reference, the user's function and the options."""

    ref: Any
    kind: str  # "map" (fn returns data), "write" (returns a count), "summary"
    fn: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 10_000
    replace: bool = True
    strict: bool = True
    row_column: Any = None
    columns: list[Any] | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __dask_tokenize__(self) -> Any:
        return ("context-job", self.token)


def _context_task(part: pd.DataFrame, *, _job: _Job, partition_info: Any = None) -> Any:
    """One partition: build its handle, run the job, commit."""
    job = _job
    if partition_info is None:  # Dask inferring meta on an empty frame: a dry run, never stored
        ctx = DaskPartitionContext(
            InMemoryContextStore(), 0, part, strict=job.strict, row_column=job.row_column
        )
        return job.fn(part, ctx, *job.args, **job.kwargs)  # type: ignore[misc]
    number = partition_info["number"]
    ctx = DaskPartitionContext(
        job.ref.open(),
        number,
        part,
        division=partition_info.get("division"),
        batch_size=job.batch_size,
        replace=job.replace,
        strict=job.strict,
        row_column=job.row_column,
    )
    if job.kind == "summary":
        summary = ctx.record_summary(job.fn, part, job.columns)
        ctx.commit()
        return pd.Series([summary], index=[number], dtype=object)
    result = job.fn(part, ctx, *job.args, **job.kwargs)  # type: ignore[misc]
    written = ctx.commit()
    if job.kind == "map":
        return result
    return pd.Series([written], index=[number], dtype="int64")


# ---------------------------------------------------------------------- the adapter


class DaskContextAdapter(PartitionedAdapter):
    """Context for a Dask DataFrame. See the module docstring for key conventions.

    Args:
        dask_df: the Dask DataFrame.
        context_store: a store or URL (in-memory by default: usable with the
            threads/sync schedulers only; workers need a store they can reach).
        name: optional namespace for this dataset inside the store.
        strict: refuse keys of other kinds (``False`` stores them unchecked).
        row_column: take row labels from this column instead of the index.
        batch_size: writes per ``set_many`` when a task commits.
    """

    def __init__(
        self,
        dask_df: dd.DataFrame,
        context_store: ContextStore | str | None = None,
        *,
        name: str | None = None,
        strict: bool = True,
        row_column: Any = None,
        batch_size: int = 10_000,
        **wrapping: Any,
    ) -> None:
        if not isinstance(dask_df, dd.DataFrame):
            raise TypeError(f"DaskContextAdapter wraps a Dask DataFrame, got {type(dask_df).__name__}")
        if row_column is not None and row_column not in dask_df.columns:
            raise LabelNotFoundError(f"row_column {row_column!r} is not a column of the frame")
        check_batch_size(batch_size)
        super().__init__(dask_df, context_store, name=name, **wrapping)
        self.strict = strict
        self.row_column = row_column
        self.batch_size = batch_size

    @property
    def ddf(self) -> dd.DataFrame:
        """The wrapped Dask DataFrame."""
        return self.data  # type: ignore[no-any-return]

    @property
    def npartitions(self) -> int:
        return int(self.data.npartitions)

    def _partition_count(self) -> int:
        return self.npartitions

    # ------------------------------------------------------------------ validation

    def _column_name(self, name: Any, key: Any) -> Any:
        return _column(self.data.columns, name, key)

    def _free_form_key(self, key: Any) -> Key:
        return free_form_key(key, self.strict, "Dask")

    def _row_label(self, label: Any, key: Any) -> Any:
        norm = normalize_key(label)
        if self.row_column is not None:
            return norm
        index = self.data._meta.index
        kind = index.dtype.kind
        if kind in "iu" and type(norm) is not int:
            raise LabelNotFoundError(
                f"row label {label!r} in {key!r}: the index holds integers; use an int label"
            )
        if kind == "M" and not isinstance(norm, datetime):
            raise LabelNotFoundError(f"row label {label!r} in {key!r}: the index holds timestamps")
        if self.data.known_divisions:
            low, high = self.data.divisions[0], self.data.divisions[-1]
            try:
                inside = bool(low <= norm <= high)
            except TypeError:
                inside = False
            if not inside:
                raise LabelNotFoundError(
                    f"row label {label!r} in {key!r} is outside the frame's divisions [{low!r}, {high!r}]"
                )
        return norm

    # ------------------------------------------------------------------ worker-side writes

    def _ref(self) -> Any:
        """The store as tasks reach it: by configuration, or itself for in-process schedulers."""
        store = self._store
        try:
            return StoreRef(store)
        except ContextConfigurationError:
            scheduler = dask.base.get_scheduler(collections=[self.data])
            if scheduler in (dask.threaded.get, dask.local.get_sync):
                return _LocalRef(store)
            raise

    def _job(self, kind: str, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], **opts: Any) -> _Job:
        if fn is not None and not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        batch_size = opts.pop("batch_size", None) or self.batch_size
        return _Job(
            self._ref(),
            kind,
            fn,
            args,
            kwargs,
            batch_size=batch_size,
            strict=self.strict,
            row_column=self.row_column,
            **opts,
        )

    def _run(self, job: _Job, meta: pd.Series, retries: int | None) -> list[Any]:
        mapped = self.data.map_partitions(
            _context_task,
            _job=job,
            meta=meta,
            enforce_metadata=False,  # the per-partition results do not follow the frame's divisions
            align_dataframes=False,
        )
        options = {} if retries is None else {"retries": retries}
        result = mapped.compute(**options)
        return result.sort_index().tolist()  # type: ignore[no-any-return]

    def write_partition_context(
        self,
        fn: Callable[..., Any],
        *args: Any,
        retries: int | None = None,
        batch_size: int | None = None,
        replace: bool = True,
        **kwargs: Any,
    ) -> list[int]:
        """Run ``fn(partition, ctx, *args, **kwargs)`` on every partition, on the workers.

        ``ctx`` is the partition's :class:`DaskPartitionContext`; what ``fn``
        records is committed in batches when it returns (``fn``'s own return
        value is ignored). ``retries`` is passed to ``compute``. Returns how many
        entries each partition wrote, in partition order.
        """
        job = self._job("write", fn, args, kwargs, batch_size=batch_size, replace=replace)
        return self._run(job, pd.Series([], dtype="int64"), retries)

    def summarize_partitions(
        self,
        columns: Iterable[Any] | None = None,
        fn: Callable[[pd.DataFrame], Mapping[str, Any]] | None = None,
        *,
        retries: int | None = None,
    ) -> list[dict[str, Any]]:
        """Record a summary of each partition under ``("partition", i)`` in one compute.

        The built-in summary is ``{"partition", "rows", "division", "columns":
        {name: {"nulls", "min", "max"}}}`` over ``columns`` (all by default);
        ``fn(partition) -> dict`` replaces it. Only ``("partition", i)`` itself is
        overwritten: keys under it stay. Returns the summaries in order.
        """
        if columns is not None:
            columns = [_column(self.data.columns, c, ("column", c)) for c in columns]
        job = self._job("summary", fn, (), {}, columns=columns)
        return self._run(job, pd.Series([], dtype=object), retries)

    def map_partitions_with_context(
        self,
        fn: Callable[..., Any],
        *args: Any,
        meta: Any = None,
        batch_size: int | None = None,
        replace: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Lazy: ``ddf.map_partitions`` with ``fn(partition, ctx, *args, **kwargs)``.

        ``fn`` returns the partition's new data, as with ``map_partitions``; the
        context it records is committed when it returns, i.e. when (and each
        time) the partition is computed. Without ``meta``, Dask infers it by
        calling ``fn`` on an empty frame with a throwaway context. ``args`` and
        ``kwargs`` go to ``fn`` unchanged (Dask collections among them are not
        aligned with the partitions).
        """
        job = self._job("map", fn, args, kwargs, batch_size=batch_size, replace=replace)
        options: dict[str, Any] = {} if meta is None else {"meta": meta}
        return self.data.map_partitions(_context_task, _job=job, **options)
