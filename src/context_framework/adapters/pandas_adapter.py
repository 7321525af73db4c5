"""``PandasContextAdapter``: context for a pandas DataFrame, its columns, rows and cells.

Key conventions (validated against the DataFrame on add *and* on get):

==================================  ==========================================
key                                 part of the frame
==================================  ==========================================
``("dataset",)``                    the whole frame
``("column", name)``                a column (``name in df.columns``)
``("row", label)``                  a row, by index label (``label in df.index``)
``("row", label, "column", name)``  a cell
==================================  ==========================================

Any other key raises :class:`~context_framework.exceptions.ContextKeyError`
unless the adapter was made with ``strict=False``, which lets free-form keys
through unvalidated.

Labels must match the index exactly, type included: on an integer index,
``("row", 1.0)`` is refused with a hint to use ``("row", 1)`` (pandas would
accept 1.0, but it would be a different stored key). Numpy scalars are
normalised to Python ones, so ``("row", np.int64(3))`` is ``("row", 3)``.

**Duplicate index labels**: context belongs to the *label*, so every row
with a duplicated label shares one entry. ``row_context_frame()`` repeats
that entry on each of those rows. **MultiIndex rows**: the label is the full
tuple, ``("row", ("a", 1))``; a partial label (one level only) is refused.

Bulk forms reach the store's batch path: :meth:`add_context_many`,
:meth:`add_row_context` (one metadata dict for rows given as a list of
labels, a boolean mask or a label slice as with ``.loc``) and
:meth:`get_row_context`. :meth:`row_context_frame` and
:meth:`column_context_frame` give context back as DataFrames aligned with
the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    import numpy as np
    import pandas as pd
except ImportError as exc:  # pragma: no cover - exercised without pandas installed
    from ..exceptions import MissingDependencyError

    raise MissingDependencyError.for_extra("pandas", "pandas") from exc

from ..base_store import ContextStore, Metadata
from ..exceptions import ContextKeyError, LabelNotFoundError
from ..keys import Key, normalize_key
from .base_adapter import DATASET_KEY, BaseContextAdapter

__all__ = ["PandasContextAdapter"]

_KINDS = "('dataset',), ('column', name), ('row', label) or ('row', label, 'column', name)"


class PandasContextAdapter(BaseContextAdapter):
    """Context for a pandas DataFrame. See the module docstring for key conventions."""

    def __init__(
        self,
        df: pd.DataFrame,
        context_store: ContextStore | str | None = None,
        *,
        name: str | None = None,
        strict: bool = True,
    ) -> None:
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"PandasContextAdapter wraps a pandas DataFrame, got {type(df).__name__}")
        super().__init__(df, context_store, name=name)
        self.strict = strict
        # Stores may offer entry points for keys already validated and normalised
        # here (("row", int) on a RangeIndex); they skip the store's own key checks.
        self._set_row = getattr(self._store, "_set_normalized", self._store.set)
        self._get_row = getattr(self._store, "_get_normalized", self._store.get)
        self._set = self._store.set
        self._get = self._store.get
        self._range_index: Any = None
        self._range: range = range(0)

    @property
    def df(self) -> pd.DataFrame:
        """The wrapped DataFrame."""
        return self.data  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ hot path

    def add_context(self, key: Key, metadata: Mapping[str, Any]) -> None:
        """Attach ``metadata`` to ``key`` (replacing what was there)."""
        if (
            type(key) is tuple
            and len(key) == 2
            and type(key[1]) is int
            and key[0] == "row"
            and self.data.index is self._range_index
            and key[1] in self._range
        ):
            self._set_row(key, metadata)
        else:
            self._set(self.validate_key(key), metadata)

    def get_context(self, key: Key, default: Any = None) -> Metadata | None:
        """The metadata of ``key`` (a fresh dict), or ``default`` when it has none."""
        if (
            type(key) is tuple
            and len(key) == 2
            and type(key[1]) is int
            and key[0] == "row"
            and self.data.index is self._range_index
            and key[1] in self._range
        ):
            return self._get_row(key, default)
        return self._get(self.validate_key(key), default)

    # ------------------------------------------------------------------ validation

    def validate_key(self, key: Key) -> Key:
        """Check that ``key`` names a part of the frame; return its canonical form."""
        if type(key) is not tuple or not key:
            return self._free_form(key)
        kind = key[0]
        if kind == "row" and type(kind) is str:
            if len(key) == 2:
                return ("row", self._row_label(key[1], key))
            if len(key) == 4 and key[2] == "column":
                return ("row", self._row_label(key[1], key), "column", self._column(key[3], key))
            raise ContextKeyError(
                f"a row key is ('row', label) and a cell key is ('row', label, 'column', name); "
                f"got {key!r}"
            )
        if kind == "column" and type(kind) is str:
            if len(key) != 2:
                raise ContextKeyError(f"a column key is ('column', name); got {key!r}")
            return ("column", self._column(key[1], key))
        if kind == "dataset" and type(kind) is str:
            if len(key) != 1:
                raise ContextKeyError(f"the whole-frame key is ('dataset',); got {key!r}")
            return DATASET_KEY
        return self._free_form(key)

    def validate_keys(self, keys: Any) -> list[Key]:
        """Validate many keys; ``("row", int)`` keys on a RangeIndex take a fast path."""
        index = self.data.index
        if isinstance(index, pd.RangeIndex) and index is not self._range_index:
            self._range_index = index
            self._range = range(index.start, index.stop, index.step)
        rng = self._range if index is self._range_index else None
        validate = self.validate_key
        out = []
        append = out.append
        for key in keys:
            if (
                rng is not None
                and type(key) is tuple
                and len(key) == 2
                and type(key[1]) is int
                and key[0] == "row"
                and key[1] in rng
            ):
                append(key)
            else:
                append(validate(key))
        return out

    def _free_form(self, key: Any) -> Key:
        if self.strict:
            raise ContextKeyError(
                f"unknown context key {key!r} for a DataFrame; use {_KINDS}, "
                "or create the adapter with strict=False to store free-form keys"
            )
        return normalize_key(key)

    def _row_label(self, label: Any, key: Any) -> Any:
        index = self.data.index
        if isinstance(index, pd.RangeIndex):
            if index is not self._range_index:
                self._range_index = index
                self._range = range(index.start, index.stop, index.step)
            if type(label) is int and label in self._range:
                return label
        norm = normalize_key(label)
        if isinstance(index, pd.MultiIndex):
            if type(norm) is not tuple or len(norm) != index.nlevels:
                raise LabelNotFoundError(
                    f"row label {label!r} in {key!r} must be a full {index.nlevels}-level tuple "
                    "for this MultiIndex"
                )
        return self._exact_label(index, norm, label, key, "row", "index")

    def _column(self, name: Any, key: Any) -> Any:
        columns = self.data.columns
        if type(name) is str:
            try:
                if name in columns:
                    loc = columns.get_loc(name)
                    if isinstance(loc, int):
                        return name
            except TypeError:
                pass
        return self._exact_label(columns, normalize_key(name), name, key, "column", "columns")

    @staticmethod
    def _exact_label(index: pd.Index, norm: Any, label: Any, key: Any, what: str, axis: str) -> Any:
        try:
            found = norm in index
        except TypeError:
            found = False
        if found:
            loc = index.get_loc(norm)
            if isinstance(loc, slice):
                pos = loc.start
            elif isinstance(loc, (int, np.integer)):
                pos = int(loc)
            else:
                pos = int(np.flatnonzero(loc)[0])
            actual = normalize_key(index[pos])
            if _same_typed(actual, norm):
                return norm
            raise LabelNotFoundError(
                f"{what} label {label!r} in {key!r} matches {actual!r} in the {axis} only "
                f"loosely ({type(label).__name__} vs {type(actual).__name__}); "
                f"use {actual!r} so that the stored key matches the data"
            )
        sample = ", ".join(repr(x) for x in index[:5])
        more = ", ..." if len(index) > 5 else ""
        raise LabelNotFoundError(
            f"{what} {label!r} in key {key!r} is not in the DataFrame's {axis} "
            f"([{sample}{more}], {len(index)} in all)"
        )

    # ------------------------------------------------------------------ columns and rows

    def add_column_context(self, name: Any, metadata: Mapping[str, Any]) -> None:
        """Attach metadata to column ``name``."""
        self.add_context(("column", name), metadata)

    def get_column_context(self, name: Any, default: Any = None) -> Metadata | None:
        """The metadata of column ``name``."""
        return self.get_context(("column", name), default)

    def _rows(self, rows: Any) -> list[Any]:
        """Resolve labels / a boolean mask / a label slice to distinct row labels."""
        index = self.data.index
        if isinstance(rows, slice):
            selected = index[index.slice_indexer(rows.start, rows.stop, rows.step)]
        else:
            arr = rows.to_numpy() if isinstance(rows, (pd.Series, pd.Index)) else rows
            if isinstance(arr, np.ndarray) and arr.dtype == bool:
                if len(arr) != len(index):
                    raise ContextKeyError(
                        f"a boolean row mask must have one entry per row ({len(index)}), "
                        f"got {len(arr)}"
                    )
                if isinstance(rows, pd.Series) and not rows.index.equals(index):
                    arr = rows.reindex(index, fill_value=False).to_numpy(dtype=bool)
                selected = index[arr]
            else:
                labels = list(rows) if not isinstance(rows, (list, tuple)) else rows
                positions = index.get_indexer_for(labels) if len(labels) else np.array([], int)
                missing = [lbl for lbl, p in zip(labels, positions) if p < 0]
                if missing:
                    raise LabelNotFoundError(
                        f"{len(missing)} row label(s) are not in the DataFrame's index: "
                        f"{missing[:5]!r}{' ...' if len(missing) > 5 else ''}"
                    )
                return [self._row_label(lbl, ("row", lbl)) for lbl in dict.fromkeys(
                    normalize_key(x) for x in labels)]
        return list(dict.fromkeys(normalize_key(x) for x in selected.tolist()))

    def add_row_context(self, rows: Any, metadata: Mapping[str, Any]) -> int:
        """Attach one metadata dict to many rows in one batch; return how many rows.

        ``rows`` is a list of labels, a boolean mask (array or Series aligned
        with the index) or a label slice (inclusive, as ``df.loc[a:b]``).
        Duplicate labels are stored once.
        """
        labels = self._rows(rows)
        self._store.set_many([(("row", label), metadata) for label in labels])
        return len(labels)

    def get_row_context(self, rows: Any) -> list[Metadata | None]:
        """The metadata of each selected row label, in order, in one batch."""
        return self._store.get_many([("row", label) for label in self._rows(rows)])

    # ------------------------------------------------------------------ frames

    def row_context_frame(self) -> pd.DataFrame:
        """Row context as a DataFrame aligned with ``df.index``: one column per field.

        Rows without context hold missing values; rows sharing a duplicated
        label repeat that label's context.
        """
        labels, records = [], []
        for key, value in self._store.items(("row",)):
            if type(key) is tuple and len(key) == 2:
                labels.append(key[1])
                records.append(value)
        index = self.data.index
        if isinstance(index, pd.MultiIndex):
            src_index: pd.Index = pd.MultiIndex.from_tuples(labels, names=index.names)
        else:
            src_index = pd.Index(labels, dtype=object if not labels else None)
        frame = pd.DataFrame.from_records(records, index=src_index) if records else pd.DataFrame(
            index=src_index
        )
        return frame.reindex(index)

    def column_context_frame(self) -> pd.DataFrame:
        """Column context as a DataFrame indexed by ``df.columns``: one column per field."""
        names, records = [], []
        for key, value in self._store.items(("column",)):
            if type(key) is tuple and len(key) == 2:
                names.append(key[1])
                records.append(value)
        src = pd.Index(names, dtype=object)
        frame = pd.DataFrame.from_records(records, index=src) if records else pd.DataFrame(index=src)
        return frame.reindex(self.data.columns)


def _same_typed(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(_same_typed(x, y) for x, y in zip(a, b))
    return bool(a == b) or (a != a and b != b)
