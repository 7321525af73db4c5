"""Bulk row context at scale: row annotations, compact row sets and per-row metadata in one batch.

Semantics run over the in-memory, SQLite, Redis and PostgreSQL stores (the
servers come from the ``redis_url`` / ``postgres_url`` fixtures; each test
works in its own namespace and clears it). A randomised test checks
annotations against the per-row representation as an oracle. Scale tests:
10,000,000 rows annotated with one dict (memory, SQLite) and per-row metadata
for 1,000,000 rows (Redis, PostgreSQL; ``slow``). No timing thresholds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from context_framework import (
    ContextError,
    ContextKeyError,
    ContextSerializationError,
    ContextValueError,
    ContextValueTooLargeError,
    InMemoryContextStore,
    LabelNotFoundError,
    open_store,
)
from context_framework.adapters import row_sets
from context_framework.adapters.annotations import (
    INDEX_KEY,
    AnnotationStore,
    id_time,
    new_annotation_id,
)
from context_framework.adapters.pandas_adapter import AnnotationIndexError, PandasContextAdapter
from context_framework.sqlite_store import SQLiteContextStore

STORES = ["memory", "sqlite", "redis", "postgres"]

# --------------------------------------------------------------------------- fixtures


class Target:
    """One store of the parametrised kind, and adapters on it in one namespace of this test."""

    def __init__(self, kind: str, store: Any, url: str | None, name: str) -> None:
        self.kind, self.store, self.url, self.name = kind, store, url, name

    def adapter(self, df: pd.DataFrame, **options: Any) -> PandasContextAdapter:
        options.setdefault("name", self.name)
        return PandasContextAdapter(df, context_store=self.store, **options)

    @property
    def space(self) -> Any:
        """The store view of this test's namespace."""
        return self.store.with_namespace(self.name)


def _open(kind: str, request: pytest.FixtureRequest, tmp_path: Any) -> tuple[Any, str | None]:
    if kind == "memory":
        return InMemoryContextStore(), None
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'ctx.db'}"
    elif kind == "redis":
        url = request.getfixturevalue("redis_url")
    else:
        url = request.getfixturevalue("postgres_url")
    return open_store(url), url


@pytest.fixture(params=STORES)
def target(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Target]:
    store, url = _open(request.param, request, tmp_path)
    t = Target(request.param, store, url, f"cftest_{uuid.uuid4().hex[:12]}")
    try:
        yield t
    finally:
        t.space.clear()
        store.close()


@pytest.fixture(params=["memory", "sqlite"])
def local(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Target]:
    store, url = _open(request.param, request, tmp_path)
    t = Target(request.param, store, url, f"cftest_{uuid.uuid4().hex[:12]}")
    yield t
    store.close()


def snapshot(space: Any) -> list[tuple[str, Any]]:
    return sorted((repr(k), v) for k, v in space.items())


class Counting:
    """Counts calls of a store's methods (delegates everything)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted


META = {"source": "qc", "batch": 7}

# --------------------------------------------------------------------------- one annotation


def test_one_dict_is_stored_once(target: Target) -> None:
    n = 5_000
    df = pd.DataFrame({"A": np.arange(n)})
    mask = np.random.default_rng(1).random(n) < 0.5
    adapter = target.adapter(df)
    assert adapter.add_row_context(mask, META) == int(mask.sum())
    assert adapter.list_context_keys() == []  # annotations are not the user's keys...
    keys = target.space.list_keys()
    assert len(keys) <= 4  # ...but the index, the head and its row-set chunk(s): not one per row
    assert all(k[0] == "annotation" for k in keys)
    [info] = adapter.list_annotations()
    assert info["metadata"] == META and info["rows"] == int(mask.sum()) and info["by"] == "label"
    assert isinstance(info["created"], datetime)
    for i in [0, 1, 2, 3, 100, 2_500, n - 1]:
        expected = META if mask[i] else None
        assert adapter.get_context(("row", i)) == expected
        assert adapter.has_context(("row", i)) is bool(mask[i])
    assert adapter.get_row_context(slice(0, 9)) == [META if m else None for m in mask[:10]]
    assert adapter.get_context_many([("row", 0), ("column", "A")]) == [META if mask[0] else None, None]
    frame = adapter.row_context_frame()
    assert frame["source"].notna().to_numpy().tolist() == mask.tolist()
    assert np.array_equal(adapter.annotation_mask(info["id"]), mask)


def test_reads_merge_annotations_then_the_rows_own_entry(target: Target) -> None:
    df = pd.DataFrame({"A": range(8)})
    adapter = target.adapter(df)
    first = adapter.annotate_rows(slice(0, 5), {"q": 1, "src": "a", "tags": ["x"]})
    second = adapter.annotate_rows([4, 5, 6], {"q": 2, "by": "b"})
    assert first is not None and second is not None and first < second
    adapter.add_context(("row", 5), {"q": 3, "own": True})
    adapter.add_context(("row", 7), {"own": True})
    expected = {
        0: {"q": 1, "src": "a", "tags": ["x"]},
        4: {"q": 2, "src": "a", "tags": ["x"], "by": "b"},  # later annotation wins per field
        5: {"q": 3, "src": "a", "tags": ["x"], "by": "b", "own": True},  # own entry wins
        6: {"q": 2, "by": "b"},
        7: {"own": True},
    }
    for label, value in expected.items():
        assert adapter.get_context(("row", label)) == value
    everything = adapter.get_row_context(slice(None))
    assert everything == [adapter.get_context(("row", i)) for i in range(8)]
    keys = [("row", i) for i in range(8)]
    assert adapter.get_context_many(keys) == everything
    frame = adapter.row_context_frame()
    assert list(frame.index) == list(range(8))
    for i in range(8):
        row = {k: v for k, v in frame.loc[i].items() if not _missing(v)}
        assert row == (everything[i] or {})
    # nothing aliased: mutating results never changes what is read next
    got = adapter.get_context(("row", 0))
    assert got is not None
    got["tags"].append("y")
    got["q"] = 99
    assert adapter.get_context(("row", 0)) == {"q": 1, "src": "a", "tags": ["x"]}
    # a per-row field set to None still wins over the annotations
    adapter.add_context(("row", 1), {"q": None})
    assert adapter.get_context(("row", 1)) == {"q": None, "src": "a", "tags": ["x"]}
    assert _missing(adapter.row_context_frame().loc[1, "q"])
    # update/increment/remove act on the row's own entry only
    assert adapter.update_context(("row", 0), {"z": 1}) == {"z": 1}
    assert adapter.get_context(("row", 0)) == {"q": 1, "src": "a", "tags": ["x"], "z": 1}
    assert adapter.remove_context(("row", 0)) is True
    assert adapter.remove_context(("row", 0)) is False
    assert adapter.get_context(("row", 0)) == {"q": 1, "src": "a", "tags": ["x"]}
    assert adapter.has_context(("row", 0))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def test_cells_and_columns_are_not_covered(target: Target) -> None:
    adapter = target.adapter(pd.DataFrame({"A": range(3)}))
    adapter.add_row_context(slice(None), META)
    assert adapter.get_context(("row", 1, "column", "A")) is None
    assert adapter.get_context(("column", "A")) is None
    assert adapter.get_context(("dataset",)) is None


# --------------------------------------------------------------------------- selections and indexes


def _frames() -> dict[str, pd.DataFrame]:
    n = 60
    rng = np.random.default_rng(5)
    dup_ints = rng.integers(0, 20, n)
    dup_strs = [f"s{x}" for x in rng.integers(0, 20, n)]
    return {
        "range": pd.DataFrame({"A": range(n)}),
        "range_offset": pd.DataFrame({"A": range(n)}, index=pd.RangeIndex(-25, n - 25)),
        "range_step": pd.DataFrame({"A": range(n)}, index=pd.RangeIndex(10, 10 + 3 * n, 3)),
        "range_desc": pd.DataFrame({"A": range(n)}, index=pd.RangeIndex(n, 0, -1)),
        "int_shuffled": pd.DataFrame({"A": range(n)}, index=rng.permutation(10 * n)[:n] - 300),
        "int_duplicates": pd.DataFrame({"A": range(n)}, index=dup_ints),
        "uint": pd.DataFrame({"A": range(n)}, index=pd.Index(np.arange(n, dtype=np.uint64) * 7)),
        "str": pd.DataFrame({"A": range(n)}, index=[f"r{i}" for i in rng.permutation(n)]),
        "str_duplicates": pd.DataFrame({"A": range(n)}, index=dup_strs),
        "float": pd.DataFrame({"A": range(n)}, index=np.arange(n) / 4),
        "datetime": pd.DataFrame({"A": range(n)}, index=pd.date_range("2024-01-01", periods=n, tz="UTC")),
        "multi": pd.DataFrame({"A": range(n)}, index=pd.MultiIndex.from_product([list("abcdef"), range(10)])),
    }


def _random_selection(df: pd.DataFrame, rng: np.random.Generator) -> Any:
    n = len(df)
    choice = rng.integers(0, 5)
    if choice == 0:
        return rng.random(n) < rng.random()
    if choice == 1:
        return pd.Series(rng.random(n) < 0.3, index=df.index)
    if choice == 2:
        labels = df.index[rng.integers(0, n, int(rng.integers(0, 12)))]
        return list(labels)
    if choice == 3 and df.index.is_monotonic_increasing and df.index.is_unique:
        a, b = sorted(rng.integers(0, n, 2))
        return slice(df.index[a], df.index[b])
    start, stop = sorted(rng.integers(0, n + 1, 2))
    mask = np.zeros(n, dtype=bool)
    mask[start : stop : int(rng.integers(1, 4))] = True
    return mask


@pytest.mark.parametrize("frame", list(_frames()))
def test_annotations_match_per_row_entries(frame: str, target: Target) -> None:
    """Annotations read exactly like one entry per row (same fields: later replaces earlier).

    (Own entries are left out: they win over annotations whatever their age,
    while a later per-row write replaces them; see the merge test.)
    """
    df = _frames()[frame]
    rng = np.random.default_rng(abs(hash(frame)) % 1000)
    ours = target.adapter(df)
    oracle = PandasContextAdapter(df, context_store=InMemoryContextStore())
    steps = 6 if target.kind in ("memory", "sqlite") else 3
    for step in range(steps):
        sel = _random_selection(df, rng)
        if step % 3 == 2:
            ours.remove_row_context(sel, annotations=True)
            oracle.remove_row_context(sel)
        else:
            meta = {"v": step, "tags": [step]}
            assert ours.add_row_context(sel, meta) == oracle.add_row_context(sel, meta, per_row=True)
        assert ours.get_row_context(slice(None)) == oracle.get_row_context(slice(None))
        if target.kind in ("memory", "sqlite"):  # every row, one read each (after each change)
            keys = [("row", label) for label in df.index]
            assert [ours.get_context(k) for k in keys] == [oracle.get_context(k) for k in keys]
    for label in df.index[:: max(1, len(df) // 10)]:
        assert ours.get_context(("row", label)) == oracle.get_context(("row", label))
        assert ours.has_context(("row", label)) == oracle.has_context(("row", label))
    pd.testing.assert_frame_equal(
        ours.row_context_frame().sort_index(axis=1), oracle.row_context_frame().sort_index(axis=1)
    )


@pytest.mark.parametrize(
    "values",
    [[1, 2], [1, 2.5], ["a", "b"], [True, False], [1, "a"], [None, 3], [[1], {"k": 2}], [2**63, 1]],
    ids=repr,
)
@pytest.mark.parametrize("cover_all", [False, True])
def test_row_context_frame_dtypes_match_per_row(values: list[Any], cover_all: bool) -> None:
    df = pd.DataFrame({"A": range(6)})
    ours = PandasContextAdapter(df)
    oracle = PandasContextAdapter(df)
    selections = [slice(0, 2), slice(3, 5 if cover_all else 4)]
    if cover_all:
        selections[0] = slice(0, 3)
    for sel, value in zip(selections, values):
        ours.add_row_context(sel, {"f": value})
        oracle.add_row_context(sel, {"f": value}, per_row=True)
    pd.testing.assert_frame_equal(ours.row_context_frame(), oracle.row_context_frame())


def test_positional_annotations_on_duplicate_labels_cover_every_row_of_the_label(local: Target) -> None:
    df = pd.DataFrame({"A": [1, 2, 3, 4]}, index=["x", "y", "x", "z"])
    adapter = local.adapter(df)
    assert adapter.add_row_context(np.array([False, False, True, False]), META) == 1
    [info] = adapter.list_annotations()
    assert info["by"] == "position" and info["rows"] == 2  # both rows labelled "x"
    assert adapter.row_context_frame()["source"].notna().tolist() == [True, False, True, False]


# --------------------------------------------------------------------------- per-row metadata


def test_series_of_dicts_aligned_by_label(target: Target) -> None:
    df = pd.DataFrame({"A": range(4)}, index=["w", "x", "y", "z"])
    counting = Counting(target.space)
    adapter = PandasContextAdapter(df, context_store=counting)
    metas = pd.Series([{"i": 0}, {"i": 1}, None, {"i": 3}], index=df.index)
    assert adapter.add_row_context(slice(None), metas) == 3  # None: nothing for that row
    assert counting.calls.get("set_many") == 1 and "set" not in counting.calls
    assert adapter.get_row_context(slice(None)) == [{"i": 0}, {"i": 1}, None, {"i": 3}]
    # another order, a superset: aligned by label, as pandas does
    other = pd.Series([{"j": "z"}, {"j": "q"}, {"j": "w"}], index=["z", "q", "w"])
    assert adapter.add_row_context(["w", "z"], other) == 2
    assert adapter.get_context(("row", "w")) == {"j": "w"}
    with pytest.raises(LabelNotFoundError, match="lacks 1"):
        adapter.add_row_context(["x", "z"], other)
    with pytest.raises(ContextKeyError, match="unique"):
        adapter.add_row_context(["w"], pd.Series([{}, {}], index=["w", "w"]))


def test_dataframe_rows_become_dicts(target: Target) -> None:
    df = pd.DataFrame({"A": range(5)})
    adapter = target.adapter(df)
    meta = pd.DataFrame(
        {"score": [0.5, np.nan, 0.7, 0.1, 0.2], "who": ["a", "b", None, "d", "e"], "n": np.arange(5)},
        index=df.index,
    )
    assert adapter.add_row_context(df["A"] >= 1, meta) == 4
    assert adapter.get_row_context(slice(None)) == [
        None,
        {"who": "b", "n": 1},  # missing values are left out
        {"score": 0.7, "n": 2},
        {"score": 0.1, "who": "d", "n": 3},
        {"score": 0.2, "who": "e", "n": 4},
    ]
    assert type(adapter.get_context(("row", 1))["n"]) is int  # type: ignore[index]


def test_list_of_dicts_matches_the_selection(target: Target) -> None:
    adapter = target.adapter(pd.DataFrame({"A": range(5)}))
    assert adapter.add_row_context([3, 1, 3], [{"k": 3}, {"k": 1}]) == 2  # distinct labels, in order
    assert adapter.get_row_context([1, 3]) == [{"k": 1}, {"k": 3}]
    space = target.space
    before = snapshot(space)
    with pytest.raises(ContextValueError, match="2 metadata dicts for 3 selected rows"):
        adapter.add_row_context([0, 2, 4], [{"k": 0}, {"k": 2}])
    with pytest.raises(ContextSerializationError, match="item 1"):
        adapter.add_row_context([0, 2], [{"k": 0}, "x"])
    with pytest.raises(ContextSerializationError):
        adapter.add_row_context([0, 2], [{"k": 0}, {"k": {1, 2}}])
    assert snapshot(space) == before


def test_per_row_one_dict_is_one_entry_per_row(target: Target) -> None:
    adapter = target.adapter(pd.DataFrame({"A": range(6)}))
    assert adapter.add_row_context(slice(1, 3), META, per_row=True) == 3
    assert sorted(k[1] for k in adapter.list_context_keys()) == [1, 2, 3]
    assert adapter.list_annotations() == []


# --------------------------------------------------------------------------- validation


def test_bad_input_stores_nothing(target: Target) -> None:
    df = pd.DataFrame({"A": range(6)}, index=list("abcdef"))
    adapter = target.adapter(df)
    adapter.add_row_context(["a"], {"keep": 1})
    space = target.space
    before = snapshot(space)
    bad: list[tuple[Any, Any, type[Exception]]] = [
        (np.ones(5, dtype=bool), META, ContextKeyError),  # wrong length
        (np.ones(7, dtype=bool), META, ContextKeyError),
        (np.array([1, 0, 1, 0, 1, 0]), META, LabelNotFoundError),  # not bool: labels, not in the index
        (["a", "q"], META, LabelNotFoundError),
        (["a"], ["not", "a", "dict"], ContextSerializationError),
        (["a"], "text", ContextSerializationError),
        (["a"], 42, ContextSerializationError),
        (["a"], {"s": {1, 2}}, ContextSerializationError),
        (["a"], {"x": float("nan")}, ContextSerializationError),
        (["a"], {1: "non-str key"}, ContextSerializationError),
        (pd.Series([True, None] * 3, index=df.index, dtype="boolean"), META, ContextKeyError),
    ]
    for rows, meta, exc in bad:
        with pytest.raises(exc):
            adapter.add_row_context(rows, meta)
        with pytest.raises(exc):
            adapter.annotate_rows(rows, meta) if isinstance(meta, dict) else adapter.add_row_context(
                rows, meta, per_row=True
            )
        assert snapshot(space) == before
    assert adapter.get_context(("row", "a")) == {"keep": 1}


def test_metadata_too_large(tmp_path: Any) -> None:
    store = SQLiteContextStore(tmp_path / "small.db", max_value_size=2_000)
    adapter = PandasContextAdapter(pd.DataFrame({"A": range(50_000)}), context_store=store)
    with pytest.raises(ContextValueTooLargeError):
        adapter.add_row_context(slice(None), {"x": "y" * 3_000})
    with pytest.raises(ContextValueTooLargeError):
        adapter.add_row_context(slice(None), {"x": "y" * 1_950})  # fits alone, not with its header
    assert store.count() == 0
    # a random mask is cut into many chunks, each within max_value_size
    mask = np.random.default_rng(2).random(50_000) < 0.5
    assert adapter.add_row_context(mask, META) == int(mask.sum())
    assert store.count() > 5
    assert max(len(json.dumps(v)) for _, v in store.items()) <= 2_000
    fresh = PandasContextAdapter(adapter.df, context_store=store)
    assert fresh.row_context_frame()["source"].notna().to_numpy().tolist() == mask.tolist()
    store.close()


def test_store_too_small_for_annotations() -> None:
    adapter = PandasContextAdapter(pd.DataFrame({"A": range(3)}), InMemoryContextStore(max_value_size=200))
    with pytest.raises(ContextValueError, match="per_row=True"):
        adapter.add_row_context([0, 1], {"x": 1})
    assert adapter.add_row_context([0, 1], {"x": 1}, per_row=True) == 2


@pytest.mark.parametrize("strict", [True, False])
def test_annotation_keys_are_reserved(target: Target, strict: bool) -> None:
    adapter = target.adapter(pd.DataFrame({"A": range(3)}), strict=strict)
    for key in [("annotation",), ("annotation", "x"), ("annotation", "x", "rows", "r", 0)]:
        with pytest.raises(ContextKeyError, match="reserved"):
            adapter.add_context(key, {"x": 1})
        with pytest.raises(ContextKeyError, match="reserved"):
            adapter.get_context(key)
        with pytest.raises(ContextKeyError, match="reserved"):
            adapter.add_context_many([(key, {"x": 1})])
    assert adapter.count_context() == 0


# --------------------------------------------------------------------------- removal and listing


def test_remove_annotation_and_clear(target: Target) -> None:
    adapter = target.adapter(pd.DataFrame({"A": range(100)}))
    a = adapter.annotate_rows(slice(0, 49), {"a": 1})
    b = adapter.annotate_rows(slice(50, None), {"b": 1})
    assert adapter.annotate_rows([], {"c": 1}) is None
    adapter.add_context(("row", 1), {"own": 1})
    assert [x["id"] for x in adapter.list_annotations()] == [a, b]
    assert adapter.remove_annotation(a) is True  # type: ignore[arg-type]
    assert adapter.remove_annotation(a) is False  # type: ignore[arg-type]
    assert adapter.get_context(("row", 0)) is None and adapter.get_context(("row", 1)) == {"own": 1}
    assert adapter.get_context(("row", 50)) == {"b": 1}
    assert not [k for k in target.space.list_keys(INDEX_KEY) if k[:2] == ("annotation", a)]
    with pytest.raises(ContextKeyError):
        adapter.annotation_mask(a)  # type: ignore[arg-type]
    # clearing row context clears the annotations too
    assert adapter.clear_context(("row",)) >= 3
    assert adapter.get_context(("row", 50)) is None
    assert adapter.list_annotations() == []
    assert adapter.list_context_keys() == []
    adapter.annotate_rows([1], {"c": 1})
    adapter.add_context(("column", "A"), {"unit": "m"})
    adapter.clear_context()
    assert adapter.count_context() == 0 and adapter.get_context(("row", 1)) is None


def test_listings_and_counts_hide_annotation_entries(target: Target) -> None:
    adapter = target.adapter(pd.DataFrame({"A": range(100)}))
    adapter.add_context(("row", 1), {"own": 1})
    adapter.add_context(("column", "A"), {"unit": "m"})
    ann = adapter.add_row_context(np.arange(100) % 3 == 0, META)
    assert ann == 34 and len(target.space.list_keys(INDEX_KEY)) >= 3  # stored: index, head, chunk
    mine = [("column", "A"), ("row", 1)]
    assert sorted(adapter.list_context_keys()) == mine
    assert adapter.list_context_keys(("row",)) == [("row", 1)]
    assert adapter.list_context_keys(INDEX_KEY) == []
    assert adapter.count_context() == 2
    assert adapter.count_context(("row",)) == 1
    assert adapter.count_context(INDEX_KEY) == 0
    assert sorted(adapter.iter_context()) == [(("column", "A"), {"unit": "m"}), (("row", 1), {"own": 1})]
    assert list(adapter.iter_context(INDEX_KEY)) == []
    [info] = adapter.list_annotations()  # annotations are listed by their own call
    assert info["rows"] == 34 and info["metadata"] == META
    # clear_context keeps its documented meaning: ("row",) takes the annotations too
    assert adapter.clear_context(("row",)) >= 4
    assert target.space.list_keys(INDEX_KEY) == [] and adapter.list_context_keys() == [("column", "A")]


def test_partitioned_adapters_hide_and_reserve_annotation_entries() -> None:
    dd = pytest.importorskip("dask.dataframe")
    from context_framework.adapters.dask_adapter import DaskContextAdapter

    store = InMemoryContextStore()
    df = pd.DataFrame({"A": range(10)})
    PandasContextAdapter(df, context_store=store).annotate_rows(slice(0, 4), META)
    adapter = DaskContextAdapter(dd.from_pandas(df, npartitions=2), store, strict=False)
    adapter.add_context(("row", 1), {"own": 1})
    assert adapter.list_context_keys() == [("row", 1)] and adapter.count_context() == 1
    assert list(adapter.iter_context()) == [(("row", 1), {"own": 1})]
    with pytest.raises(ContextKeyError, match="reserved"):
        adapter.add_context(("annotation", "x"), {"x": 1})


def test_remove_row_context_subtracts_from_annotations(target: Target) -> None:
    adapter = target.adapter(pd.DataFrame({"A": range(20)}))
    whole = adapter.annotate_rows(slice(None), {"all": 1})
    few = adapter.annotate_rows([3, 4], {"few": 1})
    adapter.add_context(("row", 3), {"own": 1})
    # without annotations=True only the rows' own entries go
    assert adapter.remove_row_context([3, 5]) == 1
    assert adapter.get_context(("row", 3)) == {"all": 1, "few": 1}
    assert adapter.remove_row_context([3, 4, 10], annotations=True) == 0
    for i in (3, 4, 10):
        assert adapter.get_context(("row", i)) is None
    assert adapter.get_context(("row", 11)) == {"all": 1}
    infos = adapter.list_annotations()
    assert [x["id"] for x in infos] == [whole]  # "few" lost every row: removed
    assert infos[0]["rows"] == 17
    assert few not in {k[1] for k in target.space.list_keys(INDEX_KEY) if len(k) > 1}
    other = target.adapter(adapter.df)  # what another adapter reads from the store
    assert other.get_row_context(slice(None)) == adapter.get_row_context(slice(None))
    assert len([k for k in target.space.list_keys(INDEX_KEY) if len(k) == 5]) == 1  # old chunks deleted


def test_remove_annotation_validates_the_id(local: Target) -> None:
    adapter = local.adapter(pd.DataFrame({"A": range(3)}))
    with pytest.raises(ContextKeyError):
        adapter.remove_annotation(3)  # type: ignore[arg-type]
    assert adapter.remove_annotation("01NOPE") is False


def test_index_tombstones_are_compacted(local: Target) -> None:
    adapter = local.adapter(pd.DataFrame({"A": range(3)}))
    keep = adapter.annotate_rows([0], {"keep": 1})
    for _ in range(300):
        adapter.remove_annotation(adapter.annotate_rows([1], {"x": 1}))  # type: ignore[arg-type]
    index = local.space.get(INDEX_KEY)
    assert keep in index and len(index) < 300
    assert [x["id"] for x in adapter.list_annotations()] == [keep]


# --------------------------------------------------------------------------- visibility


def test_visibility_rule(target: Target) -> None:
    df = pd.DataFrame({"A": range(10)})
    writer = target.adapter(df)
    reader = target.adapter(df)
    assert reader.get_context(("row", 1)) is None  # the reader loads the (empty) list now
    writer.annotate_rows(slice(0, 4), {"w": 1})
    assert writer.get_context(("row", 1)) == {"w": 1}  # an adapter sees its own writes at once
    assert reader.get_context(("row", 1)) is None  # single-key reads use the reader's snapshot
    assert reader.get_row_context([1]) == [{"w": 1}]  # bulk reads re-read the list
    assert reader.get_context(("row", 1)) == {"w": 1}
    ann = writer.list_annotations()[0]["id"]
    writer.remove_annotation(ann)
    assert reader.get_context(("row", 1)) == {"w": 1}
    reader.refresh_annotations()
    assert reader.get_context(("row", 1)) is None
    # an adapter made after the annotation sees it at its first read
    writer.annotate_rows([2], {"w": 2})
    assert target.adapter(df).get_context(("row", 2)) == {"w": 2}
    assert target.adapter(df).row_context_frame().loc[2, "w"] == 2


def test_uncovered_rows_skip_the_annotation_merge(local: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = local.adapter(pd.DataFrame({"A": range(100)}))
    adapter.annotate_rows(slice(10, 19), META)
    adapter.add_context(("row", 50), {"own": 1})
    merged: list[Any] = []
    covering = adapter._covering
    spy = lambda anns, label: merged.append(label) or covering(anns, label)  # noqa: E731
    monkeypatch.setattr(adapter, "_covering", spy)
    for _ in range(3):
        merged.clear()
        got = [adapter.get_context(("row", i)) for i in range(100)]
        assert got == [META if 10 <= i <= 19 else {"own": 1} if i == 50 else None for i in range(100)]
    assert merged == [*range(10, 20)]  # after the first reads, only covered rows take the merging path
    cover = adapter._cover
    adapter.refresh_annotations()  # nothing changed in the store: the coverage is kept
    assert cover is not None and adapter._cover is cover


def test_single_row_reads_agree_with_bulk_reads_across_coverage_blocks(local: Target) -> None:
    n = 3 * 4096 + 5
    df = pd.DataFrame({"A": np.arange(n)}, index=pd.RangeIndex(-100, n - 100))
    rng = np.random.default_rng(11)
    edge = np.zeros(n, dtype=bool)
    edge[4090:4100] = True  # across the first block boundary
    adapter = local.adapter(df)
    for i, mask in enumerate([rng.random(n) < 0.3, edge]):
        adapter.add_row_context(mask, {f"a{i}": i})
    adapter.add_context(("row", 3990), {"own": 1})
    expected = adapter.get_row_context(slice(None))  # the vectorised merge
    keys = [("row", label) for label in df.index]
    for _ in range(2):  # the second pass reads the blocks worked out in the first
        assert [adapter.get_context(k) for k in keys] == expected


def test_single_row_reads_follow_the_known_annotations(local: Target) -> None:
    df = pd.DataFrame({"A": range(50)})
    adapter, other = local.adapter(df), local.adapter(df)
    a = adapter.annotate_rows([1, 2], {"a": 1})
    assert [adapter.get_context(("row", i)) for i in (1, 3)] == [{"a": 1}, None]
    adapter.annotate_rows([3], {"b": 1})  # the adapter's own writes show at once
    assert adapter.get_context(("row", 3)) == {"b": 1} and adapter.has_context(("row", 3))
    adapter.remove_row_context([1], annotations=True)
    assert adapter.get_context(("row", 1)) is None and adapter.get_context(("row", 2)) == {"a": 1}
    assert adapter.remove_annotation(a) is True  # type: ignore[arg-type]
    assert adapter.get_context(("row", 2)) is None
    other.annotate_rows([10], {"c": 1})  # another adapter's: after a refresh (the visibility rule)
    assert adapter.get_context(("row", 10)) is None
    adapter.refresh_annotations()
    assert adapter.get_context(("row", 10)) == {"c": 1}
    shifted = df.copy()
    shifted.index = pd.RangeIndex(8, 58)  # a new index: annotations still follow the labels
    adapter.data = shifted
    assert [adapter.get_context(("row", i)) for i in (8, 10, 11)] == [None, {"c": 1}, None]
    stepped = df.copy()
    stepped.index = pd.RangeIndex(0, 100, 2)
    adapter.data = stepped
    assert [adapter.get_context(("row", i)) for i in (2, 10, 12)] == [None, {"c": 1}, None]
    adapter.clear_context(("row",))
    assert adapter.get_context(("row", 10)) is None


def test_one_store_read_loads_the_annotations(local: Target) -> None:
    df = pd.DataFrame({"A": range(10)})
    counting = Counting(local.space)
    adapter = PandasContextAdapter(df, context_store=counting)
    for i in range(10):
        adapter.get_context(("row", i))
    # the in-memory store is read through its entry point for validated keys
    reads = lambda: counting.calls.get("get", 0) + counting.calls.get("_get_normalized", 0)  # noqa: E731
    assert reads() == 11  # 10 rows + the annotation index, once
    adapter.annotate_rows([1, 2], {"x": 1})
    for i in range(10):
        adapter.get_context(("row", i))
    assert reads() == 21
    assert "get_many" not in counting.calls


def test_named_adapters_keep_annotations_apart(target: Target) -> None:
    df = pd.DataFrame({"A": range(5)})
    a = target.adapter(df)
    b = target.adapter(df, name=target.name + "_b")
    try:
        a.annotate_rows(slice(None), {"who": "a"})
        assert b.get_context(("row", 1)) is None and b.list_annotations() == []
        b.clear_context()
        assert a.get_context(("row", 1)) == {"who": "a"}
    finally:
        b.clear_context()


def test_buffered_and_cached_adapter(target: Target) -> None:
    df = pd.DataFrame({"A": range(100)})
    adapter = target.adapter(df, buffer=1000, cache=1000)
    adapter.add_row_context(slice(10, 19), META)
    adapter.add_row_context(slice(0, 4), {"k": 1}, per_row=True)
    assert adapter.get_context(("row", 12)) == META
    adapter.flush()
    other = target.adapter(df)
    assert other.get_row_context([0, 12, 50]) == [{"k": 1}, META, None]
    adapter.close()


# --------------------------------------------------------------------------- other processes

_CHILD = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    from context_framework.adapters.pandas_adapter import PandasContextAdapter, AnnotationIndexError
    url, name, index, probe = json.loads(sys.argv[1])
    df = pd.DataFrame({"A": range(len(index))}, index=index)
    adapter = PandasContextAdapter(df, context_store=url, name=name)
    try:
        out = {"rows": [adapter.get_context(("row", p)) for p in probe]}
        out["frame"] = int(adapter.row_context_frame()["v"].notna().sum())
    except AnnotationIndexError as exc:
        out = {"error": str(exc)}
    adapter.close()
    print(json.dumps(out))
    """
)


def _in_child(url: str, name: str, index: list[Any], probe: list[Any]) -> dict[str, Any]:
    args = json.dumps([url, name, index, probe])
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
def test_another_process_reads_annotations(kind: str, request: pytest.FixtureRequest, tmp_path: Any) -> None:
    store, url = _open(kind, request, tmp_path)
    assert url is not None
    name = f"cftest_{uuid.uuid4().hex[:12]}"
    try:
        ints = list(range(100, 400))
        labels = [f"r{i}" for i in range(300)]
        by_label = PandasContextAdapter(pd.DataFrame({"A": ints}, index=ints), context_store=store, name=name)
        by_label.annotate_rows(slice(150, 199), {"v": 1})
        by_label.add_context(("row", 150), {"own": 1})
        by_pos = PandasContextAdapter(
            pd.DataFrame({"A": ints}, index=labels), context_store=store, name=name + "_s"
        )
        by_pos.add_row_context(np.arange(300) % 3 == 0, {"v": 2})
        # label annotations follow labels: a frame with rows dropped and reordered still matches
        got = _in_child(url, name, ints[::-1][:250], [150, 199, 200, 260])
        assert got == {"rows": [{"v": 1, "own": 1}, {"v": 1}, None, None], "frame": 50}
        # positional annotations need the same index...
        got = _in_child(url, name + "_s", labels, ["r0", "r1", "r3"])
        assert got == {"rows": [{"v": 2}, None, {"v": 2}], "frame": 100}
        # ...and refuse a different one
        got = _in_child(url, name + "_s", [*labels, "extra"], ["r0"])
        assert "remove_annotation" in got["error"]
    finally:
        store.with_namespace(name).clear()
        store.with_namespace(name + "_s").clear()
        store.close()


def test_positional_annotation_refuses_a_changed_index(local: Target) -> None:
    df = pd.DataFrame({"A": range(4)}, index=list("abcd"))
    adapter = local.adapter(df)
    ann = adapter.annotate_rows(["b", "c"], META)
    adapter.add_context(("row", "a"), {"own": 1})
    df.loc["e"] = [4]  # rows appended in place: positions no longer certain
    with pytest.raises(AnnotationIndexError, match="remove_annotation") as info:
        adapter.get_context(("row", "a"))
    assert isinstance(info.value, ContextValueError)
    with pytest.raises(AnnotationIndexError):
        adapter.row_context_frame()
    assert adapter.remove_annotation(ann) is True  # type: ignore[arg-type]
    assert adapter.get_context(("row", "a")) == {"own": 1}


def test_label_annotation_follows_labels(local: Target) -> None:
    df = pd.DataFrame({"A": range(6)})
    adapter = local.adapter(df)
    adapter.annotate_rows([1, 3, 5], META)
    adapter.data = df.drop(index=[0, 1]).iloc[::-1]
    assert adapter.get_row_context(slice(None)) == [META, None, META, None]
    with pytest.raises(LabelNotFoundError):
        adapter.get_context(("row", 1))


# --------------------------------------------------------------------------- publish order


def test_half_written_annotations_are_invisible(local: Target) -> None:
    df = pd.DataFrame({"A": range(10)})
    adapter = local.adapter(df)
    ann = adapter.annotate_rows(slice(2, 5), META)
    space = local.space
    index = space.get(INDEX_KEY)
    # a writer that died after its chunks (and head) but before publishing: not visible
    space.delete(INDEX_KEY)
    assert local.adapter(df).get_context(("row", 3)) is None
    space.set(INDEX_KEY, index)
    assert local.adapter(df).get_context(("row", 3)) == META
    # a head whose chunks are gone (a rewrite raced a reader, then gave up): skipped, no crash
    chunk = next(k for k in space.list_keys() if len(k) == 5)
    space.delete(chunk)
    assert local.adapter(df).get_context(("row", 3)) is None
    assert local.adapter(df).list_annotations() == []
    assert ann is not None


def test_annotation_store_round_trip(local: Target) -> None:
    book = AnnotationStore(local.space)
    rows = row_sets.from_mask(np.random.default_rng(3).random(10_000) < 0.3)
    ann = book.write(book.prepare({"x": [1, 2]}), rows, "position", {"length": 10_000, "sample": "s"})
    [loaded] = book.load({})
    assert loaded.id == ann.id and loaded.rows == rows and loaded.metadata == {"x": [1, 2]}
    assert book.load({ann.id: loaded})[0] is loaded  # unchanged: reused, chunks not re-read


# --------------------------------------------------------------------------- ids and row sets


def test_ids_sort_by_creation_time() -> None:
    ids = [new_annotation_id() for _ in range(2_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)
    assert abs((id_time(ids[0]) - datetime.now(timezone.utc)).total_seconds()) < 60


def _check_row_set(s: row_sets.RowSet, values: np.ndarray) -> None:
    assert len(s) == len(values)
    assert np.array_equal(s.to_values(), values)
    for budget in (1, 7, 64, 1 << 18):
        assert row_sets.decode(s.encode(budget)) == s
    probe = np.unique(np.concatenate([values - 1, values, values + 1]))
    assert np.array_equal(s.contains(probe), np.isin(probe, values))
    if len(values) and int(values[-1]) - int(values[0]) < 100_000:
        lo = int(values[0]) - 2
        probe = np.arange(lo, int(values[-1]) + 3, dtype=np.int64)
        assert np.array_equal(s.contains(probe), np.isin(probe, values))
        assert [int(x) in s for x in probe[:300]] == np.isin(probe[:300], values).tolist()
        assert np.array_equal(np.flatnonzero(s.to_mask(len(probe), lo)) + lo, values)
        for start, n in [(lo - 9, 3), (lo + 1, 7), (lo + 5, 20), (lo + 12, 1), (int(values[-1]), 9), (lo, 0)]:
            assert np.array_equal(s.to_mask(n, start), np.isin(np.arange(start, start + n), values))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.booleans(), max_size=300),
    st.integers(-(10**6), 10**6),
    st.lists(st.integers(0, 310), max_size=40),
)
def test_row_sets_agree_with_numpy(bits: list[bool], offset: int, remove: list[int]) -> None:
    mask = np.array(bits, dtype=bool)
    values = np.flatnonzero(mask).astype(np.int64) + offset
    for s in (row_sets.from_mask(mask, offset), row_sets.from_sorted(values)):
        _check_row_set(s, values)
        gone = np.unique(np.array(remove, dtype=np.int64) + offset)
        left = s.difference(gone)
        _check_row_set(left, np.setdiff1d(values, gone))


def test_row_set_forms() -> None:
    assert row_sets.from_ranges([0], [10_000_000]).kind == "ranges"
    rng = np.random.default_rng(0)
    assert row_sets.from_mask(rng.random(100_000) < 0.5).kind == "bitmap"
    assert row_sets.from_mask(rng.random(100_000) < 0.001).kind == "values"
    stepped = row_sets.from_sorted(np.arange(0, 3_000_000, 3))
    assert sum(len(c["data"]) for c in stepped.encode(1 << 18)) < 10_000  # deltas compress
    extremes = np.array([-(2**63), -5, 2**63 - 1], dtype=np.int64)
    _check_row_set(row_sets.from_sorted(extremes), extremes)
    top = 2**63 - 1
    for form in (row_sets.from_sorted(extremes), row_sets.from_mask(np.ones(4, dtype=bool), top - 4)):
        assert form.to_mask(9, top - 3).tolist() == [i in form for i in range(top - 3, top + 1)] + [False] * 5
    with pytest.raises(ValueError):
        row_sets.decode([{"kind": "bitmap", "lo": 0, "n": 99, "w": 1, "z": 0, "data": "AA=="}])
    with pytest.raises(ValueError):
        row_sets.decode([{"kind": "nope"}])
    assert len(row_sets.decode([])) == 0 and not row_sets.empty()


def test_errors_share_the_root() -> None:
    assert issubclass(AnnotationIndexError, ContextError)


# --------------------------------------------------------------------------- scale


def test_point_read_benchmark_runs(tmp_path: Any) -> None:
    from context_framework.bench.annotations import format_gets, run_annotated_gets

    files = iter(range(100))
    entries = []
    for url, annotation in [("memory://", "rows10"), ("sqlite", "mask")]:
        if url == "sqlite":
            open_url = lambda: (f"sqlite:///{tmp_path / f'{next(files)}.db'}", lambda: None)  # noqa: E731
        else:
            open_url = lambda: ("memory://", lambda: None)  # noqa: E731
        result = run_annotated_gets(open_url, frame_rows=500, annotation=annotation, num_ops=200, repeat=1)
        assert result["num_ops"] == 200 and result["get_ratio"] > 0 and result["loop_ratio"] > 0
        assert result["with"]["gets_per_second"] > 0 and result["bare_get_ratio"] > 0
        entries.append({"label": url, "what": annotation, "num_ops": 200, "result": result})
    entries.append({"label": "x", "what": "y", "num_ops": 1, "error": "boom"})
    table = format_gets(entries)
    assert "Spec loop gets/s" in table and "failed" in table


def test_ten_million_rows_one_dict(local: Target) -> None:
    n = 10_000_000
    df = pd.DataFrame({"A": np.arange(n, dtype=np.int64)}, copy=False)
    rng = np.random.default_rng(7)
    mask = np.unpackbits(rng.integers(0, 256, n // 8, dtype=np.uint8)).view(bool)
    adapter = local.adapter(df)
    assert adapter.add_row_context(mask, META) == int(mask.sum())
    assert adapter.add_row_context(slice(2_000_000, 2_999_999), {"slice": True}) == 1_000_000
    assert adapter.count_context() == 0 and local.space.count() < 20  # a few stored entries in all
    fresh = local.adapter(df)  # reads the row sets back from the store
    probe = rng.integers(0, n, 2_000)
    got = fresh.get_context_many([("row", int(i)) for i in probe])
    for i, value in zip(probe.tolist(), got):
        expected = dict(META) if mask[i] else {}
        if 2_000_000 <= i <= 2_999_999:
            expected["slice"] = True
        assert value == (expected or None)
    assert [a["rows"] for a in fresh.list_annotations()] == [int(mask.sum()), 1_000_000]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_one_million_rows_per_row_metadata(kind: str, request: pytest.FixtureRequest, tmp_path: Any) -> None:
    store, _ = _open(kind, request, tmp_path)
    name = f"cftest_{uuid.uuid4().hex[:12]}"
    n = 1_000_000
    df = pd.DataFrame({"A": np.arange(n)})
    meta = pd.DataFrame({"i": np.arange(n), "src": "bulk"}, index=df.index)
    adapter = PandasContextAdapter(df, context_store=store, name=name)
    try:
        assert adapter.add_row_context(slice(None), meta) == n
        probe = np.random.default_rng(9).integers(0, n, 500).tolist()
        assert adapter.get_context_many([("row", i) for i in probe]) == [
            {"i": i, "src": "bulk"} for i in probe
        ]
        assert adapter.count_context() == n
    finally:
        adapter.clear_context()
        store.close()
