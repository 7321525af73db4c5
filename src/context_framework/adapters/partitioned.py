"""What the partitioned-engine adapters (Spark, Dask) share: key checks, the task handle, driver helpers.

Both engines use the same keys: ``("dataset",)``, ``("column", name)``,
``("partition", i, ...)``, ``("row", label)`` and ``("row", label, "column", name)``.

* :class:`PartitionKeys` checks a key's shape and canonical form; a subclass
  says how it checks a partition number, a row label, a column name and a
  free-form key (the engine's own rules).
* :class:`PartitionTaskContext` is the handle a task writes through: a
  :class:`~context_framework.distributed.PartitionContext` whose partition
  keys must be its own partition's, and whose commit replaces the groups
  ``("partition", i, group, ...)`` it writes (``replace="groups"``).
* :class:`PartitionedAdapter` is the driver side: partition numbers checked
  against the partition count, and the column and partition helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..base_store import ContextStore, Metadata
from ..distributed import PARTITION, PartitionContext
from ..exceptions import ContextKeyError, LabelNotFoundError
from ..keys import Key, normalize_key
from .base_adapter import ANNOTATION_KIND, DATASET_KEY, BaseContextAdapter, cell_form_error

__all__ = ["KINDS", "PartitionKeys", "PartitionTaskContext", "PartitionedAdapter", "free_form_key", "records"]

#: The key kinds, as error messages name them.
KINDS = (
    "('dataset',), ('column', name), ('partition', i, ...), ('row', label) or ('row', label, 'column', name)"
)


def free_form_key(key: Any, strict: bool, engine: str) -> Key:
    """``key`` normalised, or (``strict``) an error naming the key kinds of an ``engine`` DataFrame.

    Keys of kind ``"annotation"`` are refused either way: they are reserved for
    the row annotations a pandas adapter may keep in the same namespace.
    """
    if strict:
        raise ContextKeyError(
            f"unknown context key {key!r} for a {engine} DataFrame; use {KINDS}, "
            "or create the adapter with strict=False to store free-form keys"
        )
    norm = normalize_key(key)
    if type(norm) is tuple and norm and norm[0] == ANNOTATION_KIND:
        raise ContextKeyError(
            f"keys of kind {ANNOTATION_KIND!r} are reserved for row annotations, got {key!r}"
        )
    return norm


def records(metadata: Any) -> list[Any]:
    """Per-row metadata as a list: a pandas DataFrame's rows as dicts (NaN as ``None``), else ``list()``."""
    if hasattr(metadata, "to_dict") and hasattr(metadata, "columns"):  # a pandas DataFrame
        frame = metadata.astype(object).where(metadata.notna(), None)
        return frame.to_dict("records")  # type: ignore[no-any-return]
    return list(metadata)


class PartitionKeys:
    """Key checks shared by an engine's adapter and its task handle (see the module docstring)."""

    def canonical_key(self, key: Any) -> Key:
        """Check ``key`` and return its canonical form."""
        if type(key) is not tuple:
            key = normalize_key(key)
        if type(key) is not tuple or not key or type(key[0]) is not str:
            return self._free_form_key(key)
        kind = key[0]
        if kind == PARTITION:
            return (PARTITION, self._partition_number(key), *(normalize_key(p) for p in key[2:]))
        if kind == "row":
            if len(key) == 2:
                return ("row", self._row_label(key[1], key))
            if len(key) == 4 and key[2] == "column":
                return ("row", self._row_label(key[1], key), "column", self._column_name(key[3], key))
            if len(key) == 3 and key[2] != "column":
                raise cell_form_error(key, key[1], key[2])
            raise ContextKeyError(
                f"a row key is ('row', label) and a cell key is ('row', label, 'column', name); got {key!r}"
            )
        if kind == "column" and len(key) == 4 and key[2] == "row":
            raise cell_form_error(key, key[3], key[1])
        if kind == "column" and len(key) == 2:
            return ("column", self._column_name(key[1], key))
        if kind == "dataset" and len(key) == 1:
            return DATASET_KEY
        if kind in ("column", "dataset"):
            raise ContextKeyError(f"malformed {kind} key {key!r}; use {KINDS}")
        return self._free_form_key(key)

    def _partition_number(self, key: tuple[Any, ...]) -> int:
        """The partition ``("partition", i, ...)`` names, checked."""
        raise NotImplementedError

    def _row_label(self, label: Any, key: Any) -> Any:
        """``label`` checked and normalised."""
        raise NotImplementedError

    def _column_name(self, name: Any, key: Any) -> Any:
        """The column ``name`` refers to."""
        raise NotImplementedError

    def _free_form_key(self, key: Any) -> Key:
        """A key of no known kind: normalised, or an error when the adapter is strict."""
        raise NotImplementedError


class PartitionTaskContext(PartitionKeys, PartitionContext):
    """A task's handle on partition ``number``: keys checked, groups replaced at commit.

    ``replace=True`` commits with ``replace="groups"``: what an earlier attempt
    left in each group ``("partition", number, group, ...)`` this task writes
    is removed first; ``("partition", number)`` itself is simply overwritten.
    """

    def __init__(
        self, store: ContextStore, number: int, *, batch_size: int = 10_000, replace: bool = True
    ) -> None:
        super().__init__(store, number, batch_size=batch_size, replace="groups" if replace else False)
        self.number = number

    def add(self, key: Key, metadata: Mapping[str, Any]) -> None:
        """Record ``metadata`` under ``key``, checked against this partition."""
        super().add(self.canonical_key(key), metadata)

    def _partition_number(self, key: tuple[Any, ...]) -> int:
        part = normalize_key(key[1]) if len(key) > 1 else None
        if type(part) is not int or part != self.number:
            raise LabelNotFoundError(
                f"{key!r} is not a key of this task's partition {self.number}; "
                f"use ctx.partition_key(...) or ('partition', {self.number}, ...)"
            )
        return part

    def summarize(self, columns: Iterable[Any] | None = None) -> dict[str, Any]:
        """Record the engine's built-in summary as this partition's context; return it."""
        raise NotImplementedError

    def record_summary(self, fn: Callable[[Any], Mapping[str, Any]] | None, data: Any, columns: Any) -> Any:
        """Record ``fn(data)``, or :meth:`summarize` of ``columns``, as ``("partition", i)``; return it."""
        if fn is None:
            return self.summarize(columns)
        summary = dict(fn(data))
        self.add_partition_context(summary)
        return summary

    def _add_rows(self, labels: list[Any], metadata: Any) -> int:
        """Record ``metadata`` (one dict, or one per label) under ``("row", label)``; return how many."""
        if isinstance(metadata, Mapping):
            values: Iterable[Any] = (metadata for _ in labels)
        else:
            values = records(metadata)
            if len(values) != len(labels):  # type: ignore[arg-type]
                raise ContextKeyError(
                    f"{len(values)} metadata entries for {len(labels)} selected rows"  # type: ignore[arg-type]
                )
        add = PartitionContext.add  # labels come from the data, or were checked as a whole
        for label, meta in zip(labels, values):
            add(self, ("row", label), meta)
        return len(labels)


class PartitionedAdapter(PartitionKeys, BaseContextAdapter):
    """Driver side of an engine adapter: partition numbers checked, column and partition helpers."""

    #: Row annotations of a pandas adapter sharing the namespace stay out of listings.
    internal_kinds = (ANNOTATION_KIND,)

    #: How error messages name the partition count.
    _PARTITION_COUNT = "npartitions"

    def _partition_count(self) -> int:
        """How many partitions the data has."""
        raise NotImplementedError

    def validate_key(self, key: Key) -> Key:
        """Check ``key`` against what the driver knows of the data; return its canonical form."""
        return self.canonical_key(key)

    def _partition_number(self, key: tuple[Any, ...]) -> int:
        part = normalize_key(key[1]) if len(key) > 1 else None
        n = self._partition_count()
        if type(part) is not int or not 0 <= part < n:
            raise LabelNotFoundError(
                f"{key!r} does not name a partition: use ('partition', i, ...) with an int "
                f"0 <= i < {n} ({self._PARTITION_COUNT})"
            )
        return part

    def add_column_context(self, name: Any, metadata: Mapping[str, Any]) -> None:
        """Attach metadata to column ``name``."""
        self.add_context(("column", name), metadata)

    def get_column_context(self, name: Any, default: Any = None) -> Metadata | None:
        """The metadata of column ``name``."""
        return self.get_context(("column", name), default)

    def add_partition_context(self, number: int, metadata: Mapping[str, Any], *parts: Any) -> None:
        """Attach metadata to partition ``number`` (or to a key under it) from the driver."""
        self.add_context((PARTITION, number, *parts), metadata)

    def get_partition_context(self, number: int, *parts: Any, default: Any = None) -> Metadata | None:
        """The metadata of partition ``number`` (or of a key under it)."""
        return self.get_context((PARTITION, number, *parts), default)

    def get_partition_contexts(self) -> list[Metadata | None]:
        """The context of every partition, ``("partition", i)``, in order (one batch read)."""
        return self._store.get_many([(PARTITION, i) for i in range(self._partition_count())])
