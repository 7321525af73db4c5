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
:meth:`add_row_context` (rows given as a list or array of labels, a boolean
mask or a label slice as with ``.loc``) and :meth:`get_row_context`.
:meth:`row_context_frame` and :meth:`column_context_frame` give context back
as DataFrames aligned with the data.

**Row annotations** (``docs/annotations.md``). ``add_row_context(rows, dict)``
stores the dict *once*, with a compact set of the rows it covers (sorted
ranges, a bitmap or sorted values, zlib-compressed, in chunks within
``max_value_size``; see :mod:`.row_sets` and :mod:`.annotations`): rows by
label on an integer index, by position (with an index fingerprint) otherwise.
``per_row=True`` stores one entry per row instead, and per-row metadata (a
Series or list of dicts, a DataFrame) always does, in one ``set_many``.
``get_context(("row", label))`` returns the annotations covering the row
merged in creation order (later ones win per field), then the row's own
entry on top; ``get_row_context``, ``get_context_many``, ``has_context`` and
``row_context_frame`` agree with it. Writes of the row's own entry
(``add_context``, ``update_context``, ``remove_context``...) touch only that
entry; :meth:`remove_row_context` with ``annotations=True`` also takes rows
out of annotations. Visibility: an adapter reads the annotation list at its
first row read and keeps it (with its own changes applied); bulk reads
(:meth:`get_row_context`, :meth:`row_context_frame`, :meth:`list_annotations`)
re-read it, and :meth:`refresh_annotations` does so on demand. Keys of kind
``"annotation"`` are reserved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from itertools import repeat
from numbers import Real
from typing import Any

try:
    import numpy as np
    import pandas as pd
except ImportError as exc:  # pragma: no cover - exercised without pandas installed
    from ..exceptions import MissingDependencyError

    raise MissingDependencyError.for_extra("pandas", "pandas") from exc

from .._gc import gc_paused
from ..base_store import ContextStore, Metadata, check_prefix
from ..exceptions import (
    ContextKeyError,
    ContextSerializationError,
    ContextValueError,
    LabelNotFoundError,
    UnsupportedKeyError,
)
from ..in_memory_context_store import _ROW, FAST_FIELDS, InMemoryContextStore
from ..keys import Key, normalize_key
from ..values import _INT_MAX, _INT_MIN, dumps_json, loads_json
from . import row_sets
from .annotations import (
    BY_LABEL,
    BY_POSITION,
    INDEX_KEY,
    KIND,
    Annotation,
    AnnotationIndexError,
    AnnotationStore,
    index_fingerprint,
)
from .base_adapter import DATASET_KEY, BaseContextAdapter, cell_form_error
from .row_sets import RowSet

__all__ = ["AnnotationIndexError", "PandasContextAdapter"]

_KINDS = "('dataset',), ('column', name), ('row', label) or ('row', label, 'column', name)"
_KIND_NAMES = ("row", "column", "dataset")
# The fast paths compare identity with this interned constant (the in-memory store's): a
# literal "row" in user code is the same object, while a numpy or runtime-built string takes
# the slow path (which normalises it), so a key is never stored with a non-str kind.
# ``_annotations`` before the first row read: not known yet (``None``: known, there are none).
_UNLOADED: Any = ()
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


class PandasContextAdapter(BaseContextAdapter):
    """Context for a pandas DataFrame. See the module docstring for key conventions."""

    internal_kinds = (KIND,)

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
        # The fast paths skip validate_key: they take the index cached in _fast_index, which
        # stays None when a subclass overrides validate_key, so that every key goes through it.
        self._own_validation = type(self).validate_key is PandasContextAdapter.validate_key
        self._fast_index: Any = None
        # Row annotations known to this adapter (see the module docstring): _UNLOADED until
        # the first row read, then a tuple in creation order, or None when there are none.
        # get_context's fast path compares the index with _hot_index, which is the cached
        # RangeIndex only while there are no annotations: so it costs nothing more. With
        # annotations, rows that _cover (built at a row read) says none covers take it too.
        self._annotations: Any = _UNLOADED
        self._hot_index: Any = None
        self._cover: _Coverage | None = None
        self._annotation_store: AnnotationStore | None = None
        self._fp_index: Any = None
        self._fp: dict[str, Any] = {}

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
            and self.data.index is self._fast_index
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
        if type(key) is tuple and len(key) == 2 and type(key[1]) is int and key[0] is _ROW:
            index = self.data.index
            if index is self._hot_index:
                hot = key[1] in self._range
            else:
                cover = self._cover  # made from the known annotations (_set_annotations drops it)
                if cover is not None and cover.index is index:
                    b = key[1] - cover.start  # the row's byte of the coverage (0: not worked out yet)
                    state = cover.rows[b] if 0 <= b < cover.n else 0
                    if state == _COVERED:
                        return self._merge_covering(key, cover.annotations)
                    hot = state == _UNCOVERED
                else:
                    hot = False
            if hot:
                mem = self._mem
                if mem is not None:  # InMemoryContextStore._get_normalized, inlined
                    entry = mem._data.get(key)
                    if entry is None:
                        return default  # type: ignore[no-any-return]
                    if None not in entry:
                        return entry.copy()  # type: ignore[no-any-return]
                return self._get_row(key, default)
        vkey = self.validate_key(key)
        if self._annotations is not None and _is_row_key(vkey):
            return self._annotated(vkey, default)
        return self._get(vkey, default)

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
            if len(key) == 3 and key[2] != "column":
                raise cell_form_error(key, key[1], key[2])
            raise ContextKeyError(
                f"a row key is ('row', label) and a cell key is ('row', label, 'column', name); got {key!r}"
            )
        if kind == "column":
            if len(key) == 4 and key[2] == "row":
                raise cell_form_error(key, key[3], key[1])
            if len(key) != 2:
                raise ContextKeyError(f"a column key is ('column', name); got {key!r}")
            return ("column", self._column(key[1], key))
        if kind == "dataset":
            if len(key) != 1:
                raise ContextKeyError(f"the whole-frame key is ('dataset',); got {key!r}")
            return DATASET_KEY
        if kind == "cell" and len(key) == 3 and self.strict:
            raise cell_form_error(key, key[1], key[2])
        return self._free_form(key)

    def validate_keys(self, keys: Any) -> list[Key]:
        """Validate many keys; ``("row", int)`` keys on a RangeIndex take a fast path."""
        rng = self._fast_range()
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

    def _fast_range(self) -> range | None:
        """The labels of the cached RangeIndex when the fast paths may skip ``validate_key``."""
        index = self.data.index
        if isinstance(index, pd.RangeIndex) and index is not self._range_index:
            self._set_range_cache(index)
        return self._range if index is self._fast_index else None

    def _fast_pairs(self, pairs: list[Any]) -> bool:
        """Whether ``pairs`` are pairs whose every key :meth:`_fast_keys` accepts."""
        return all(type(p) is tuple and len(p) == 2 for p in pairs) and self._fast_keys([p[0] for p in pairs])

    def _fast_keys(self, keys: list[Key]) -> bool:
        """Whether every key is a ``("row", int)`` of the cached RangeIndex (canonical)."""
        rng = self._fast_range()
        if rng is None:
            return False
        for key in keys:
            if not (
                type(key) is tuple
                and len(key) == 2
                and type(key[1]) is int
                and key[0] is _ROW
                and key[1] in rng
            ):
                return False
        return True

    def add_context_many(
        self,
        items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]],
    ) -> None:
        """Attach many ``(key, metadata)`` pairs through the store's batch path.

        Every key is validated first: one bad key stores nothing. Any iterable of
        pairs will do; a generator is consumed with the cyclic garbage collector paused.
        """
        with gc_paused():
            # the pairs' shape is checked on the way (by iter_pairs, which names a bad item)
            pairs = items.items() if isinstance(items, Mapping) else items
            mem = self._mem
            labels = self._fast_range() if mem is not None else None
            if mem is not None and labels is not None:
                rest = mem._set_rows(pairs, labels)
                if rest is None:
                    return
                pairs = self._checked_pairs(rest)  # some key is not a ("row", n) of the index
            else:
                if type(pairs) is not list:
                    pairs = list(pairs)
                if not self._fast_pairs(pairs):
                    pairs = self._checked_pairs(pairs)
        self._store.set_many(pairs)

    def _set_range_cache(self, index: pd.RangeIndex) -> None:
        # The range first: a concurrent fast path that sees the new index object
        # must never test a label against the range of the previous one.
        self._range = range(index.start, index.stop, index.step)
        self._range_index = index
        if self._own_validation:
            self._fast_index = index
            self._hot_index = index if self._annotations is None else None

    def _set_annotations(self, annotations: Any) -> None:
        """Set the known annotations (``None``: none) and open or close the hot path to match."""
        self._annotations = annotations
        self._hot_index = self._fast_index if annotations is None else None
        self._cover = None  # built again from these at the next row read

    def _free_form(self, key: Any) -> Key:
        if type(key) is list:
            raise UnsupportedKeyError(
                f"a context key is a tuple, not a list: use a tuple, {tuple(key)!r}, instead of {key!r}"
            )
        try:
            norm = normalize_key(key)
        except UnsupportedKeyError:
            if not self.strict:
                raise
            norm = None
        else:
            if type(norm) is tuple and norm and norm[0] == KIND:
                raise ContextKeyError(
                    f"keys of kind {KIND!r} are reserved for row annotations, got {key!r}; "
                    "see list_annotations(), annotate_rows() and remove_annotation()"
                )
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

    # ------------------------------------------------------------------ row selections

    def _select(self, rows: Any) -> tuple[str, Any]:
        """Resolve ``rows`` without a Python object per row where possible.

        Returns ``("slice", positional slice)``, ``("mask", boolean array)`` or
        ``("labels", distinct canonical labels)``; every label is validated.
        """
        index = self.data.index
        if isinstance(rows, slice):
            if index.dtype.kind in "iuf":  # df.loc refuses these too; slice_indexer may not
                for bound in (rows.start, rows.stop):
                    if bound is not None and (
                        isinstance(bound, (bool, np.bool_)) or not isinstance(bound, Real)
                    ):
                        raise ContextKeyError(
                            f"cannot slice the DataFrame's numeric index with {rows!r}; use numeric bounds"
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
            return "slice", indexer
        mask = _boolean_mask(rows, index)
        if mask is not None:
            return "mask", mask
        fast = _int_labels(rows, index)
        if fast is not None:
            return "labels", fast
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
                f"{len(missing)} row labels are not in the DataFrame's index: [{shown}]; first: {errors[0]}"
            )
        return "labels", _distinct(out)

    def _rows(self, rows: Any) -> list[Any]:
        """Resolve labels / a boolean mask / a label slice to distinct, canonical row labels."""
        return self._labels_of(*self._select(rows))

    def _labels_of(self, how: str, sel: Any) -> list[Any]:
        if how == "labels":
            return sel  # type: ignore[no-any-return]
        return self._index_labels(self.data.index[sel])

    def _index_labels(self, selected: pd.Index) -> list[Any]:
        if isinstance(selected.dtype, np.dtype) and selected.dtype.kind in "iu":
            labels = selected.tolist()  # Python ints already: nothing to normalise
        else:
            labels = [normalize_key(x) for x in selected.tolist()]
        return labels if selected.is_unique else _distinct(labels)

    def _row_keys(self, labels: list[Any]) -> Iterable[Key]:
        """``("row", label)`` for each (validated) label, through a subclass's ``validate_key``."""
        keys = zip(repeat(_ROW), labels)
        return keys if self._own_validation else self.validate_keys(keys)

    def _check_annotated_rows(self, labels: list[Any]) -> None:
        """Run a subclass's ``validate_key`` on every row an annotation is to cover."""
        keys = list(zip(repeat(_ROW), labels))
        if self.validate_keys(keys) != keys:
            raise ContextKeyError(
                f"{type(self).__name__}.validate_key changes row keys, which a row annotation (a set "
                "of rows, not of keys) cannot follow; use add_row_context(rows, metadata, per_row=True)"
            )

    def _positions(self, how: str, sel: Any) -> np.ndarray:
        """Positions of the distinct selected labels, in selection order (first occurrences)."""
        index = self.data.index
        if how == "labels":
            return self._label_positions(sel)
        pos = np.arange(*sel.indices(len(index))) if how == "slice" else np.flatnonzero(sel)
        if not index.is_unique:
            pos = pos[~index[pos].duplicated()]
        return pos

    def _label_positions(self, labels: list[Any]) -> np.ndarray:
        """The (first) position of each canonical label of the index."""
        index = self.data.index
        if not labels:
            return np.empty(0, dtype=np.intp)
        if index.is_unique:
            pos = index.get_indexer(labels)
        else:
            first = ~index.duplicated(keep="first")
            pos = np.flatnonzero(first)[index[first].get_indexer(labels)]
        if (pos < 0).any():  # pragma: no cover - labels were validated
            raise LabelNotFoundError("row labels not found in the DataFrame's index")
        return pos  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ bulk row context

    def add_row_context(self, rows: Any, metadata: Any, *, per_row: bool = False) -> int:
        """Attach context to many rows at once; return how many distinct row labels got it.

        ``rows`` is a list of labels (or one label; on an integer index also
        an integer array or ``Index``, checked at C speed), a boolean mask
        (numpy array, list of bools, or Series aligned by label with the
        index, as with ``.loc``) or a label slice (inclusive, as
        ``df.loc[a:b]``). Every label is validated before anything is stored.

        ``metadata`` is either

        * **one dict**: stored *once*, as a row annotation with a compact row
          set (see :meth:`annotate_rows` and the module docstring); with
          ``per_row=True``, stored as one entry per row instead (one batch);
        * **per-row metadata**, stored as one entry per row in one batch: a
          ``Series`` of dicts or a ``DataFrame`` (its rows become the dicts;
          missing values are left out) aligned by label with the selected
          rows, or a list of dicts with one per selected distinct label, in
          order. ``None`` (or a missing value) stores nothing for that row.
        """
        how, sel = self._select(rows)
        if isinstance(metadata, Mapping) and not per_row:
            return self._annotate(how, sel, metadata)[1]
        return self._add_per_row(how, sel, metadata)

    def annotate_rows(self, rows: Any, metadata: Mapping[str, Any]) -> str | None:
        """Store ``metadata`` once for the selected rows; return the annotation's id.

        ``None`` when the selection is empty (nothing is stored). Reads of
        ``("row", label)`` merge the annotations covering the row (in creation
        order, later ones winning per field) under the row's own entry.
        """
        return self._annotate(*self._select(rows), metadata)[0]

    def _annotate(self, how: str, sel: Any, metadata: Any) -> tuple[str | None, int]:
        if not isinstance(metadata, Mapping):
            raise ContextSerializationError(
                f"an annotation's metadata must be a dict, got {type(metadata).__name__}"
            )
        if not self._own_validation:
            self._check_annotated_rows(self._labels_of(how, sel))
        book = self._annotations_in_store()
        meta = book.prepare(metadata)  # bad metadata: nothing stored
        rows, by, fingerprint, count = self._annotation_rows(how, sel)
        if not rows:
            return None, 0
        ann = book.write(meta, rows, by, fingerprint)
        known = self._annotations
        if known is None:
            self._set_annotations((ann,))
        elif known is not _UNLOADED:
            self._set_annotations(tuple(sorted((*known, ann), key=lambda a: a.id)))
        return ann.id, count

    def _annotation_rows(self, how: str, sel: Any) -> tuple[RowSet, str, Any, int]:
        """The selected rows as a row set: of labels on an integer index, else of positions."""
        index = self.data.index
        n = len(index)
        if _by_label(index):
            if isinstance(index, pd.RangeIndex) and index.step == 1 and how != "labels":
                start = index.start
                if how == "mask":
                    rows = row_sets.from_mask(sel, start)
                else:
                    a, b, step = sel.indices(n)
                    if step == 1:
                        rows = row_sets.from_ranges([start + a], [start + b]) if a < b else row_sets.empty()
                    else:
                        rows = row_sets.from_sorted(np.sort(np.arange(a, b, step)) + start)
            else:
                if how == "labels":
                    ids = np.array(sel, dtype=np.int64)
                else:
                    ids = index.to_numpy()[sel].astype(np.int64)
                rows = row_sets.from_sorted(row_sets.sorted_unique(ids))
            return rows, BY_LABEL, None, len(rows)
        # By position: every row with a selected label, so that duplicated labels share context.
        if how == "labels":
            pos = self._label_positions(sel)
            count = len(sel)
            if index.is_unique:
                rows = row_sets.from_sorted(row_sets.sorted_unique(pos))
            else:
                rows = row_sets.from_mask(index.isin(index[pos]))
        else:
            if index.is_unique:
                if how == "mask":
                    rows = row_sets.from_mask(sel)
                else:
                    a, b, step = sel.indices(n)
                    if step == 1:
                        rows = row_sets.from_ranges([a], [b]) if a < b else row_sets.empty()
                    else:
                        rows = row_sets.from_sorted(np.sort(np.arange(a, b, step)))
                count = len(rows)
            else:
                selected = index[sel]
                count = len(selected.unique())
                rows = row_sets.from_mask(index.isin(selected))
        return rows, BY_POSITION, self._fingerprint(), count

    def _add_per_row(self, how: str, sel: Any, metadata: Any) -> int:
        with gc_paused():  # millions of acyclic tuples and dicts: no collections meanwhile
            labels = self._labels_of(how, sel)
            keys = self._row_keys(labels)
            if isinstance(metadata, Mapping):
                pairs = list(zip(keys, repeat(metadata)))
            else:
                values = self._per_row_values(how, sel, labels, metadata)
                if None in values:
                    pairs = [(k, v) for k, v in zip(keys, values) if v is not None]
                else:
                    pairs = list(zip(keys, values))
        if pairs:
            self._store.set_many(pairs)
        return len(pairs)

    def _per_row_values(self, how: str, sel: Any, labels: list[Any], metadata: Any) -> list[Any]:
        if isinstance(metadata, pd.DataFrame):
            return _records(self._align(metadata, how, sel, labels))
        if isinstance(metadata, pd.Series):
            return [None if _missing(v) else v for v in self._align(metadata, how, sel, labels).tolist()]
        if isinstance(metadata, (list, tuple, np.ndarray)):
            for i, item in enumerate(metadata):
                if item is not None and not isinstance(item, Mapping):
                    raise ContextSerializationError(
                        f"a list of row metadata holds dicts (or None), but item {i} is "
                        f"{type(item).__name__} {item!r:.60}; for one dict shared by every row pass a dict"
                    )
            if len(metadata) != len(labels):
                raise ContextValueError(
                    f"{len(metadata)} metadata dicts for {len(labels)} selected rows; a list gives "
                    "one dict per selected (distinct) row label, in order. For one dict shared by "
                    "every row pass a dict; for metadata aligned by label pass a Series"
                )
            return list(metadata)
        raise ContextSerializationError(
            f"row metadata must be a dict, or per row a Series of dicts, a DataFrame or a list of "
            f"dicts; got {type(metadata).__name__}"
        )

    def _align(self, meta: Any, how: str, sel: Any, labels: list[Any]) -> Any:
        """``meta`` (Series or DataFrame) at the selected rows, aligned by label."""
        index = self.data.index
        what = type(meta).__name__
        if how == "labels" and not labels:
            return meta.iloc[:0]
        pos = self._positions(how, sel)
        if meta.index is index or meta.index.equals(index):
            return meta.iloc[pos]
        if not meta.index.is_unique:
            raise ContextKeyError(
                f"a {what} of row metadata whose index differs from the DataFrame's must have "
                "unique labels to be aligned with it"
            )
        where = meta.index.get_indexer(index[pos])
        if (where < 0).any():
            absent = index[pos][where < 0]
            shown = ", ".join(_show(x) for x in absent[:5]) + (", ..." if len(absent) > 5 else "")
            raise LabelNotFoundError(
                f"the {what} of row metadata lacks {len(absent)} of the selected row labels: [{shown}]"
            )
        return meta.iloc[where]

    def get_row_context(self, rows: Any) -> list[Metadata | None]:
        """The context of each *distinct* selected row label, in order, in one batch.

        ``rows`` is selected as in :meth:`add_row_context`; a label given
        twice (or shared by several rows) appears once. Each row's context
        merges the annotations covering it under its own entry, as
        :meth:`get_context` does; the annotations are re-read from the store
        first (one read when none changed).
        """
        labels = self._rows(rows)
        entries = self._store.get_many(list(self._row_keys(labels)))
        anns = self._load_annotations()
        return self._merge_rows(anns, labels, entries) if anns else entries

    def remove_row_context(self, rows: Any, *, annotations: bool = False) -> int:
        """Remove the selected rows' own entries; return how many there were.

        With ``annotations=True`` the rows are also taken out of every
        annotation that covers them (each affected row set is rewritten; an
        annotation left without rows is removed), so they have no context left.
        """
        how, sel = self._select(rows)
        labels = self._labels_of(how, sel)
        removed = self._store.delete_many(list(self._row_keys(labels)))
        if annotations:
            self._subtract(how, sel, labels)
        return removed

    def _subtract(self, how: str, sel: Any, labels: list[Any]) -> None:
        anns = self._load_annotations()
        if not anns:
            return
        book = self._annotations_in_store()
        by_label: np.ndarray | None = None
        by_position: np.ndarray | None = None
        kept: list[Annotation] = []
        for ann in anns:
            if ann.by_label:
                if by_label is None:
                    ids, valid = _label_ids(labels)
                    by_label = row_sets.sorted_unique(ids[valid])
                rows = ann.rows.difference(by_label)
            else:
                ann.check_index(self._fingerprint())
                if by_position is None:
                    index = self.data.index
                    pos = self._label_positions(labels)
                    by_position = pos if index.is_unique else np.flatnonzero(index.isin(index[pos]))
                    by_position = row_sets.sorted_unique(by_position)
                rows = ann.rows.difference(by_position)
            if len(rows) == len(ann.rows):
                kept.append(ann)
                continue
            new = book.rewrite(ann, rows)
            if new is not None:
                kept.append(new)
        self._set_annotations(tuple(kept) or None)

    # ------------------------------------------------------------------ annotations

    def list_annotations(self) -> list[dict[str, Any]]:
        """Every row annotation, oldest first (re-read from the store).

        Each is a dict: ``id``, ``metadata``, ``rows`` (how many labels or
        positions it covers), ``by`` (``"label"`` or ``"position"``) and
        ``created`` (UTC datetime, from the id).
        """
        return [ann.info() for ann in self._load_annotations()]

    def remove_annotation(self, annotation_id: str) -> bool:
        """Remove one annotation (its metadata and row set); return whether it existed."""
        if not isinstance(annotation_id, str):
            raise ContextKeyError(f"annotation ids are strings, got {annotation_id!r}")
        removed = self._annotations_in_store().remove(annotation_id)
        known = self._annotations
        if known is not None and known is not _UNLOADED:
            self._set_annotations(tuple(a for a in known if a.id != annotation_id) or None)
        return removed

    def refresh_annotations(self) -> None:
        """Re-read the annotations from the store (to see those other adapters or processes made)."""
        self._load_annotations()

    def annotation_mask(self, annotation_id: str) -> np.ndarray:
        """A boolean array over the frame's rows: which rows annotation ``annotation_id`` covers."""
        for ann in self._load_annotations():
            if ann.id == annotation_id:
                return self._coverages((ann,))[0]
        raise ContextKeyError(f"no row annotation {annotation_id!r}; see list_annotations()")

    def _annotations_in_store(self) -> AnnotationStore:
        if self._annotation_store is None:
            self._annotation_store = AnnotationStore(self._store)
        return self._annotation_store

    def _load_annotations(self) -> tuple[Annotation, ...]:
        known = self._annotations
        cached = {a.id: a for a in known} if known else {}
        anns = self._annotations_in_store().load(cached)
        if anns and anns == known:  # the same Annotation objects: keep the tuple (and its coverage)
            return known  # type: ignore[no-any-return]
        self._set_annotations(anns or None)
        return anns

    def _loaded(self) -> tuple[Annotation, ...]:
        anns = self._annotations
        if anns is _UNLOADED:
            return self._load_annotations()
        return anns or ()  # type: ignore[no-any-return]

    def _fingerprint(self) -> dict[str, Any]:
        index = self.data.index
        if index is not self._fp_index:
            self._fp = index_fingerprint(index)
            self._fp_index = index
        return self._fp

    def _annotated(self, key: Key, default: Any) -> Metadata | None:
        """``get_context`` of a validated ``("row", label)`` key when annotations may exist."""
        anns = self._loaded()
        index = self.data.index
        get = self._get_row if index is self._fast_index else self._get
        if anns:
            label = key[1]  # type: ignore[index]
            cover = self._coverage(index, anns)
            if cover is not None and type(label) is int and cover.misses(label):
                return get(key, default)  # type: ignore[no-any-return]
            covering = self._covering(anns, label)
            if covering:
                return _merged(covering, get(key, None))
        return get(key, default)  # type: ignore[no-any-return]

    def _merge_covering(self, key: Key, anns: tuple[Annotation, ...]) -> Metadata:
        """``get_context`` of a row of the cached RangeIndex that some of ``anns`` cover."""
        return _merged(self._covering(anns, key[1]), self._get_row(key, None))  # type: ignore[index]

    def _coverage(self, index: pd.Index, anns: tuple[Annotation, ...]) -> _Coverage | None:
        """The rows ``anns`` cover, over ``index`` (the cached RangeIndex, if of step 1), else None.

        Made at most once per index and set of known annotations: ``_set_annotations`` drops it.
        """
        cover = self._cover
        if cover is not None and cover.index is index and cover.annotations is anns:
            return cover
        if index is not self._fast_index or index.step != 1:  # None when validate_key is overridden
            return None

        def covered(lo: int, hi: int) -> np.ndarray:
            out = np.zeros(hi - lo, dtype=bool)
            for ann in anns:  # one mask at a time: memory stays O(rows), however many annotations
                out |= self._coverages((ann,), lo, hi)[0]
            return out

        cover = _Coverage(index, anns, covered)
        self._cover = cover
        if self._annotations is not anns:  # replaced meanwhile (after _set_annotations cleared _cover)
            self._cover = None
        return cover

    def _covering(self, anns: tuple[Annotation, ...], label: Any) -> list[Annotation]:
        out = []
        pos = -1
        for ann in anns:
            if ann.by_label:
                if label in ann.rows:
                    out.append(ann)
                continue
            ann.check_index(self._fingerprint())
            if pos < 0:
                loc = self.data.index.get_loc(label)
                if isinstance(loc, slice):
                    pos = loc.start
                elif isinstance(loc, np.ndarray):
                    pos = int(np.argmax(loc))
                else:
                    pos = int(loc)
            if pos in ann.rows:
                out.append(ann)
        return out

    def _coverages(
        self, anns: tuple[Annotation, ...], lo: int = 0, hi: int | None = None
    ) -> list[np.ndarray]:
        """For each annotation, a boolean array over the frame's rows (at positions ``lo`` to ``hi``)."""
        index = self.data.index
        hi = len(index) if hi is None else hi
        ids: np.ndarray | None = None
        valid: np.ndarray | None = None
        out = []
        for ann in anns:
            if not ann.by_label:
                ann.check_index(self._fingerprint())
                out.append(ann.rows.to_mask(hi - lo, lo))
            elif isinstance(index, pd.RangeIndex) and index.step == 1:
                out.append(ann.rows.to_mask(hi - lo, index.start + lo))
            else:
                if ids is None:
                    ids, valid = _index_ids(index[lo:hi])
                out.append(ann.rows.contains(ids) & valid)
        return out

    def _merge_rows(
        self, anns: tuple[Annotation, ...], labels: list[Any], entries: list[Metadata | None]
    ) -> list[Metadata | None]:
        """``entries`` (per-row, aligned with ``labels``) merged over the annotations covering each."""
        if not labels:
            return entries
        cover = np.zeros((len(labels), len(anns)), dtype=bool)
        ids: np.ndarray | None = None
        valid: np.ndarray | None = None
        pos: np.ndarray | None = None
        for j, ann in enumerate(anns):
            if ann.by_label:
                if ids is None:
                    ids, valid = _label_ids(labels)
                cover[:, j] = ann.rows.contains(ids) & valid
            else:
                ann.check_index(self._fingerprint())
                if pos is None:
                    pos = self._label_positions(labels).astype(np.int64)
                cover[:, j] = ann.rows.contains(pos)
        if not cover.any():
            return entries
        # One merged base per distinct combination of covering annotations.
        packed = np.ascontiguousarray(np.packbits(cover, axis=1))
        codes = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
        combos, which = np.unique(codes, return_inverse=True)
        bases: list[tuple[dict[str, Any], str | None] | None] = []
        for combo in combos:
            bits = np.unpackbits(np.frombuffer(combo.tobytes(), dtype=np.uint8))[: len(anns)]
            members = np.flatnonzero(bits)
            if not len(members):
                bases.append(None)
                continue
            base: dict[str, Any] = {}
            for j in members.tolist():
                base.update(anns[j].metadata)
            flat = all(type(v) is not dict and type(v) is not list for v in base.values())
            bases.append((base, None if flat else dumps_json(base)))
        out: list[Metadata | None] = []
        append = out.append
        for entry, k in zip(entries, which.ravel().tolist()):
            found = bases[k]
            if found is None:
                append(entry)
                continue
            merged = found[0].copy() if found[1] is None else loads_json(found[1])
            if entry is not None:
                merged.update(entry)
            append(merged)
        return out

    # ------------------------------------------------------------------ single keys with annotations

    def has_context(self, key: Key) -> bool:
        """Whether ``key`` carries metadata (for a row: its own entry or an annotation)."""
        vkey = self.validate_key(key)
        if self._annotations is not None and _is_row_key(vkey):
            anns = self._loaded()
            if anns and self._covering(anns, vkey[1]):  # type: ignore[index]
                return True
        return self._store.exists(vkey)

    def get_context_many(self, keys: Iterable[Key]) -> list[Metadata | None]:
        """The metadata of each key in order (``None`` where absent), in one batch."""
        with gc_paused():
            mem = self._mem
            labels = self._fast_range() if mem is not None and self._annotations is None else None
            if mem is not None and labels is not None:
                found, vkeys = mem._get_rows(keys, labels)
                if found is not None:
                    return found
                vkeys = self.validate_keys(vkeys)  # some key is not a ("row", n) of the index
            else:
                vkeys = keys if type(keys) is list else list(keys)
                if not self._fast_keys(vkeys):
                    vkeys = self.validate_keys(vkeys)
        out = self._store.get_many(vkeys)
        if self._annotations is None:
            return out
        anns = self._loaded()
        rows = [i for i, k in enumerate(vkeys) if _is_row_key(k)] if anns else []
        if rows:
            merged = self._merge_rows(anns, [vkeys[i][1] for i in rows], [out[i] for i in rows])  # type: ignore[index]
            for i, value in zip(rows, merged):
                out[i] = value
        return out

    def clear_context(self, prefix: tuple[Any, ...] | None = None) -> int:
        """Remove every key of this adapter's namespace (under ``prefix``); return how many.

        ``clear_context(("row",))`` removes the row annotations too (their
        keys are counted); ``clear_context()`` removes everything.
        """
        prefix = check_prefix(prefix)
        removed = self._store.clear(prefix)
        if not prefix:
            self._set_annotations(None)
        elif prefix == ("row",):
            removed += self._store.clear(INDEX_KEY)
            self._set_annotations(None)
        elif prefix[0] == KIND:
            self._set_annotations(_UNLOADED)
        return removed

    # ------------------------------------------------------------------ frames

    def row_context_frame(self) -> pd.DataFrame:
        """Row context as a DataFrame aligned with ``df.index``: one column per field.

        Rows without context hold missing values; rows sharing a duplicated
        label repeat that label's context. Entries whose label no longer names
        a row exactly (the index changed since) are left out. Annotations
        (re-read from the store first) fill the fields a row's own entry does
        not have, later annotations winning; a list or dict value of an
        annotation is one object shared by the cells it fills.
        """
        target = self.data.index
        frame, labels, records = self._context_frame_parts("row", target, self._row_label)
        anns = self._load_annotations()
        if not anns:
            return frame
        covers = self._coverages(anns)
        n = len(target)
        own = _frame(labels, [dict.fromkeys(r, True) for r in records], target) if records else None
        fields = dict.fromkeys(frame.columns)
        for ann in anns:
            fields.update(dict.fromkeys(ann.metadata))
        out = frame.copy()
        for name in fields:
            owners = [(a.metadata[name], c) for a, c in zip(anns, covers) if name in a.metadata]
            if not owners:
                continue
            if name in frame.columns:
                mine = own[name].notna().to_numpy() if own is not None else None
                out[name] = _fill(frame[name].to_numpy(dtype=object, copy=True), owners, mine)
            else:
                out[name] = _annotation_column(n, owners)
        return out

    def column_context_frame(self) -> pd.DataFrame:
        """Column context as a DataFrame indexed by ``df.columns``: one column per field."""
        return self._context_frame_parts("column", self.data.columns, self._column)[0]

    def _context_frame_parts(
        self, kind: str, target: pd.Index, validate: Any
    ) -> tuple[pd.DataFrame, list[Any], list[Metadata]]:
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
            return _frame(labels, records, target), labels, records
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
            labels, records = [p[0] for p in pairs], [p[1] for p in pairs]
            return _frame(labels, records, target), labels, records


# A row's byte in a _Coverage (0: not worked out yet).
_UNCOVERED, _COVERED = 1, 2


class _Coverage:
    """Which rows of one RangeIndex (step 1) some annotation of ``annotations`` covers.

    One byte per row (a bit test costs more than the bytes save on the spec's
    hot path): 0 not worked out yet, 1 no annotation covers the row, 2 one
    does. ``covered(lo, hi)`` works out the rows at positions ``lo`` to ``hi``.
    It runs for a block of rows once that block has been read a few times:
    until then :meth:`misses` says "not known" and the caller asks the
    annotations, so scattered reads over a large frame cost no more than
    without a coverage, and repeated reads of a region soon take the hot path.
    """

    __slots__ = ("_array", "_covered", "_reads", "annotations", "index", "n", "rows", "start")
    _BLOCK = 1 << 12  # rows worked out together
    _READS = 8  # reads of a block (answered by the annotations) before it is worked out

    def __init__(
        self,
        index: pd.RangeIndex,
        annotations: tuple[Annotation, ...],
        covered: Callable[[int, int], np.ndarray],
    ) -> None:
        self.index, self.annotations = index, annotations
        self.start, self.n = index.start, len(index)
        self._array = np.zeros(self.n, dtype=np.uint8)  # calloc: pages are touched as blocks are made
        self.rows = self._array.data  # a memoryview: indexing it gives Python ints, fast
        self._covered = covered
        self._reads = bytearray(-(-self.n // self._BLOCK))

    def misses(self, label: int) -> bool | None:
        """Whether no annotation covers row ``label`` of the index; ``None``: not known yet."""
        b = label - self.start
        if not 0 <= b < self.n:
            return False
        if not self.rows[b]:
            block = b // self._BLOCK
            if self._reads[block] < self._READS:
                self._reads[block] += 1
                return None
            lo = block * self._BLOCK
            hi = min(lo + self._BLOCK, self.n)
            self._array[lo:hi] = self._covered(lo, hi).view(np.uint8) + np.uint8(_UNCOVERED)
        return self.rows[b] == _UNCOVERED


def _fill(values: np.ndarray, owners: list[tuple[Any, np.ndarray]], mine: np.ndarray | None) -> np.ndarray:
    """Object ``values`` with each annotation value written where it covers (later ones last)."""
    for value, cover in owners:
        take = cover if mine is None else cover & ~mine
        if type(value) is dict or type(value) is list:
            holder = np.empty(1, dtype=object)
            holder[0] = loads_json(dumps_json(value))  # one copy per annotation, not the cached one
            values[take] = holder
        else:
            values[take] = value
    return pd.Series(values).infer_objects().to_numpy()  # type: ignore[no-any-return]


def _annotation_column(n: int, owners: list[tuple[Any, np.ndarray]]) -> np.ndarray:
    """A column only annotations fill: typed directly for numbers and strings (no inference pass)."""
    kinds = {type(value) for value, _ in owners}
    if kinds <= {int, float} and all(_I64_MIN <= v <= _I64_MAX for v, _ in owners if type(v) is int):
        covered = np.zeros(n, dtype=bool)
        for _, cover in owners:
            covered |= cover
        dtype = np.int64 if kinds == {int} and bool(covered.all()) else np.float64
        numbers = np.full(n, np.nan) if dtype is np.float64 else np.zeros(n, dtype=np.int64)
        for value, cover in owners:
            numbers[cover] = value
        return numbers
    values = np.full(n, np.nan, dtype=object)
    if kinds == {str}:
        for value, cover in owners:
            values[cover] = value
        return values
    return _fill(values, owners, None)


def _is_row_key(key: Any) -> bool:
    return type(key) is tuple and len(key) == 2 and key[0] == "row"


def _by_label(index: pd.Index) -> bool:
    """Whether annotations identify this index's rows by label (integers that fit int64)."""
    dtype = index.dtype
    if not isinstance(dtype, np.dtype) or dtype.kind not in "iu":
        return False
    return dtype.kind == "i" or not len(index) or int(index.max()) <= _I64_MAX


def _index_ids(index: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """The index's labels as int64 ids, and which of them are (int64-sized) integers."""
    dtype = index.dtype
    n = len(index)
    if isinstance(dtype, np.dtype) and dtype.kind == "i":
        return index.to_numpy().astype(np.int64, copy=False), np.ones(n, dtype=bool)
    if isinstance(dtype, np.dtype) and dtype.kind == "u":
        values = index.to_numpy().astype(np.uint64, copy=False)
        valid = values <= _I64_MAX
        return np.where(valid, values, 0).astype(np.int64), valid
    if dtype.kind == "O":
        return _label_ids(index.tolist())
    return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)


def _label_ids(labels: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int64 ids, and which of them are integers (only those can be label ids)."""
    n = len(labels)
    if set(map(type, labels)) == {int}:
        try:
            return np.array(labels, dtype=np.int64), np.ones(n, dtype=bool)
        except OverflowError:
            pass
    valid = np.fromiter((type(x) is int and _I64_MIN <= x <= _I64_MAX for x in labels), bool, n)
    ids = np.fromiter((x if ok else 0 for x, ok in zip(labels, valid.tolist())), np.int64, n)
    return ids, valid


def _merged(covering: list[Annotation], entry: Metadata | None) -> Metadata:
    """The metadata of ``covering`` merged in order, then the row's own entry: a fresh, independent dict."""
    if len(covering) == 1:
        out = covering[0].metadata_copy()
    else:
        out = {}
        for ann in covering:
            out.update(ann.metadata)
        if any(ann.nested is not None for ann in covering):  # lists or dicts: copied, not shared
            out = loads_json(dumps_json(out))
    if entry is not None:
        out.update(entry)
    return out


def _records(frame: pd.DataFrame) -> list[Any]:
    """The rows of ``frame`` as dicts of Python values (missing values left out)."""
    names = list(frame.columns)
    columns = [frame.iloc[:, j].tolist() for j in range(len(names))]
    records: list[Any] = list(map(dict, map(zip, repeat(names), zip(*columns))))
    if len(records) < len(frame):  # no columns: one empty dict per row
        records = [{} for _ in range(len(frame))]
    if bool(frame.isna().to_numpy().any()):
        records = [{k: v for k, v in r.items() if not _missing(v)} for r in records]
    return records


def _missing(value: Any) -> bool:
    """A missing value in per-row metadata (``None``, NaN, ``pd.NA``, ``NaT``)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return type(value) is float and value != value


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


def _empty_like(target: pd.Index) -> pd.Index:
    """An empty index of ``target``'s kind. (``target[:0]`` may inherit a cached
    ``is_unique=False`` from ``target`` in pandas 2, which makes ``reindex`` refuse it.)"""
    return target.take(np.empty(0, dtype=np.intp))


def _label_index(labels: list[Any], target: pd.Index) -> pd.Index:
    """Stored labels as an index that ``reindex`` can match against ``target``."""
    if isinstance(target, pd.MultiIndex):
        return pd.MultiIndex.from_tuples(labels, names=target.names) if labels else (_empty_like(target))
    if not labels:
        return _empty_like(target)
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
                "a boolean row mask cannot hold missing values; fill them first, e.g. mask.fillna(False)"
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


def _int_labels(rows: Any, index: pd.Index) -> list[Any] | None:
    """An integer array (or Index, Series) of labels of an integer index, validated at C speed.

    ``None`` when ``rows`` is not such an array or a label is missing (the slow
    path then names the missing labels).
    """
    if not isinstance(rows, (np.ndarray, pd.Index, pd.Series)) or rows.ndim != 1:
        return None
    dtype, kind = rows.dtype, index.dtype
    if not (isinstance(dtype, np.dtype) and isinstance(kind, np.dtype)):
        return None
    if dtype.kind not in "iu" or kind.kind not in "iu":
        return None
    values = np.asarray(rows)
    if index.is_unique:
        found = index.get_indexer(pd.Index(values)) >= 0
    else:
        found = np.isin(values, index.to_numpy())
    if not bool(found.all()):
        return None
    labels: list[Any] = values.tolist()
    if len(pd.unique(values)) != len(values):
        labels = list(dict.fromkeys(labels))  # ints only: no 1 / 1.0 / True collisions
    return labels


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
