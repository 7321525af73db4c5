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
normalised to Python ones, so ``("row", np.int64(3))`` is ``("row", 3)``, and
a label is stored as the index holds it (an aware timestamp in the index's
time zone, ``-0.0`` as ``0.0``), so one row never gets two keys.

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

from collections.abc import Iterable, Mapping
from datetime import datetime
from numbers import Real
from typing import Any

try:
    import numpy as np
    import pandas as pd
except ImportError as exc:  # pragma: no cover - exercised without pandas installed
    from ..exceptions import MissingDependencyError

    raise MissingDependencyError.for_extra("pandas", "pandas") from exc

from ..base_store import ContextStore, Metadata
from ..exceptions import ContextKeyError, LabelNotFoundError, UnsupportedKeyError
from ..in_memory_context_store import FAST_FIELDS, InMemoryContextStore
from ..keys import Key, normalize_key
from ..values import _INT_MAX, _INT_MIN
from .base_adapter import DATASET_KEY, BaseContextAdapter

__all__ = ["PandasContextAdapter"]

_KINDS = "('dataset',), ('column', name), ('row', label) or ('row', label, 'column', name)"
_KIND_NAMES = ("row", "column", "dataset")
# The fast paths compare identity with this interned constant: a literal "row" in user
# code is the same object, while a numpy or runtime-built string takes the slow path
# (which normalises it), so a key is never stored with a non-str kind.
_ROW = "row"


class PandasContextAdapter(BaseContextAdapter):
    """Context for a pandas DataFrame. See the module docstring for key conventions."""

    def __init__(
        self,
        df: pd.DataFrame,
        context_store: ContextStore | str | None = None,
        *,
        name: str | None = None,
        strict: bool = True,
        **wrapping: Any,
    ) -> None:
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"PandasContextAdapter wraps a pandas DataFrame, got {type(df).__name__}")
        super().__init__(df, context_store, name=name, **wrapping)
        self.strict = strict
        # Stores may offer entry points for keys already validated and normalised
        # here (("row", int) on a RangeIndex); they skip the store's own key checks.
        self._set_row = getattr(self._store, "_set_normalized", self._store.set)
        self._get_row = getattr(self._store, "_get_normalized", self._store.get)
        self._set = self._store.set
        self._get = self._store.get
        # The spec's loop on the in-memory store runs through an inlined path (one call).
        self._mem = self._store if type(self._store) is InMemoryContextStore else None
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
            and key[0] is _ROW
            and self.data.index is self._range_index
            and key[1] in self._range
        ):
            mem = self._mem
            if mem is not None and type(metadata) is dict and len(metadata) <= FAST_FIELDS:
                # InMemoryContextStore._set_normalized's fast path, inlined here to save
                # a call on the spec's hot loop; see that method for why it is complete.
                limit = mem._fast_len
                for k, v in metadata.items():
                    tv = type(v)
                    if tv is str:
                        if len(v) > limit or not v.isascii():
                            break
                    elif tv is int:
                        if not _INT_MIN <= v <= _INT_MAX:
                            break
                    elif tv is float:
                        if v - v != 0.0:
                            break
                    elif not (tv is bool or v is None):
                        break
                    if type(k) is not str or len(k) > limit or not k.isascii():
                        break
                else:
                    mem._data[key] = metadata.copy()
                    return
            self._set_row(key, metadata)
        else:
            self._set(self.validate_key(key), metadata)

    def get_context(self, key: Key, default: Any = None) -> Metadata | None:
        """The metadata of ``key`` (a fresh dict), or ``default`` when it has none."""
        if (
            type(key) is tuple
            and len(key) == 2
            and type(key[1]) is int
            and key[0] is _ROW
            and self.data.index is self._range_index
            and key[1] in self._range
        ):
            mem = self._mem
            if mem is not None:  # InMemoryContextStore._get_normalized, inlined
                entry = mem._data.get(key)
                if entry is None:
                    return default  # type: ignore[no-any-return]
                if None not in entry:
                    return entry.copy()  # type: ignore[no-any-return]
            return self._get_row(key, default)
        return self._get(self.validate_key(key), default)

    # ------------------------------------------------------------------ validation

    def validate_key(self, key: Key) -> Key:
        """Check that ``key`` names a part of the frame; return its canonical form."""
        if type(key) is not tuple or not key or type(key[0]) is not str:
            return self._free_form(key)
        kind = key[0]
        if kind == "row":
            if len(key) == 2:
                return ("row", self._row_label(key[1], key))
            if len(key) == 4 and key[2] == "column":
                return ("row", self._row_label(key[1], key), "column", self._column(key[3], key))
            raise ContextKeyError(
                f"a row key is ('row', label) and a cell key is ('row', label, 'column', name); "
                f"got {key!r}"
            )
        if kind == "column":
            if len(key) != 2:
                raise ContextKeyError(f"a column key is ('column', name); got {key!r}")
            return ("column", self._column(key[1], key))
        if kind == "dataset":
            if len(key) != 1:
                raise ContextKeyError(f"the whole-frame key is ('dataset',); got {key!r}")
            return DATASET_KEY
        return self._free_form(key)

    def validate_keys(self, keys: Any) -> list[Key]:
        """Validate many keys; ``("row", int)`` keys on a RangeIndex take a fast path."""
        index = self.data.index
        if isinstance(index, pd.RangeIndex) and index is not self._range_index:
            self._set_range_cache(index)
        rng = self._range if index is self._range_index else None
        validate = self.validate_key
        out: list[Key] = []
        append = out.append
        for key in keys:
            if (
                rng is not None
                and type(key) is tuple
                and len(key) == 2
                and type(key[1]) is int
                and key[0] is _ROW
                and key[1] in rng
            ):
                append(key)
            else:
                append(validate(key))
        return out

    def _set_range_cache(self, index: pd.RangeIndex) -> None:
        # The range first: a concurrent fast path that sees the new index object
        # must never test a label against the range of the previous one.
        self._range = range(index.start, index.stop, index.step)
        self._range_index = index

    def _free_form(self, key: Any) -> Key:
        try:
            norm = normalize_key(key)
        except UnsupportedKeyError:
            if not self.strict:
                raise
            norm = None
        else:
            # A key that only *normalises* to a documented kind (a namedtuple, a numpy
            # str kind...) is one: validate it, or it would be stored unchecked.
            if type(norm) is tuple and norm and norm[0] in _KIND_NAMES:
                return self.validate_key(norm)
        if self.strict:
            raise ContextKeyError(
                f"unknown context key {key!r} for a DataFrame; use {_KINDS}, "
                "or create the adapter with strict=False to store free-form keys"
            )
        return norm

    def _row_label(self, label: Any, key: Any) -> Any:
        index = self.data.index
        if isinstance(index, pd.RangeIndex):
            if index is not self._range_index:
                self._set_range_cache(index)
            if type(label) is int and label in self._range:
                return label
        norm = normalize_key(label)
        if isinstance(index, pd.MultiIndex):
            if type(norm) is not tuple or len(norm) != index.nlevels:
                example = f", e.g. {normalize_key(index[0])!r}" if len(index) else ""
                raise LabelNotFoundError(
                    f"row label {label!r} in {key!r} must be a full {index.nlevels}-level tuple "
                    f"for this MultiIndex{example}"
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
                # The index's own form: -0.0 is stored as 0.0, an aware timestamp in
                # the index's time zone, so one row never gets two keys.
                return actual
            raise LabelNotFoundError(
                f"{what} label {label!r} in {key!r} matches {actual!r} in the {axis} only "
                f"loosely ({type(label).__name__} vs {type(actual).__name__}); "
                f"use {actual!r} so that the stored key matches the data"
            )
        sample = ", ".join(_show(x) for x in index[:5])
        more = ", ..." if len(index) > 5 else ""
        hint = f"use a label of df.{axis}"
        if type(norm) is bool:
            try:
                as_int = int(norm) in index and not pd.api.types.is_bool_dtype(index)
            except TypeError:
                as_int = False
            if as_int:
                hint = f"a bool is not an integer label; use {int(norm)!r}"
        raise LabelNotFoundError(
            f"{what} {label!r} in key {key!r} is not in the DataFrame's {axis} "
            f"([{sample}{more}], {len(index)} in all); {hint}"
        )

    # ------------------------------------------------------------------ columns and rows

    def add_column_context(self, name: Any, metadata: Mapping[str, Any]) -> None:
        """Attach metadata to column ``name``."""
        self.add_context(("column", name), metadata)

    def get_column_context(self, name: Any, default: Any = None) -> Metadata | None:
        """The metadata of column ``name``."""
        return self.get_context(("column", name), default)

    def _rows(self, rows: Any) -> list[Any]:
        """Resolve labels / a boolean mask / a label slice to distinct, canonical row labels."""
        index = self.data.index
        if isinstance(rows, slice):
            if index.dtype.kind in "iuf":  # df.loc refuses these too; slice_indexer may not
                for bound in (rows.start, rows.stop):
                    if bound is not None and (
                        isinstance(bound, (bool, np.bool_)) or not isinstance(bound, Real)
                    ):
                        raise ContextKeyError(
                            f"cannot slice the DataFrame's numeric index with {rows!r}; "
                            "use numeric bounds"
                        )
            try:
                indexer = index.slice_indexer(rows.start, rows.stop, rows.step)
            except KeyError as exc:
                raise LabelNotFoundError(
                    f"row slice {rows!r}: bound {exc.args[0]!r} is not in the DataFrame's index; "
                    "on an index that is not sorted, slice bounds must be labels of df.index"
                ) from None
            except (TypeError, ValueError) as exc:
                raise ContextKeyError(
                    f"cannot slice the DataFrame's index with {rows!r} ({exc}); "
                    "use bounds of the index's type"
                ) from None
            return self._index_labels(index[indexer])
        mask = _boolean_mask(rows, index)
        if mask is not None:
            return self._index_labels(index[mask])
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):
            labels: list[Any] = [rows]  # one label, as with df.loc[label]
        else:
            labels = rows if isinstance(rows, list) else list(rows)
        out: list[Any] = []
        errors: list[LabelNotFoundError] = []
        missing: list[Any] = []
        for label in labels:
            try:
                out.append(self._row_label(label, ("row", label)))
            except LabelNotFoundError as exc:
                errors.append(exc)
                missing.append(label)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            shown = ", ".join(repr(x) for x in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise LabelNotFoundError(
                f"{len(missing)} row labels are not in the DataFrame's index: [{shown}]; "
                f"first: {errors[0]}"
            )
        return _distinct(out)

    def _index_labels(self, selected: pd.Index) -> list[Any]:
        labels = [normalize_key(x) for x in selected.tolist()]
        return labels if selected.is_unique else _distinct(labels)

    def add_row_context(self, rows: Any, metadata: Mapping[str, Any]) -> int:
        """Attach one metadata dict to many rows in one batch; return how many rows.

        ``rows`` is a list of labels (or one label), a boolean mask (numpy
        array, list of bools, or Series aligned by label with the index, as
        with ``.loc``) or a label slice (inclusive, as ``df.loc[a:b]``).
        Every label is validated before anything is stored; duplicate labels
        are stored once.
        """
        labels = self._rows(rows)
        self._store.set_many([(("row", label), metadata) for label in labels])
        return len(labels)

    def get_row_context(self, rows: Any) -> list[Metadata | None]:
        """The metadata of each *distinct* selected row label, in order, in one batch.

        ``rows`` is selected as in :meth:`add_row_context`; a label given
        twice (or shared by several rows) appears once.
        """
        return self._store.get_many([("row", label) for label in self._rows(rows)])

    # ------------------------------------------------------------------ frames

    def row_context_frame(self) -> pd.DataFrame:
        """Row context as a DataFrame aligned with ``df.index``: one column per field.

        Rows without context hold missing values; rows sharing a duplicated
        label repeat that label's context. Entries whose label no longer names
        a row exactly (the index changed since) are left out.
        """
        return self._context_frame("row", self.data.index, self._row_label)

    def column_context_frame(self) -> pd.DataFrame:
        """Column context as a DataFrame indexed by ``df.columns``: one column per field."""
        return self._context_frame("column", self.data.columns, self._column)

    def _context_frame(self, kind: str, target: pd.Index, validate: Any) -> pd.DataFrame:
        labels, records = [], []
        for key, value in self._store.items((kind,)):
            if type(key) is tuple and len(key) == 2:
                labels.append(key[1])
                records.append(value)
        keep = _stale_label_filter(labels, target)
        if keep is not None:
            pairs = [(lbl, rec) for lbl, rec in zip(labels, records) if keep(lbl)]
            labels, records = [p[0] for p in pairs], [p[1] for p in pairs]
        try:
            return _frame(labels, records, target)
        except ValueError:
            # Stored labels that are distinct keys but equal to pandas (1, 1.0 and True
            # after the index changed) cannot be reindexed: keep the exact ones.
            pairs = []
            for lbl, rec in zip(labels, records):
                try:
                    ok = _same_typed(validate(lbl, (kind, lbl)), lbl)
                except ContextKeyError:
                    ok = False
                if ok:
                    pairs.append((lbl, rec))
            return _frame([p[0] for p in pairs], [p[1] for p in pairs], target)


def _frame(labels: list[Any], records: list[Metadata], target: pd.Index) -> pd.DataFrame:
    src = _label_index(labels, target)
    if records:
        frame = pd.DataFrame.from_records(records, index=src)
    else:
        frame = pd.DataFrame(index=src)
    return frame.reindex(target)


_LABEL_TYPES: dict[str, type] = {"i": int, "u": int, "f": float, "b": bool, "M": datetime}
_INFERRED_TYPES: dict[str, type] = {
    "string": str,
    "bytes": bytes,
    "integer": int,
    "floating": float,
    "boolean": bool,
    "datetime": datetime,
    "datetime64": datetime,
}


def _stale_label_filter(labels: list[Any], target: pd.Index) -> Any:
    """A test that drops stored labels that cannot name an entry of ``target`` exactly.

    ``None`` when every label passes (checked at C speed), so the common case
    costs one pass of ``type()`` over the labels.
    """
    if not labels:
        return None
    if isinstance(target, pd.MultiIndex):
        n = target.nlevels
        if set(map(type, labels)) == {tuple} and set(map(len, labels)) == {n}:
            return None
        return lambda label: type(label) is tuple and len(label) == n
    expected = _LABEL_TYPES.get(target.dtype.kind)
    if expected is None and len(target):
        expected = _INFERRED_TYPES.get(target.inferred_type)
    if expected is None or set(map(type, labels)) == {expected}:
        return None
    return lambda label: type(label) is expected


def _label_index(labels: list[Any], target: pd.Index) -> pd.Index:
    """Stored labels as an index that ``reindex`` can match against ``target``."""
    if isinstance(target, pd.MultiIndex):
        return pd.MultiIndex.from_tuples(labels, names=target.names) if labels else (
            target[:0]
        )
    if not labels:
        return target[:0]
    if target.dtype.kind in "iufbM":
        try:
            return pd.Index(labels, dtype=target.dtype)
        except (TypeError, ValueError, OverflowError):
            pass
    return pd.Index(labels, dtype=object, tupleize_cols=False)


def _boolean_mask(rows: Any, index: pd.Index) -> np.ndarray | None:
    """``rows`` as a boolean array over ``index`` if it is a boolean mask, else None."""
    if isinstance(rows, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        if not pd.api.types.is_bool_dtype(rows.dtype):
            return None
        if bool(np.asarray(pd.isna(rows)).any()):
            raise ContextKeyError(
                "a boolean row mask cannot hold missing values; fill them first, "
                "e.g. mask.fillna(False)"
            )
        if isinstance(rows, pd.Series) and not rows.index.equals(index):
            # Align by label, as df.loc[mask] does.
            if not rows.index.is_unique:
                raise ContextKeyError(
                    "a boolean Series whose index differs from the DataFrame's must have "
                    "unique labels to be aligned with it"
                )
            aligned = rows.reindex(index)
            if bool(aligned.isna().any()):
                raise ContextKeyError(
                    "the boolean Series cannot be aligned with the DataFrame: its index lacks "
                    f"{int(aligned.isna().sum())} of the DataFrame's row labels"
                )
            return aligned.to_numpy(dtype=bool)
        arr = rows.to_numpy(dtype=bool)
    elif isinstance(rows, np.ndarray):
        if rows.dtype != bool:
            return None
        arr = rows
    elif (
        isinstance(rows, list)
        and rows
        and all(type(x) is bool or type(x) is np.bool_ for x in rows)
        and not pd.api.types.is_bool_dtype(index)
    ):
        arr = np.array(rows, dtype=bool)
    else:
        return None
    if arr.ndim != 1 or len(arr) != len(index):
        raise ContextKeyError(
            f"a boolean row mask must have one entry per row ({len(index)}), got {len(arr)}"
        )
    return arr


def _distinct(labels: list[Any]) -> list[Any]:
    """``labels`` without repeats, in order; 1, 1.0 and True stay distinct."""
    seen: set[Any] = set()
    out = []
    for label in labels:
        marker = (type(label), label)
        if marker not in seen:
            seen.add(marker)
            out.append(label)
    return out


def _show(label: Any) -> str:
    try:
        return repr(normalize_key(label))
    except ContextKeyError:
        return repr(label)


def _same_typed(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(_same_typed(x, y) for x, y in zip(a, b))
    return bool(a == b) or (a != a and b != b)
