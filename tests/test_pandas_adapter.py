"""Tests of PandasContextAdapter (and BaseContextAdapter through it).

Every store-facing test runs against an InMemoryContextStore and, once
``context_framework.sqlite_store`` exists, against a SQLiteContextStore.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from context_framework import (
    ContextAwareDataStructure,
    ContextError,
    ContextKeyError,
    ContextSerializationError,
    ContextStoreClosedError,
    InMemoryContextStore,
    LabelNotFoundError,
    UnsupportedKeyError,
)
from context_framework.adapters import BaseContextAdapter, PandasContextAdapter
from context_framework.adapters.base_adapter import DATASET_KEY

# --------------------------------------------------------------------------- fixtures / helpers


def _sqlite_store_cls() -> Any:
    mod = pytest.importorskip("context_framework.sqlite_store", reason="sqlite_store is not written yet")
    return mod.SQLiteContextStore


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """Factory of fresh stores of the parametrised kind; closes them afterwards."""
    created: list[Any] = []

    def factory() -> Any:
        if request.param == "memory":
            store = InMemoryContextStore()
        else:
            store = _sqlite_store_cls()(tmp_path / f"ctx{len(created)}.db")
        created.append(store)
        return store

    yield factory
    for store in created:
        store.close()


@pytest.fixture
def store(make_store: Any) -> Any:
    return make_store()


@pytest.fixture
def df() -> pd.DataFrame:
    return pd.DataFrame({"A": range(5), "B": list("abcde")})


@pytest.fixture
def adapter(df: pd.DataFrame, store: Any) -> PandasContextAdapter:
    return PandasContextAdapter(df, context_store=store)


def snapshot(store: Any) -> list[tuple[str, Any]]:
    """Everything in ``store``'s namespace, with key types visible (1 vs 1.0 vs True)."""
    return sorted(((repr(k), v) for k, v in store.items()), key=lambda kv: kv[0])


@contextmanager
def unchanged(store: Any) -> Iterator[None]:
    """Assert that ``store`` holds exactly the same entries after the block."""
    before = snapshot(store)
    count = store.count()
    yield
    assert store.count() == count
    assert snapshot(store) == before


def key_types(keys: list[Any]) -> set[tuple[Any, ...]]:
    """Keys with the type of every part, so that ("row", 1) != ("row", 1.0)."""
    return {tuple((type(p), p) for p in k) if type(k) is tuple else (type(k), k) for k in keys}


class CountingStore:
    """Wraps any store and counts calls of its public methods (the batch paths above all)."""

    COUNTED = ("set", "get", "delete", "set_many", "get_many", "delete_many")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name in self.COUNTED:

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls[name] += 1
                return attr(*args, **kwargs)

            return counted
        return attr


# --------------------------------------------------------------------------- the spec's script


def test_spec_script_thousand_rows(store: Any) -> None:
    df = pd.DataFrame({"A": range(1000), "B": np.random.default_rng(0).random(1000)})
    adapter = PandasContextAdapter(df, context_store=store)
    for i in range(1000):
        adapter.add_context(("row", i), {"meta": f"value_{i}"})
    for i in range(1000):
        assert adapter.get_context(("row", i)) == {"meta": f"value_{i}"}
    assert adapter.count_context() == 1000
    assert key_types(adapter.list_context_keys()) == key_types([("row", i) for i in range(1000)])


def test_default_store_is_in_memory(df: pd.DataFrame) -> None:
    adapter = PandasContextAdapter(df)
    assert isinstance(adapter.context_store, InMemoryContextStore)
    adapter.add_context(("column", "A"), {"unit": "m"})
    assert adapter.get_context(("column", "A")) == {"unit": "m"}
    # each adapter without a store gets its own
    assert PandasContextAdapter(df).get_context(("column", "A")) is None


def test_url_string_store(df: pd.DataFrame) -> None:
    adapter = PandasContextAdapter(df, context_store="memory://")
    assert isinstance(adapter.context_store, InMemoryContextStore)
    adapter.add_context(("row", 2), {"x": 1})
    assert adapter.get_context(("row", 2)) == {"x": 1}


def test_sqlite_url_string_store(df: pd.DataFrame, tmp_path: Any) -> None:
    cls = _sqlite_store_cls()
    path = tmp_path / "url.db"
    adapter = PandasContextAdapter(df, context_store=f"sqlite:///{path}")
    try:
        assert isinstance(adapter.context_store, cls)
        adapter.add_context(("row", 2), {"x": 1})
        assert adapter.get_context(("row", 2)) == {"x": 1}
    finally:
        adapter.context_store.close()


def test_df_property_repr_and_protocol(adapter: PandasContextAdapter, df: pd.DataFrame) -> None:
    assert adapter.df is df
    assert adapter.data is df
    assert isinstance(adapter, ContextAwareDataStructure)
    assert isinstance(adapter, BaseContextAdapter)
    assert "PandasContextAdapter(DataFrame" in repr(adapter)
    named = PandasContextAdapter(df, name="ds1")
    assert "name='ds1'" in repr(named)


@pytest.mark.parametrize("data", [pd.Series([1, 2]), [[1, 2]], {"A": [1]}, np.zeros((2, 2)), None])
def test_non_dataframe_raises_type_error(data: Any) -> None:
    with pytest.raises(TypeError, match="DataFrame"):
        PandasContextAdapter(data)


@pytest.mark.parametrize("bad_store", [{}, 42, object()])
def test_non_store_raises_type_error(df: pd.DataFrame, bad_store: Any) -> None:
    with pytest.raises(TypeError, match="store"):
        PandasContextAdapter(df, context_store=bad_store)


# --------------------------------------------------------------------------- key conventions


def test_all_key_kinds_round_trip(adapter: PandasContextAdapter) -> None:
    keys = [DATASET_KEY, ("column", "A"), ("column", "B"), ("row", 0), ("row", 4), ("row", 3, "column", "B")]
    for i, key in enumerate(keys):
        adapter.add_context(key, {"i": i})
    for i, key in enumerate(keys):
        assert adapter.get_context(key) == {"i": i}
        assert adapter.has_context(key)
    assert key_types(adapter.list_context_keys()) == key_types(keys)
    assert key_types(adapter.list_context_keys(("row",))) == key_types(
        [("row", 0), ("row", 4), ("row", 3, "column", "B")]
    )
    assert adapter.count_context(("column",)) == 2
    assert dict(adapter.iter_context(("column",))) == {("column", "A"): {"i": 1}, ("column", "B"): {"i": 2}}


def test_add_replaces_and_get_default(adapter: PandasContextAdapter) -> None:
    adapter.add_context(("row", 1), {"a": 1, "b": 2})
    adapter.add_context(("row", 1), {"c": 3})
    assert adapter.get_context(("row", 1)) == {"c": 3}
    sentinel = {"missing": True}
    assert adapter.get_context(("row", 2)) is None
    assert adapter.get_context(("row", 2), sentinel) is sentinel
    assert adapter.get_context(("column", "A"), default=0) == 0


def test_remove_and_has_context(adapter: PandasContextAdapter) -> None:
    adapter.add_context(("row", 1), {"a": 1})
    adapter.add_context(("column", "B"), {"a": 2})
    assert adapter.has_context(("row", 1))
    assert not adapter.has_context(("row", 2))
    assert adapter.remove_context(("row", 1)) is True
    assert adapter.remove_context(("row", 1)) is False
    assert adapter.remove_context(("row", 2)) is False
    assert not adapter.has_context(("row", 1))
    assert adapter.get_context(("row", 1)) is None
    assert adapter.list_context_keys() == [("column", "B")]


def test_update_and_increment(adapter: PandasContextAdapter) -> None:
    assert adapter.update_context(("row", 0), {"a": 1}) == {"a": 1}
    assert adapter.update_context(("row", 0), {"b": 2}) == {"a": 1, "b": 2}
    assert adapter.update_context(("row", 0), {"a": 5}) == {"a": 5, "b": 2}
    assert adapter.get_context(("row", 0)) == {"a": 5, "b": 2}
    assert adapter.increment_context(("column", "A"), "hits") == 1
    assert adapter.increment_context(("column", "A"), "hits", 4) == 5
    assert adapter.increment_context(("column", "A"), "score", 0.5) == 0.5
    assert adapter.get_context(("column", "A")) == {"hits": 5, "score": 0.5}
    with unchanged(adapter.context_store), pytest.raises(LabelNotFoundError):
        adapter.update_context(("row", 99), {"a": 1})
    with unchanged(adapter.context_store), pytest.raises(LabelNotFoundError):
        adapter.increment_context(("column", "Z"), "hits")


def test_dataset_context(adapter: PandasContextAdapter) -> None:
    assert adapter.get_dataset_context() is None
    assert adapter.get_dataset_context({}) == {}
    adapter.add_dataset_context({"source": "sensor 7", "rows": 5})
    assert adapter.get_dataset_context() == {"source": "sensor 7", "rows": 5}
    assert adapter.get_context(("dataset",)) == {"source": "sensor 7", "rows": 5}
    adapter.add_context(("dataset",), {"v": 2})
    assert adapter.get_dataset_context() == {"v": 2}
    assert adapter.list_context_keys() == [("dataset",)]


def test_column_helpers(adapter: PandasContextAdapter) -> None:
    adapter.add_column_context("A", {"unit": "m"})
    assert adapter.get_column_context("A") == {"unit": "m"}
    assert adapter.get_context(("column", "A")) == {"unit": "m"}
    assert adapter.get_column_context("B", "none") == "none"
    with pytest.raises(LabelNotFoundError):
        adapter.add_column_context("Z", {})


def test_clear_context(adapter: PandasContextAdapter) -> None:
    adapter.add_context(("row", 0), {"a": 1})
    adapter.add_context(("row", 1), {"a": 1})
    adapter.add_context(("column", "A"), {"a": 1})
    assert adapter.clear_context(("row",)) == 2
    assert adapter.list_context_keys() == [("column", "A")]
    assert adapter.clear_context() == 1
    assert adapter.count_context() == 0


# --------------------------------------------------------------------------- validation


BAD_KEYS = [
    # (key, exception, regex the message must match)
    (("column", "Z"), LabelNotFoundError, r"'Z'.*not in the DataFrame's columns.*'A', 'B'"),
    (("row", 5), LabelNotFoundError, r"row 5 .*not in the DataFrame's index"),
    (("row", -1), LabelNotFoundError, r"row -1 .*not in the DataFrame's index"),
    (("row", "a"), LabelNotFoundError, r"row 'a' .*not in the DataFrame's index"),
    (("row", 1, "column", "Z"), LabelNotFoundError, r"'Z'.*not in the DataFrame's columns"),
    (("row", 9, "column", "A"), LabelNotFoundError, r"row 9 .*not in the DataFrame's index"),
    (("row",), ContextKeyError, r"a row key is \('row', label\).*got \('row',\)"),
    (("row", 1, "col", "A"), ContextKeyError, r"cell key is \('row', label, 'column', name\)"),
    (("row", 1, "column"), ContextKeyError, r"a row key is \('row', label\)"),
    (("column", "A", "x"), ContextKeyError, r"a column key is \('column', name\).*'x'"),
    (("column",), ContextKeyError, r"a column key is \('column', name\)"),
    (("dataset", "x"), ContextKeyError, r"the whole-frame key is \('dataset',\)"),
    (("colum", "A"), ContextKeyError, r"unknown context key \('colum', 'A'\).*strict=False"),
    ((), ContextKeyError, r"unknown context key \(\)"),
    ("A", ContextKeyError, r"unknown context key 'A'"),
    (3, ContextKeyError, r"unknown context key 3"),
    (["row", 1], ContextKeyError, r"use a tuple, \('row', 1\), instead of \['row', 1\]"),
    (("row", [1]), UnsupportedKeyError, r"use a tuple"),
]


@pytest.mark.parametrize(("key", "exc", "pattern"), BAD_KEYS, ids=[repr(k[0]) for k in BAD_KEYS])
def test_bad_keys_rejected_on_add_and_get(
    adapter: PandasContextAdapter, key: Any, exc: type[Exception], pattern: str
) -> None:
    store = adapter.context_store
    adapter.add_context(("row", 1), {"keep": 1})
    adapter.add_context(("column", "A"), {"keep": 2})
    for op in (
        lambda: adapter.add_context(key, {"x": 1}),
        lambda: adapter.get_context(key),
        lambda: adapter.has_context(key),
        lambda: adapter.remove_context(key),
        lambda: adapter.update_context(key, {"x": 1}),
        lambda: adapter.increment_context(key, "n"),
        lambda: adapter.add_context_many([(key, {"x": 1})]),
        lambda: adapter.get_context_many([key]),
        lambda: adapter.remove_context_many([key]),
    ):
        with unchanged(store), pytest.raises(exc, match=pattern) as info:
            op()
        assert isinstance(info.value, ContextKeyError)
        assert isinstance(info.value, KeyError)
        assert isinstance(info.value, ContextError)
    assert adapter.get_context(("row", 1)) == {"keep": 1}
    assert adapter.get_context(("column", "A")) == {"keep": 2}


def test_not_found_message_says_what_to_do(adapter: PandasContextAdapter) -> None:
    with pytest.raises(LabelNotFoundError) as info:
        adapter.add_context(("row", 7), {})
    msg = str(info.value)
    assert "7" in msg and "0, 1, 2, 3, 4" in msg and "5 in all" in msg
    assert "use" in msg  # tells the user what to do
    # str() is the plain message, not KeyError's repr of it
    assert not msg.startswith('"') and not msg.startswith("'")


def test_not_found_message_truncates_long_index() -> None:
    adapter = PandasContextAdapter(pd.DataFrame({"A": range(100)}))
    with pytest.raises(LabelNotFoundError, match=r"\[0, 1, 2, 3, 4, \.\.\.\], 100 in all"):
        adapter.get_context(("row", 100))


def test_non_strict_lets_free_form_keys_through(df: pd.DataFrame, store: Any) -> None:
    adapter = PandasContextAdapter(df, context_store=store, strict=False)
    free = [("colum", "A"), "note", ("pipeline", "step", 3), 42, ()]
    for i, key in enumerate(free):
        adapter.add_context(key, {"i": i})
    for i, key in enumerate(free):
        assert adapter.get_context(key) == {"i": i}
    assert key_types(adapter.list_context_keys()) == key_types(free)
    # the documented key kinds are still validated
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_context(("row", 99), {})
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_context(("column", "Z"), {})
    with unchanged(store), pytest.raises(ContextKeyError):
        adapter.add_context(("row",), {})
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_context(("row", 1.0), {})


def test_non_strict_cannot_smuggle_documented_kinds(df: pd.DataFrame, store: Any) -> None:
    """A key that only *normalises* to ('row', ...) is validated like one."""
    from collections import namedtuple

    adapter = PandasContextAdapter(df, context_store=store, strict=False)
    RowKey = namedtuple("RowKey", "kind label")
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_context(RowKey("row", 99), {})
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_context((np.str_("row"), 99), {})
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_context((np.str_("column"), "Z"), {})
    adapter.add_context(RowKey("row", 2), {"ok": 1})
    assert adapter.get_context(("row", 2)) == {"ok": 1}
    assert key_types(adapter.list_context_keys()) == key_types([("row", 2)])


def test_strict_rejects_key_subclasses_and_numpy_kind(adapter: PandasContextAdapter) -> None:
    from collections import namedtuple

    RowKey = namedtuple("RowKey", "kind label")
    adapter.add_context(RowKey("row", 2), {"ok": 1})
    assert adapter.get_context(("row", 2)) == {"ok": 1}
    adapter.add_context((np.str_("column"), "A"), {"ok": 2})
    assert adapter.get_context(("column", "A")) == {"ok": 2}
    assert key_types(adapter.list_context_keys()) == key_types([("row", 2), ("column", "A")])


# --------------------------------------------------------------------------- type exactness


def test_range_index_refuses_float_and_bool_with_hint(adapter: PandasContextAdapter) -> None:
    store = adapter.context_store
    adapter.add_context(("row", 1), {"int": True})
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"1\.0.*use 1\b"):
        adapter.add_context(("row", 1.0), {"x": 1})
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"1\.0.*use 1\b"):
        adapter.get_context(("row", 1.0))
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"True.*use 1\b"):
        adapter.add_context(("row", True), {"x": 1})
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"False.*use 0\b"):
        adapter.get_context(("row", False))
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"1\.5"):
        adapter.add_context(("row", 1.5), {"x": 1})
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"'1'"):
        adapter.add_context(("row", "1"), {"x": 1})
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"2\.0.*use 2\b"):
        adapter.add_context(("row", np.float64(2.0), "column", "A"), {"x": 1})
    assert adapter.get_context(("row", 1)) == {"int": True}


@pytest.mark.parametrize("label", [np.int64(3), np.int32(3), np.uint8(3), np.intp(3)])
def test_numpy_int_is_normalised(adapter: PandasContextAdapter, label: Any) -> None:
    adapter.add_context(("row", label), {"np": 1})
    keys = adapter.list_context_keys()
    assert keys == [("row", 3)] and type(keys[0][1]) is int
    assert adapter.get_context(("row", 3)) == {"np": 1}
    assert adapter.get_context(("row", label)) == {"np": 1}
    adapter.add_context(("row", label, "column", np.str_("A")), {"cell": 1})
    assert key_types(adapter.list_context_keys(("row", 3, "column"))) == key_types(
        [("row", 3, "column", "A")]
    )


def test_numpy_bool_refused_on_int_index(adapter: PandasContextAdapter) -> None:
    with unchanged(adapter.context_store), pytest.raises(LabelNotFoundError):
        adapter.add_context(("row", np.True_), {})


def test_string_index(store: Any) -> None:
    df = pd.DataFrame({"A": [1, 2, 3]}, index=["a", "b", "c"])
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", "a"), {"x": 1})
    adapter.add_context(("row", np.str_("b")), {"x": 2})
    assert adapter.get_context(("row", "a")) == {"x": 1}
    assert adapter.get_context(("row", "b")) == {"x": 2}
    assert key_types(adapter.list_context_keys()) == key_types([("row", "a"), ("row", "b")])
    for bad in (1, 0, "z", "A"):
        with unchanged(store), pytest.raises(LabelNotFoundError, match=repr(bad)):
            adapter.add_context(("row", bad), {})
        with unchanged(store), pytest.raises(LabelNotFoundError):
            adapter.get_context(("row", bad))


def test_string_dtype_index(store: Any) -> None:
    df = pd.DataFrame({"A": [1, 2]}, index=pd.Index(["a", "b"], dtype="string"))
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", "b"), {"x": 1})
    assert adapter.list_context_keys() == [("row", "b")]
    assert adapter.row_context_frame()["x"].tolist()[1] == 1


def test_non_range_int_index(store: Any) -> None:
    df = pd.DataFrame({"A": [1, 2, 3]}, index=[10, 20, 30])
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", 20), {"x": 1})
    adapter.add_context(("row", np.int64(30)), {"x": 2})
    assert adapter.get_context(("row", 20)) == {"x": 1}
    keys = adapter.list_context_keys()
    assert key_types(keys) == key_types([("row", 20), ("row", 30)])
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"1\b.*not in"):
        adapter.add_context(("row", 1), {})  # a position, not a label
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"20\.0.*use 20\b"):
        adapter.add_context(("row", 20.0), {})
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.get_context(("row", True))


def test_uint_index(store: Any) -> None:
    df = pd.DataFrame({"A": [1, 2]}, index=pd.Index([5, 7], dtype="uint64"))
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", 7), {"x": 1})
    assert key_types(adapter.list_context_keys()) == key_types([("row", 7)])
    assert adapter.row_context_frame()["x"].tolist()[1] == 1


def test_datetime_index(store: Any) -> None:
    idx = pd.date_range("2024-01-01", periods=3, freq="D")
    df = pd.DataFrame({"A": [1, 2, 3]}, index=idx)
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", pd.Timestamp("2024-01-02")), {"x": 1})
    keys = adapter.list_context_keys()
    assert keys == [("row", datetime(2024, 1, 2))]
    assert type(keys[0][1]) is datetime
    assert adapter.get_context(("row", datetime(2024, 1, 2))) == {"x": 1}
    assert adapter.get_context(("row", np.datetime64("2024-01-02"))) == {"x": 1}
    assert adapter.get_context(("row", idx[1])) == {"x": 1}
    with unchanged(store), pytest.raises(LabelNotFoundError, match="2024-01-05"):
        adapter.add_context(("row", pd.Timestamp("2024-01-05")), {})
    # pandas accepts a date string; the adapter refuses it and names the exact label
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"'2024-01-02'.*datetime"):
        adapter.add_context(("row", "2024-01-02"), {})
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_context(("row", 0), {})
    frame = adapter.row_context_frame()
    assert frame.index.equals(idx)
    assert frame["x"].isna().tolist() == [True, False, True]


def test_tz_aware_datetime_index_canonicalises_instant(store: Any) -> None:
    idx = pd.date_range("2024-03-30", periods=3, freq="D", tz="Europe/Paris")  # spans DST
    df = pd.DataFrame({"A": [1, 2, 3]}, index=idx)
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", idx[2]), {"x": 1})
    # the same instant written in UTC names the same row, and the same stored key
    same_instant = idx[2].tz_convert("UTC")
    adapter.add_context(("row", same_instant), {"x": 2})
    assert adapter.count_context() == 1
    assert adapter.get_context(("row", idx[2])) == {"x": 2}
    (key,) = adapter.list_context_keys()
    assert key[1].utcoffset() == timedelta(hours=2)
    adapter.add_context(("row", idx[0]), {"x": 0})
    frame = adapter.row_context_frame()
    assert frame.index.equals(idx)
    assert frame["x"].tolist()[0] == 0 and frame["x"].tolist()[2] == 2
    assert math.isnan(frame["x"].tolist()[1])


def test_naive_label_refused_on_tz_aware_index(store: Any) -> None:
    idx = pd.date_range("2024-01-01", periods=2, freq="D", tz="UTC")
    adapter = PandasContextAdapter(pd.DataFrame({"A": [1, 2]}, index=idx), context_store=store)
    with unchanged(store), pytest.raises(ContextKeyError):
        adapter.add_context(("row", datetime(2024, 1, 1)), {})
    adapter.add_context(("row", datetime(2024, 1, 1, tzinfo=timezone.utc)), {"ok": 1})
    assert adapter.get_context(("row", idx[0])) == {"ok": 1}


def test_float_index(store: Any) -> None:
    df = pd.DataFrame({"A": [1, 2, 3]}, index=[0.5, 1.0, 2.5])
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", 0.5), {"x": 1})
    adapter.add_context(("row", np.float64(2.5)), {"x": 2})
    assert adapter.get_context(("row", 0.5)) == {"x": 1}
    assert key_types(adapter.list_context_keys()) == key_types([("row", 0.5), ("row", 2.5)])
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"use 1\.0"):
        adapter.add_context(("row", 1), {})
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"0\.75"):
        adapter.add_context(("row", 0.75), {})
    frame = adapter.row_context_frame()
    assert frame["x"].tolist()[0] == 1 and frame["x"].tolist()[2] == 2


def test_float_index_negative_zero_is_one_key(store: Any) -> None:
    df = pd.DataFrame({"A": [1, 2]}, index=[0.0, 1.0])
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", 0.0), {"x": 1})
    adapter.add_context(("row", -0.0), {"x": 2})
    assert adapter.count_context() == 1
    assert adapter.get_context(("row", 0.0)) == {"x": 2}
    assert adapter.row_context_frame()["x"].tolist()[0] == 2


def test_int_column_names(store: Any) -> None:
    df = pd.DataFrame(np.zeros((2, 3)))  # columns RangeIndex(3)
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("column", 1), {"c": 1})
    adapter.add_context(("column", np.int64(2)), {"c": 2})
    assert key_types(adapter.list_context_keys()) == key_types([("column", 1), ("column", 2)])
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"use 1\b"):
        adapter.add_context(("column", 1.0), {})
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"'1'"):
        adapter.add_context(("column", "1"), {})
    frame = adapter.column_context_frame()
    assert frame.index.equals(df.columns)
    assert frame["c"].isna().tolist() == [True, False, False]


def test_duplicate_column_names(store: Any) -> None:
    df = pd.DataFrame([[1, 2, 3]], columns=["A", "B", "A"])
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("column", "A"), {"dup": True})
    assert adapter.get_context(("column", "A")) == {"dup": True}
    frame = adapter.column_context_frame()
    assert list(frame.index) == ["A", "B", "A"]
    assert frame["dup"].tolist()[0] is True and frame["dup"].tolist()[2] is True


# --------------------------------------------------------------------------- cache invalidation


def test_fast_path_forgets_old_range_index_after_reassignment(store: Any) -> None:
    df = pd.DataFrame({"A": range(5)})
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", 1), {"old": 1})  # primes the RangeIndex cache
    assert adapter.get_context(("row", 1)) == {"old": 1}
    df.index = ["a", "b", "c", "d", "e"]
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_context(("row", 2), {"x": 1})
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.get_context(("row", 1))
    adapter.add_context(("row", "c"), {"new": 1})
    assert adapter.get_context(("row", "c")) == {"new": 1}


def test_fast_path_follows_new_range_index(store: Any) -> None:
    df = pd.DataFrame({"A": range(5)})
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", 0), {"x": 0})
    df.index = pd.RangeIndex(10, 15)
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_context(("row", 0), {})
    adapter.add_context(("row", 14), {"x": 14})
    assert adapter.get_context(("row", 14)) == {"x": 14}
    df.index = pd.RangeIndex(0, 10, 2)
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_context(("row", 3), {})
    adapter.add_context(("row", 8), {"x": 8})
    assert adapter.get_context(("row", 8)) == {"x": 8}


def test_fast_path_after_rows_dropped_in_place(store: Any) -> None:
    df = pd.DataFrame({"A": range(5)})
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", 4), {"x": 4})
    df.drop(index=[3, 4], inplace=True)
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_context(("row", 4), {})
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.get_context(("row", 3))
    df.reset_index(drop=True, inplace=True)
    adapter.add_context(("row", 2), {"x": 2})
    with pytest.raises(LabelNotFoundError):
        adapter.get_context(("row", 3))


def test_column_added_in_place_is_accepted(store: Any) -> None:
    df = pd.DataFrame({"A": range(3)})
    adapter = PandasContextAdapter(df, context_store=store)
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_context(("column", "C"), {})
    df["C"] = 1
    adapter.add_context(("column", "C"), {"new": True})
    adapter.add_context(("row", 1, "column", "C"), {"cell": True})
    assert adapter.get_context(("column", "C")) == {"new": True}
    del df["A"]
    with pytest.raises(LabelNotFoundError):
        adapter.get_context(("column", "A"))


def test_rows_appended_in_place_are_accepted(store: Any) -> None:
    df = pd.DataFrame({"A": range(3)})
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", 2), {})
    with pytest.raises(LabelNotFoundError):
        adapter.add_context(("row", 3), {})
    df.loc[3] = [99]
    adapter.add_context(("row", 3), {"appended": True})
    assert adapter.get_context(("row", 3)) == {"appended": True}


# --------------------------------------------------------------------------- duplicates / MultiIndex


def test_duplicate_index_labels_share_context(store: Any) -> None:
    df = pd.DataFrame({"A": [1, 2, 3, 4]}, index=["x", "y", "x", "z"])
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", "x"), {"tag": "dup"})
    adapter.add_context(("row", "z"), {"tag": "last"})
    assert adapter.get_context(("row", "x")) == {"tag": "dup"}
    assert adapter.count_context() == 2  # one entry for both "x" rows
    frame = adapter.row_context_frame()
    assert frame.index.equals(df.index)
    assert frame["tag"].tolist()[0] == "dup" and frame["tag"].tolist()[2] == "dup"
    assert frame["tag"].tolist()[3] == "last"
    assert pd.isna(frame["tag"].tolist()[1])


def test_duplicate_int_labels_unsorted(store: Any) -> None:
    df = pd.DataFrame({"A": [1, 2, 3, 4]}, index=[3, 1, 3, 2])
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", 3), {"t": 3})
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"use 3\b"):
        adapter.add_context(("row", 3.0), {})
    assert adapter.get_context(("row", 3)) == {"t": 3}
    assert adapter.row_context_frame()["t"].tolist()[::2] == [3, 3]


@pytest.fixture
def mi_df() -> pd.DataFrame:
    index = pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1), ("b", 2)], names=["letter", "number"])
    return pd.DataFrame({"A": range(4)}, index=index)


def test_multiindex_rows(mi_df: pd.DataFrame, store: Any) -> None:
    adapter = PandasContextAdapter(mi_df, context_store=store)
    adapter.add_context(("row", ("a", 1)), {"x": 1})
    adapter.add_context(("row", ("b", np.int64(2))), {"x": 4})
    adapter.add_context(("row", ("a", 2), "column", "A"), {"cell": True})
    assert adapter.get_context(("row", ("a", 1))) == {"x": 1}
    assert adapter.get_context(("row", ("b", 2))) == {"x": 4}
    assert key_types(adapter.list_context_keys()) == key_types(
        [("row", ("a", 1)), ("row", ("b", 2)), ("row", ("a", 2), "column", "A")]
    )
    for partial in ("a", ("a",), ("a", 1, "x")):
        with unchanged(store), pytest.raises(LabelNotFoundError, match=r"full 2-level tuple"):
            adapter.add_context(("row", partial), {})
        with unchanged(store), pytest.raises(LabelNotFoundError, match=r"full 2-level tuple"):
            adapter.get_context(("row", partial))
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"'c'"):
        adapter.add_context(("row", ("c", 1)), {})
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"use \('a', 1\)"):
        adapter.add_context(("row", ("a", 1.0)), {})
    with unchanged(store), pytest.raises(UnsupportedKeyError, match="use a tuple"):
        adapter.add_context(("row", ["a", 1]), {})


def test_multiindex_row_context_frame(mi_df: pd.DataFrame, store: Any) -> None:
    adapter = PandasContextAdapter(mi_df, context_store=store)
    empty = adapter.row_context_frame()
    assert empty.index.equals(mi_df.index) and list(empty.index.names) == ["letter", "number"]
    assert empty.shape == (4, 0)
    adapter.add_context(("row", ("b", 1)), {"x": 3})
    adapter.add_context(("row", ("a", 1)), {"x": 1, "y": "one"})
    frame = adapter.row_context_frame()
    assert frame.index.equals(mi_df.index)
    assert list(frame.index.names) == ["letter", "number"]
    assert sorted(frame.columns) == ["x", "y"]
    assert frame.loc[("a", 1), "x"] == 1 and frame.loc[("b", 1), "x"] == 3
    assert frame.loc[("a", 1), "y"] == "one"
    assert frame["x"].isna().tolist() == [False, True, False, True]


def test_multiindex_columns(store: Any) -> None:
    columns = pd.MultiIndex.from_tuples([("m", "x"), ("m", "y"), ("n", "x")])
    df = pd.DataFrame(np.zeros((2, 3)), columns=columns)
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("column", ("m", "y")), {"unit": "s"})
    assert adapter.get_context(("column", ("m", "y"))) == {"unit": "s"}
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_context(("column", ("z", "y")), {})
    frame = adapter.column_context_frame()
    assert frame.index.equals(columns)
    assert frame["unit"].isna().tolist() == [True, False, True]


# --------------------------------------------------------------------------- bulk


def test_add_context_many_mapping_uses_batch_path(df: pd.DataFrame, store: Any) -> None:
    counting = CountingStore(store)
    adapter = PandasContextAdapter(df, context_store=counting)
    items = {("row", i): {"i": i} for i in range(5)}
    items[("column", "A")] = {"col": "A"}
    items[("row", 1, "column", "B")] = {"cell": 1}
    adapter.add_context_many(items)
    assert counting.calls["set_many"] == 1
    assert counting.calls["set"] == 0
    for key, value in items.items():
        assert adapter.get_context(key) == value


def test_add_context_many_pairs_and_normalisation(df: pd.DataFrame, store: Any) -> None:
    counting = CountingStore(store)
    adapter = PandasContextAdapter(df, context_store=counting)
    adapter.add_context_many([(("row", np.int64(i)), {"i": i}) for i in range(3)])
    assert counting.calls["set_many"] == 1 and counting.calls["set"] == 0
    assert key_types(adapter.list_context_keys()) == key_types([("row", i) for i in range(3)])
    adapter.add_context_many((("column", c), {"c": c}) for c in ["A", "B"])  # a generator
    assert adapter.get_context(("column", "B")) == {"c": "B"}


@pytest.mark.parametrize(
    ("bad", "exc"),
    [
        (("row", 99), LabelNotFoundError),
        (("column", "Z"), LabelNotFoundError),
        (("row", 1.0), LabelNotFoundError),
        (("colum", "A"), ContextKeyError),
    ],
)
def test_add_context_many_validates_all_keys_first(
    df: pd.DataFrame, store: Any, bad: Any, exc: type[Exception]
) -> None:
    counting = CountingStore(store)
    adapter = PandasContextAdapter(df, context_store=counting)
    adapter.add_context(("row", 0), {"keep": True})
    pairs = [(("row", 1), {"a": 1}), (("row", 2), {"a": 2}), (bad, {"a": 3}), (("row", 3), {})]
    with unchanged(store), pytest.raises(exc):
        adapter.add_context_many(pairs)
    assert counting.calls["set_many"] == 0
    assert adapter.get_context(("row", 0)) == {"keep": True}


def test_add_context_many_bad_metadata_stores_nothing(adapter: PandasContextAdapter) -> None:
    pairs = [(("row", 1), {"a": 1}), (("row", 2), {"bad": {1, 2}})]
    with unchanged(adapter.context_store), pytest.raises(ContextSerializationError):
        adapter.add_context_many(pairs)
    with unchanged(adapter.context_store), pytest.raises(ContextSerializationError):
        adapter.add_context_many([(("row", 1), {"a": 1}), ("not a pair",)])  # type: ignore[list-item]


def test_get_and_remove_context_many(df: pd.DataFrame, store: Any) -> None:
    counting = CountingStore(store)
    adapter = PandasContextAdapter(df, context_store=counting)
    adapter.add_context_many({("row", 0): {"i": 0}, ("row", 3): {"i": 3}, ("column", "A"): {}})
    got = adapter.get_context_many([("row", 3), ("row", 1), ("column", "A"), ("row", np.int64(0))])
    assert got == [{"i": 3}, None, {}, {"i": 0}]
    assert counting.calls["get_many"] == 1
    assert adapter.get_context_many([]) == []
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.remove_context_many([("row", 0), ("row", 42)])
    assert adapter.remove_context_many([("row", 0), ("row", 1), ("column", "A")]) == 2
    assert counting.calls["delete_many"] == 1  # the failed call never reached the store
    assert adapter.list_context_keys() == [("row", 3)]


def _labels_of(adapter: PandasContextAdapter) -> list[Any]:
    """Row labels that carry context: their own entry or a row annotation."""
    return sorted({lbl for lbl in adapter.df.index.tolist() if adapter.has_context(("row", lbl))})


def _stored_row_labels(adapter: PandasContextAdapter) -> list[Any]:
    """Row labels with an entry of their own in the store."""
    return sorted(k[1] for k in adapter.list_context_keys(("row",)) if len(k) == 2)


@pytest.mark.parametrize("per_row", [False, True], ids=["annotation", "per_row"])
def test_add_row_context_list_of_labels(df: pd.DataFrame, store: Any, per_row: bool) -> None:
    counting = CountingStore(store)
    adapter = PandasContextAdapter(df, context_store=counting)
    assert adapter.add_row_context([0, 2, 4], {"batch": 1}, per_row=per_row) == 3
    # one batch either way: the rows' entries, or the annotation's row-set chunks (+ its head)
    assert counting.calls["set_many"] == 1 and counting.calls["set"] == (0 if per_row else 1)
    assert _labels_of(adapter) == [0, 2, 4]
    assert _stored_row_labels(adapter) == ([0, 2, 4] if per_row else [])
    before = counting.calls["get_many"]
    assert adapter.get_row_context([4, 0, 1]) == [{"batch": 1}, {"batch": 1}, None]
    assert counting.calls["get_many"] - before == 1
    # numpy labels, an Index, a range and a generator of labels
    assert adapter.add_row_context(np.array([1, 3]), {"batch": 2}, per_row=per_row) == 2
    assert adapter.add_row_context(pd.Index([1]), {"batch": 3}, per_row=per_row) == 1
    assert adapter.add_row_context(range(2), {"batch": 4}, per_row=per_row) == 2
    assert adapter.add_row_context((i for i in [4]), {"batch": 5}, per_row=per_row) == 1
    assert [v["batch"] for v in adapter.get_row_context(range(5))] == [4, 4, 1, 2, 5]
    if per_row:
        assert key_types(adapter.list_context_keys()) == key_types([("row", i) for i in range(5)])
    else:
        assert len(adapter.list_annotations()) == 5


@pytest.mark.parametrize("per_row", [False, True], ids=["annotation", "per_row"])
def test_add_row_context_duplicates_stored_once(adapter: PandasContextAdapter, per_row: bool) -> None:
    assert adapter.add_row_context([1, 1, 2, 1, np.int64(2)], {"d": 1}, per_row=per_row) == 2
    if per_row:
        assert adapter.count_context() == 2
    else:
        assert [a["rows"] for a in adapter.list_annotations()] == [2]
    # get_row_context answers once per distinct label, like add_row_context stores
    assert adapter.get_row_context([2, 1, 1]) == [{"d": 1}, {"d": 1}]
    assert adapter.get_context_many([("row", 2), ("row", 1), ("row", 1)]) == [{"d": 1}] * 3


def test_add_row_context_missing_labels(adapter: PandasContextAdapter) -> None:
    store = adapter.context_store
    adapter.add_context(("row", 0), {"keep": 1})
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"7"):
        adapter.add_row_context([1, 7, 2], {"x": 1})
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"7.*8"):
        adapter.add_row_context([1, 7, 8], {"x": 1})
    with unchanged(store), pytest.raises(LabelNotFoundError, match=r"use 1\b"):
        adapter.add_row_context([1.0, 2], {"x": 1})
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_row_context([True, 2], {"x": 1})
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_row_context(["a"], {"x": 1})
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.get_row_context([1, 7])
    with unchanged(store), pytest.raises(ContextSerializationError):
        adapter.add_row_context([1, 2], {"bad": {1}})


def test_add_row_context_mixed_float_int_duplicates_refused(adapter: PandasContextAdapter) -> None:
    """1 and 1.0 are equal in Python; the 1.0 must still be refused, in either order."""
    with unchanged(adapter.context_store), pytest.raises(LabelNotFoundError):
        adapter.add_row_context([1, 1.0], {})
    with unchanged(adapter.context_store), pytest.raises(LabelNotFoundError):
        adapter.add_row_context([1.0, 1], {})


def test_add_row_context_single_label(store: Any) -> None:
    df = pd.DataFrame({"A": [1, 2, 3]}, index=["a", "ab", "b"])
    adapter = PandasContextAdapter(df, context_store=store)
    # a string is one label, never a sequence of characters
    assert adapter.add_row_context("ab", {"x": 1}) == 1
    assert _labels_of(adapter) == ["ab"]
    assert adapter.get_row_context("ab") == [{"x": 1}]
    assert adapter.add_row_context("b", {"y": 1}, per_row=True) == 1
    assert adapter.list_context_keys(("row",)) == [("row", "b")]
    other = PandasContextAdapter(pd.DataFrame({"A": range(3)}), context_store=InMemoryContextStore())
    assert other.add_row_context(2, {"x": 1}) == 1
    assert _labels_of(other) == [2]


def test_add_row_context_empty_selection(adapter: PandasContextAdapter) -> None:
    assert adapter.add_row_context([], {"x": 1}) == 0
    assert adapter.add_row_context(np.zeros(5, dtype=bool), {"x": 1}) == 0
    assert adapter.get_row_context([]) == []
    assert adapter.count_context() == 0


def test_add_row_context_boolean_numpy_mask(df: pd.DataFrame, store: Any) -> None:
    counting = CountingStore(store)
    adapter = PandasContextAdapter(df, context_store=counting)
    mask = df["A"].to_numpy() % 2 == 0
    assert adapter.add_row_context(mask, {"even": True}) == 3
    assert counting.calls["set_many"] == 1
    assert _labels_of(adapter) == [0, 2, 4]
    assert adapter.get_row_context(mask) == [{"even": True}] * 3
    assert adapter.get_row_context(~mask) == [None, None]


def test_add_row_context_boolean_list_is_a_mask(adapter: PandasContextAdapter) -> None:
    assert adapter.add_row_context([True, False, False, True, False], {"m": 1}) == 2
    assert _labels_of(adapter) == [0, 3]


def test_add_row_context_boolean_series_aligned(store: Any) -> None:
    df = pd.DataFrame({"A": [5, 1, 7, 3]}, index=["w", "x", "y", "z"])
    adapter = PandasContextAdapter(df, context_store=store)
    assert adapter.add_row_context(df["A"] > 4, {"big": True}) == 2
    assert _labels_of(adapter) == ["w", "y"]
    # same labels, another order: aligned by label like .loc, not by position
    shuffled = pd.Series([True, False, False, False], index=["x", "z", "w", "y"])
    assert adapter.add_row_context(shuffled, {"big": False}) == 1
    assert adapter.get_context(("row", "x")) == {"big": False}
    assert adapter.get_context(("row", "w")) == {"big": True}
    assert adapter.get_row_context(shuffled) == [{"big": False}]
    # a superset of the labels aligns too (as .loc does)
    superset = pd.Series([True, True, False, False, False], index=["q", "z", "w", "x", "y"])
    assert adapter.add_row_context(superset, {"sup": 1}) == 1
    assert adapter.get_context(("row", "z")) == {"sup": 1}
    # nullable boolean dtype without missing values works
    nullable = pd.Series([True, False, False, False], index=df.index, dtype="boolean")
    assert adapter.add_row_context(nullable, {"nb": 1}) == 1
    # annotations layer: a later one wins per field, fields it lacks show through
    assert adapter.get_context(("row", "w")) == {"big": True, "nb": 1}


def test_boolean_series_that_cannot_align_is_refused(store: Any) -> None:
    df = pd.DataFrame({"A": [5, 1, 7, 3]}, index=["w", "x", "y", "z"])
    adapter = PandasContextAdapter(df, context_store=store)
    other_labels = pd.Series([True, True, True, True], index=["a", "b", "c", "d"])
    subset = pd.Series([True, True], index=["w", "x"])
    with_na = pd.Series([True, None, False, False], index=df.index, dtype="boolean")
    for mask in (other_labels, subset, with_na):
        with unchanged(store), pytest.raises(ContextKeyError):
            adapter.add_row_context(mask, {"x": 1})


@pytest.mark.parametrize("length", [0, 4, 6])
def test_wrong_length_mask_raises(adapter: PandasContextAdapter, length: int) -> None:
    masks: list[Any] = [np.ones(length, dtype=bool), pd.Index([True] * length, dtype=bool)]
    if length:  # an empty list is an empty list of labels, not a mask
        masks.append([True] * length)
    for mask in masks:
        with (
            unchanged(adapter.context_store),
            pytest.raises(ContextKeyError, match=rf"one entry per row \(5\), got {length}"),
        ):
            adapter.add_row_context(mask, {"x": 1})
        with pytest.raises(ContextKeyError):
            adapter.get_row_context(mask)


def test_add_row_context_slice_range_index(adapter: PandasContextAdapter) -> None:
    assert adapter.add_row_context(slice(1, 3), {"s": 1}) == 3  # inclusive, like .loc
    assert _labels_of(adapter) == [1, 2, 3]
    assert adapter.add_row_context(slice(None, 0), {"s": 0}) == 1
    assert adapter.add_row_context(slice(3, None), {"s": 3}) == 2
    assert adapter.add_row_context(slice(None, None, 2), {"s": 2}) == 3
    assert adapter.get_row_context(slice(0, 4, 2)) == [{"s": 2}, {"s": 2}, {"s": 2}]
    assert [v["s"] for v in adapter.get_row_context(slice(None))] == [2, 1, 2, 3, 2]


def test_add_row_context_slice_non_range_index(store: Any) -> None:
    df = pd.DataFrame({"A": range(5)}, index=[10, 20, 30, 40, 50])
    adapter = PandasContextAdapter(df, context_store=store)
    assert adapter.add_row_context(slice(20, 40), {"s": 1}) == 3
    assert _labels_of(adapter) == [20, 30, 40]
    assert df.loc[20:40].index.tolist() == [20, 30, 40]
    # bounds need not be labels on a sorted index, as with .loc
    assert adapter.add_row_context(slice(15, 35), {"s": 2}) == 2
    assert adapter.get_row_context(slice(15, 35)) == [{"s": 2}, {"s": 2}]
    strings = pd.DataFrame({"A": range(4)}, index=["d", "a", "c", "b"])
    sa = PandasContextAdapter(strings, context_store=InMemoryContextStore())
    assert sa.add_row_context(slice("a", "c"), {"s": 1}) == 2  # positional run a..c
    assert _labels_of(sa) == ["a", "c"]


def test_add_row_context_bad_slice(store: Any) -> None:
    df = pd.DataFrame({"A": range(3)}, index=[30, 10, 20])  # not sorted
    adapter = PandasContextAdapter(df, context_store=store)
    with unchanged(store), pytest.raises(LabelNotFoundError, match="15"):
        adapter.add_row_context(slice(15, 20), {})
    ra = PandasContextAdapter(pd.DataFrame({"A": range(3)}), context_store=InMemoryContextStore())
    for bad in (slice("x", "y"), slice("a", "b"), slice(0, True), slice(None, "2")):
        with pytest.raises(ContextKeyError, match="cannot slice"):
            ra.add_row_context(bad, {})
    assert ra.add_row_context(slice(np.int64(0), 1.5), {"ok": 1}) == 2


def test_boolean_extension_array_mask(adapter: PandasContextAdapter) -> None:
    mask = pd.array([False, True, False, False, True], dtype="boolean")
    assert adapter.add_row_context(mask, {"ea": 1}) == 2
    assert _labels_of(adapter) == [1, 4]
    with unchanged(adapter.context_store), pytest.raises(ContextKeyError, match="missing"):
        adapter.add_row_context(pd.array([True, None, False, False, True], dtype="boolean"), {})


def test_boolean_series_with_duplicate_labels(store: Any) -> None:
    df = pd.DataFrame({"A": [1, 2, 3]}, index=["x", "y", "x"])
    adapter = PandasContextAdapter(df, context_store=store)
    # same index: used positionally, as .loc does
    assert adapter.add_row_context(df["A"] == 2, {"m": 1}) == 1
    assert _labels_of(adapter) == ["y"]
    # a reordered index with repeated labels cannot be aligned
    other = pd.Series([True, False, False], index=["x", "x", "y"])
    with unchanged(store), pytest.raises(ContextKeyError, match="unique"):
        adapter.add_row_context(other, {})


def test_bool_index_list_of_bools_is_labels(store: Any) -> None:
    df = pd.DataFrame({"A": [1, 2]}, index=[True, False])
    adapter = PandasContextAdapter(df, context_store=store)
    assert adapter.add_row_context([False], {"b": 1}, per_row=True) == 1
    assert adapter.list_context_keys() == [("row", False)]
    assert type(adapter.list_context_keys()[0][1]) is bool
    assert adapter.add_row_context([True], {"a": 1}) == 1  # an annotation, by position
    assert adapter.get_row_context([True, False]) == [{"a": 1}, {"b": 1}]
    with unchanged(store), pytest.raises(LabelNotFoundError):
        adapter.add_context(("row", 0), {})


def test_non_strict_unencodable_key(df: pd.DataFrame, store: Any) -> None:
    adapter = PandasContextAdapter(df, context_store=store, strict=False)
    with unchanged(store), pytest.raises(UnsupportedKeyError, match="use a tuple"):
        adapter.add_context(["row", 1], {})
    with unchanged(store), pytest.raises(UnsupportedKeyError):
        adapter.add_context(("x", {1: 2}), {})


@pytest.mark.parametrize("per_row", [False, True], ids=["annotation", "per_row"])
def test_add_row_context_on_datetime_and_multiindex(mi_df: pd.DataFrame, store: Any, per_row: bool) -> None:
    idx = pd.date_range("2024-01-01", periods=4, freq="D")
    dt = PandasContextAdapter(pd.DataFrame({"A": range(4)}, index=idx), context_store=store)
    assert dt.add_row_context(slice("2024-01-02", "2024-01-03"), {"w": 1}, per_row=per_row) == 2
    assert _labels_of(dt) == [datetime(2024, 1, 2), datetime(2024, 1, 3)]
    mi = PandasContextAdapter(mi_df, context_store=InMemoryContextStore())
    assert mi.add_row_context([("a", 2), ("b", 1)], {"m": 1}, per_row=per_row) == 2
    assert mi.add_row_context(mi_df["A"] == 3, {"m": 2}, per_row=per_row) == 1
    assert _labels_of(mi) == [("a", 2), ("b", 1), ("b", 2)]
    if per_row:
        assert dt.list_context_keys() == [("row", datetime(2024, 1, 2)), ("row", datetime(2024, 1, 3))]
        assert key_types(mi.list_context_keys()) == key_types(
            [("row", ("a", 2)), ("row", ("b", 1)), ("row", ("b", 2))]
        )
    with pytest.raises(LabelNotFoundError):
        mi.add_row_context(["a"], {})


def test_add_row_context_duplicate_index_labels(store: Any) -> None:
    df = pd.DataFrame({"A": [1, 2, 3, 4]}, index=["x", "y", "x", "z"])
    adapter = PandasContextAdapter(df, context_store=store)
    assert adapter.add_row_context(df["A"] > 1, {"m": 1}) == 3  # y, x (once), z
    assert _labels_of(adapter) == ["x", "y", "z"]
    assert adapter.get_row_context(["x", "x"]) == [{"m": 1}]
    with unchanged(store), pytest.raises(LabelNotFoundError, match="'q'"):
        adapter.add_row_context(["x", "q"], {})


def test_add_row_context_metadata_not_aliased(adapter: PandasContextAdapter) -> None:
    meta: dict[str, Any] = {"tags": ["a"], "n": 1}
    adapter.add_row_context([0, 1], meta)
    meta["tags"].append("b")
    meta["n"] = 2
    first = adapter.get_context(("row", 0))
    assert first == {"tags": ["a"], "n": 1}
    assert first is not None
    first["tags"].append("c")
    assert adapter.get_context(("row", 1)) == {"tags": ["a"], "n": 1}
    assert adapter.get_context(("row", 0)) == {"tags": ["a"], "n": 1}


# --------------------------------------------------------------------------- frames


def test_row_context_frame_aligned(df: pd.DataFrame, adapter: PandasContextAdapter) -> None:
    adapter.add_context(("row", 1), {"q": 0.5, "src": "a"})
    adapter.add_context(("row", 3), {"q": 0.9, "flag": True})
    adapter.add_context(("row", 3, "column", "A"), {"cell": 1})  # not a row entry
    adapter.add_context(("column", "A"), {"unit": "m"})
    frame = adapter.row_context_frame()
    assert frame.index.equals(df.index)
    assert sorted(frame.columns) == ["flag", "q", "src"]
    assert frame.loc[1, "q"] == 0.5 and frame.loc[3, "q"] == 0.9
    assert frame.loc[1, "src"] == "a" and pd.isna(frame.loc[3, "src"])
    assert frame["q"].isna().tolist() == [True, False, True, False, True]
    # usable as a join partner
    joined = df.join(frame)
    assert joined.shape == (5, 5)


def test_row_context_frame_named_index(store: Any) -> None:
    df = pd.DataFrame({"A": range(3)}, index=pd.Index([7, 8, 9], name="id"))
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", 8), {"x": 1})
    frame = adapter.row_context_frame()
    assert frame.index.equals(df.index) and frame.index.name == "id"


def test_row_context_frame_nested_values(adapter: PandasContextAdapter) -> None:
    adapter.add_context(("row", 0), {"tags": ["a", "b"], "d": {"k": 1}})
    frame = adapter.row_context_frame()
    assert frame.loc[0, "tags"] == ["a", "b"]
    assert frame.loc[0, "d"] == {"k": 1}


def test_row_context_frame_ignores_stale_loose_keys(store: Any) -> None:
    df = pd.DataFrame({"A": range(3)})
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", 1), {"int_label": True})
    df.index = [0.0, 1.0, 2.0]
    adapter.add_context(("row", 2.0), {"float_label": True})
    assert adapter.get_context(("row", 1.0)) is None
    frame = adapter.row_context_frame()
    assert frame.index.equals(df.index)
    # the int key (1) names no row of a float index: it must not show up on row 1.0
    assert "int_label" not in frame.columns or frame["int_label"].isna().all()
    assert frame["float_label"].tolist()[2] is True


def test_row_context_frame_stale_keys_that_collide(store: Any) -> None:
    df = pd.DataFrame({"A": range(2)}, index=pd.Index(["a", 1], dtype=object))
    adapter = PandasContextAdapter(df, context_store=store)
    adapter.add_context(("row", 1), {"v": "int"})
    df.index = pd.Index(["a", 1.0], dtype=object)
    adapter.add_context(("row", 1.0), {"v": "float"})
    assert adapter.count_context() == 2  # two keys that pandas considers equal
    frame = adapter.row_context_frame()
    assert frame.index.equals(df.index)
    assert frame["v"].tolist()[1] == "float"


def test_column_context_frame(df: pd.DataFrame, adapter: PandasContextAdapter) -> None:
    adapter.add_context(("column", "B"), {"unit": "label", "nullable": False})
    adapter.add_context(("row", 1), {"not": "a column"})
    frame = adapter.column_context_frame()
    assert frame.index.equals(df.columns)
    assert sorted(frame.columns) == ["nullable", "unit"]
    assert frame.loc["B", "unit"] == "label"
    assert pd.isna(frame.loc["A", "unit"])


@pytest.mark.parametrize(
    "frame_df",
    [
        pd.DataFrame({"A": range(3)}),
        pd.DataFrame({"A": range(3)}, index=["a", "b", "c"]),
        pd.DataFrame({"A": range(3)}, index=pd.date_range("2024-01-01", periods=3)),
        pd.DataFrame({"A": range(2)}, index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)])),
        pd.DataFrame({"A": []}),
        pd.DataFrame(np.zeros((2, 2))),
    ],
    ids=["range", "str", "datetime", "multi", "empty", "int-columns"],
)
def test_empty_store_frames(frame_df: pd.DataFrame, store: Any) -> None:
    adapter = PandasContextAdapter(frame_df, context_store=store)
    rows = adapter.row_context_frame()
    assert rows.index.equals(frame_df.index)
    assert len(rows.columns) == 0
    cols = adapter.column_context_frame()
    assert cols.index.equals(frame_df.columns)
    assert len(cols.columns) == 0


# --------------------------------------------------------------------------- namespaces


def test_named_adapters_are_isolated(df: pd.DataFrame, store: Any) -> None:
    a = PandasContextAdapter(df, context_store=store, name="first")
    b = PandasContextAdapter(df, context_store=store, name="second")
    a.add_context(("row", 1), {"who": "a"})
    a.add_context(("column", "A"), {"who": "a"})
    b.add_context(("row", 2), {"who": "b"})
    b.add_row_context([3, 4], {"who": "b"}, per_row=True)
    assert a.get_context(("row", 2)) is None
    assert b.get_context(("row", 1)) is None
    assert key_types(a.list_context_keys()) == key_types([("row", 1), ("column", "A")])
    assert _labels_of(b) == [2, 3, 4]
    assert a.count_context() == 2 and b.count_context() == 3
    assert a.row_context_frame()["who"].notna().sum() == 1
    assert b.row_context_frame()["who"].notna().sum() == 3
    assert b.clear_context() == 3
    assert a.count_context() == 2
    # unnamed adapter on the root namespace sees neither
    root = PandasContextAdapter(df, context_store=store)
    assert root.get_context(("row", 1)) is None
    assert a.context_store.namespace.endswith("first")


def test_same_name_shares(df: pd.DataFrame, store: Any) -> None:
    a = PandasContextAdapter(df, context_store=store, name="shared")
    b = PandasContextAdapter(df, context_store=store, name="shared")
    a.add_context(("row", 1), {"v": 1})
    assert b.get_context(("row", 1)) == {"v": 1}
    b.update_context(("row", 1), {"w": 2})
    assert a.get_context(("row", 1)) == {"v": 1, "w": 2}
    assert a.list_context_keys() == b.list_context_keys() == [("row", 1)]
    # the adapters' views share the backend with the store itself
    assert store.with_namespace("shared").get(("row", 1)) == {"v": 1, "w": 2}
    assert store.get(("row", 1)) is None


# --------------------------------------------------------------------------- aliasing


def test_no_aliasing(adapter: PandasContextAdapter) -> None:
    for key in [("row", 2), ("column", "A"), ("row", 2, "column", "B"), ("dataset",)]:
        meta: dict[str, Any] = {"n": 1, "tags": ["x"], "nested": {"k": [1]}}
        adapter.add_context(key, meta)
        meta["n"] = 2
        meta["tags"].append("y")
        meta["nested"]["k"].append(2)
        got = adapter.get_context(key)
        assert got == {"n": 1, "tags": ["x"], "nested": {"k": [1]}}
        assert got is not None
        got["n"] = 3
        got["tags"].append("z")
        got["nested"]["k"].append(3)
        assert adapter.get_context(key) == {"n": 1, "tags": ["x"], "nested": {"k": [1]}}
        assert adapter.get_context(key) is not adapter.get_context(key)


def test_no_aliasing_flat(adapter: PandasContextAdapter) -> None:
    meta = {"a": 1}
    adapter.add_context(("row", 0), meta)  # fast path
    meta["a"] = 2
    got = adapter.get_context(("row", 0))
    assert got == {"a": 1}
    assert got is not None
    got["a"] = 3
    assert adapter.get_context(("row", 0)) == {"a": 1}
    many = adapter.get_context_many([("row", 0)])[0]
    assert many is not None
    many["a"] = 4
    assert adapter.get_context(("row", 0)) == {"a": 1}


def test_metadata_conversions(adapter: PandasContextAdapter) -> None:
    adapter.add_context(("row", 0), {"t": (1, 2), "np": np.int64(5), "f": np.float32(0.5)})
    assert adapter.get_context(("row", 0)) == {"t": [1, 2], "np": 5, "f": 0.5}


# --------------------------------------------------------------------------- metadata errors


def test_metadata_errors_leave_store_unchanged(adapter: PandasContextAdapter, tmp_path: Any) -> None:
    store = adapter.context_store
    adapter.add_context(("row", 1), {"keep": 1})
    path = tmp_path / "f.txt"
    path.write_text("x")
    with path.open() as fh:
        bad_values: list[Any] = [
            {"s": {1, 2}},
            {"f": fh},
            {"x": float("nan")},
            {"x": math.inf},
            {"n": {"deep": [1, float("nan")]}},
            {1: "non-str key"},
            ["not", "a", "dict"],
            {"b": b"bytes"},
            {"na": pd.NA},
        ]
        for bad in bad_values:
            for key in [("row", 1), ("row", 2), ("column", "A"), ("row", 0, "column", "A")]:
                with unchanged(store), pytest.raises(ContextSerializationError):
                    adapter.add_context(key, bad)
            with unchanged(store), pytest.raises(ContextSerializationError):
                adapter.add_dataset_context(bad)
            with unchanged(store), pytest.raises(ContextSerializationError):
                adapter.add_row_context([0, 2], bad)
            with unchanged(store), pytest.raises(ContextSerializationError):
                adapter.add_context_many([(("row", 3), {"ok": 1}), (("row", 4), bad)])
            if isinstance(bad, dict):
                with unchanged(store), pytest.raises(ContextSerializationError):
                    adapter.update_context(("row", 1), bad)
    assert adapter.get_context(("row", 1)) == {"keep": 1}
    assert isinstance(ContextSerializationError("x"), TypeError)


# --------------------------------------------------------------------------- closed store


def test_closed_store_raises(df: pd.DataFrame, make_store: Any) -> None:
    store = make_store()
    adapter = PandasContextAdapter(df, context_store=store)
    named = PandasContextAdapter(df, context_store=store, name="ns")
    adapter.add_context(("row", 1), {"a": 1})  # prime the fast path
    named.add_context(("row", 1), {"a": 1})
    store.close()
    for a in (adapter, named):
        for op in (
            lambda a=a: a.add_context(("row", 1), {"a": 2}),
            lambda a=a: a.get_context(("row", 1)),
            lambda a=a: a.add_context(("column", "A"), {}),
            lambda a=a: a.get_context(("column", "A")),
            lambda a=a: a.has_context(("row", 1)),
            lambda a=a: a.remove_context(("row", 1)),
            lambda a=a: a.update_context(("row", 1), {"b": 1}),
            lambda a=a: a.increment_context(("row", 1), "n"),
            lambda a=a: a.list_context_keys(),
            lambda a=a: a.count_context(),
            lambda a=a: a.add_dataset_context({}),
            lambda a=a: a.get_dataset_context(),
            lambda a=a: a.add_context_many([(("row", 2), {})]),
            lambda a=a: a.get_context_many([("row", 2)]),
            lambda a=a: a.remove_context_many([("row", 2)]),
            lambda a=a: a.add_row_context([0, 1], {}),
            lambda a=a: a.get_row_context([0, 1]),
            lambda a=a: a.row_context_frame(),
            lambda a=a: a.column_context_frame(),
            lambda a=a: list(a.iter_context()),
            lambda a=a: a.clear_context(),
        ):
            with pytest.raises(ContextStoreClosedError):
                op()
    # validation still comes first: a bad key is a key error, not a closed-store error
    with pytest.raises(LabelNotFoundError):
        adapter.add_context(("row", 99), {})


def test_named_adapter_on_closed_store(df: pd.DataFrame, make_store: Any) -> None:
    store = make_store()
    store.close()
    with pytest.raises(ContextStoreClosedError):
        PandasContextAdapter(df, context_store=store, name="x")


# --------------------------------------------------------------------------- BaseContextAdapter


def test_base_adapter_passes_keys_through(store: Any) -> None:
    base = BaseContextAdapter([1, 2, 3], context_store=store)
    base.add_context("anything", {"a": 1})
    base.add_context(("row", 1.0), {"b": 2})
    assert base.get_context("anything") == {"a": 1}
    assert base.get_context(("row", 1.0)) == {"b": 2}
    assert base.get_context(("row", 1)) is None  # keys keep their types
    assert key_types(base.list_context_keys()) == key_types(["anything", ("row", 1.0)])
    base.add_dataset_context({"d": 1})
    assert base.get_dataset_context() == {"d": 1}
    assert base.validate_key(("x",)) == ("x",)
    assert base.remove_context("anything") is True
    assert base.remove_context_many([("row", 1.0), ("nope",)]) == 1
    base.add_context_many({"k1": {}, "k2": {"v": 2}})
    assert base.get_context_many(["k2", "k3"]) == [{"v": 2}, None]
    assert base.has_context("k1") and not base.has_context("k3")
    assert base.update_context("k1", {"u": 1}) == {"u": 1}
    assert base.increment_context("k1", "u", 2) == 3
    assert base.count_context() == 3
    assert base.clear_context() == 3


def test_base_adapter_defaults(store: Any) -> None:
    assert isinstance(BaseContextAdapter(None).context_store, InMemoryContextStore)
    assert isinstance(BaseContextAdapter(None, "memory://").context_store, InMemoryContextStore)
    named = BaseContextAdapter(None, store, name="n")
    assert named.context_store.namespace == "n"
    assert named.name == "n"


# --------------------------------------------------------------------------- property test


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["add", "get", "remove", "reindex"]),
            st.integers(-2, 8),
            st.integers(0, 3),
        ),
        max_size=40,
    )
)
def test_adapter_matches_model(ops: list[tuple[str, int, int]]) -> None:
    """Random add/get/remove on a RangeIndex whose labels change: adapter == dict model."""
    df = pd.DataFrame({"A": range(5)})
    adapter = PandasContextAdapter(df, context_store=InMemoryContextStore())
    model: dict[int, dict[str, int]] = {}
    for op, label, value in ops:
        labels = set(df.index)
        if op == "reindex":
            df.index = pd.RangeIndex(value, value + 5)
            continue
        if label not in labels:
            with pytest.raises(LabelNotFoundError):
                if op == "add":
                    adapter.add_context(("row", label), {"v": value})
                elif op == "get":
                    adapter.get_context(("row", label))
                else:
                    adapter.remove_context(("row", label))
            continue
        if op == "add":
            adapter.add_context(("row", label), {"v": value})
            model[label] = {"v": value}
        elif op == "get":
            assert adapter.get_context(("row", label)) == model.get(label)
        else:
            assert adapter.remove_context(("row", label)) is (model.pop(label, None) is not None)
    assert sorted(k[1] for k in adapter.list_context_keys()) == sorted(model)
