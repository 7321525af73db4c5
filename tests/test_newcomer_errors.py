"""Mistakes a newcomer makes get an error that says what to write instead."""

from __future__ import annotations

import pandas as pd
import pytest

from context_framework.adapters.pandas_adapter import PandasContextAdapter
from context_framework.exceptions import ContextKeyError


@pytest.fixture
def adapter() -> PandasContextAdapter:
    return PandasContextAdapter(pd.DataFrame({"A": [1, 2], "B": [3, 4]}))


@pytest.mark.parametrize(
    ("key", "fixed"),
    [
        (["row", 1], "('row', 1)"),
        (["column", "A"], "('column', 'A')"),
        (["row", 0, "column", "B"], "('row', 0, 'column', 'B')"),
        (["dataset"], "('dataset',)"),
    ],
)
def test_a_list_key_says_use_a_tuple(adapter: PandasContextAdapter, key: list, fixed: str) -> None:
    for call in (
        lambda: adapter.add_context(key, {"a": 1}),
        lambda: adapter.get_context(key),
        lambda: adapter.add_context_many([(key, {"a": 1})]),
        lambda: adapter.get_context_many([key]),
    ):
        with pytest.raises(ContextKeyError, match="use a tuple") as info:
            call()
        assert fixed in str(info.value)
    assert adapter.list_context_keys() == []


@pytest.mark.parametrize(
    ("key", "fixed"),
    [
        (("column", "A", "row", 1), "('row', 1, 'column', 'A')"),
        (("row", 1, "A"), "('row', 1, 'column', 'A')"),
        (("cell", 1, "A"), "('row', 1, 'column', 'A')"),
    ],
)
def test_a_cell_key_in_the_wrong_shape_points_to_the_cell_form(
    adapter: PandasContextAdapter, key: tuple, fixed: str
) -> None:
    with pytest.raises(ContextKeyError, match=r"a cell key is \('row', label, 'column', name\)") as info:
        adapter.add_context(key, {"a": 1})
    assert fixed in str(info.value)
    assert adapter.list_context_keys() == []


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (("column", "A", "row", 1), "write ('row', 1, 'column', 'A')"),
        (("row", 1, "A"), "write ('row', 1, 'column', 'A')"),
        (["row", 1], "use a tuple"),
    ],
)
def test_engine_adapters_give_the_same_hints(key: object, message: str) -> None:
    dd = pytest.importorskip("dask.dataframe")
    from context_framework import DaskContextAdapter, InMemoryContextStore

    frame = dd.from_pandas(pd.DataFrame({"A": [1, 2]}), npartitions=1)
    adapter = DaskContextAdapter(frame, InMemoryContextStore())
    with pytest.raises(ContextKeyError) as info:
        adapter.add_context(key, {"a": 1})
    assert message in str(info.value)
