"""The adapter's batch forms take the same paths as its per-call forms, whatever the input's shape."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from context_framework import InMemoryContextStore
from context_framework.adapters.pandas_adapter import PandasContextAdapter
from context_framework.exceptions import ContextKeyError, ContextSerializationError
from context_framework.wrappers import CachedStore


@pytest.fixture(params=["memory", "cached"])
def adapter(request: pytest.FixtureRequest) -> PandasContextAdapter:
    store: Any = InMemoryContextStore() if request.param == "memory" else CachedStore(InMemoryContextStore())
    return PandasContextAdapter(pd.DataFrame({"A": range(50)}), store)


def test_generators_lists_and_mappings_store_the_same(adapter: PandasContextAdapter) -> None:
    adapter.add_context_many((("row", i), {"i": i}) for i in range(10))
    adapter.add_context_many([(("row", i), {"i": i}) for i in range(10, 20)])
    adapter.add_context_many({("row", i): {"i": i} for i in range(20, 30)})
    got = adapter.get_context_many(("row", i) for i in range(30))
    assert got == [{"i": i} for i in range(30)]
    assert adapter.get_context_many([("row", i) for i in range(30)]) == got


def test_a_bad_item_anywhere_stores_nothing(adapter: PandasContextAdapter) -> None:
    good = [(("row", i), {"i": i}) for i in range(10)]
    for bad, error in [
        ((("row", 99), {"i": 1}), ContextKeyError),  # not a row of the frame
        ((("row", 1.0), {"i": 1}), ContextKeyError),  # a float label on an integer index
        ((("row", 3), {"s": {1, 2}}), ContextSerializationError),  # not JSON
        ((("row", 3),), ContextSerializationError),  # not a pair
    ]:
        for items in ([*good, bad], [bad, *good], iter([*good, bad])):
            with pytest.raises(error):
                adapter.add_context_many(items)  # type: ignore[arg-type]
            assert adapter.count_context() == 0


def test_batch_values_never_alias(adapter: PandasContextAdapter) -> None:
    value = {"a": 1, "nested": {"b": [1, 2]}}
    flat = {"a": 1}
    adapter.add_context_many([(("row", 1), value), (("row", 2), flat)])
    value["nested"]["b"].append(3)
    flat["a"] = 2
    first, second = adapter.get_context_many([("row", 1), ("row", 2)])
    assert first == {"a": 1, "nested": {"b": [1, 2]}} and second == {"a": 1}
    first["a"] = second["a"] = 9
    assert adapter.get_context_many([("row", 1), ("row", 2)]) == [
        {"a": 1, "nested": {"b": [1, 2]}},
        {"a": 1},
    ]


def test_batch_reads_merge_annotations_made_after_the_first_read(adapter: PandasContextAdapter) -> None:
    adapter.add_context_many((("row", i), {"own": i}) for i in range(5))
    assert adapter.get_context_many(("row", i) for i in range(5)) == [{"own": i} for i in range(5)]
    adapter.add_row_context(slice(1, 2), {"flag": True})
    assert adapter.get_context_many(("row", i) for i in range(4)) == [
        {"own": 0},
        {"flag": True, "own": 1},
        {"flag": True, "own": 2},
        {"own": 3},
    ]


def test_a_validate_key_override_sees_every_batch_key() -> None:
    seen: list[Any] = []

    class Audited(PandasContextAdapter):
        def validate_key(self, key: Any) -> Any:
            seen.append(key)
            return super().validate_key(key)

    adapter = Audited(pd.DataFrame({"A": range(5)}))
    adapter.add_context_many((("row", i), {"i": i}) for i in range(3))
    adapter.get_context_many(("row", i) for i in range(3))
    assert seen == [("row", 0), ("row", 1), ("row", 2)] * 2
