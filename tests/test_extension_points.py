"""The extension points the origin's documentation teaches, in its own shapes.

* a store written as a class with ``set(key, value)``, ``get(key)``,
  ``delete(key)`` and ``list_keys()`` (a plain class, or one subclassing
  ``ContextStore``), used through ``PandasContextAdapter`` and
  ``BaseContextAdapter``: every adapter operation works and the data lands in
  the user's store;
* an adapter written as a ``BaseContextAdapter`` subclass that calls
  ``super().__init__(context_store)``, sets ``self.data`` itself and has a
  ``validate_key`` that raises or returns nothing;
* a ``PandasContextAdapter`` subclass whose ``validate_key`` override is
  honoured by every path (the fast paths and the bulk forms);
* the conformance suite run against a four-method store.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import sys
import threading
import types
from pathlib import Path
from typing import Any, Dict, List, Optional  # noqa: UP035 - the origin's annotations, copied

import pandas as pd
import pytest

import context_framework.wrappers as wrappers
from context_framework.adapters.base_adapter import BaseContextAdapter
from context_framework.adapters.pandas_adapter import PandasContextAdapter
from context_framework.base_store import BaseContextStore
from context_framework.context_store import ContextStore, InMemoryContextStore
from context_framework.exceptions import (
    ContextConfigurationError,
    ContextKeyError,
    ContextSerializationError,
    ContextStoreError,
    UnsupportedKeyError,
)
from context_framework.keys import decode_key, encode_key
from context_framework.testing import StoreTests, make_state_machine_test

# --------------------------------------------------------------------------- the origin's shapes


class OriginStore:
    """The origin's ``InMemoryContextStore`` (store_backends_api.md, 3.1), as a plain class."""

    def __init__(self) -> None:
        self._store: Dict[Any, dict] = {}  # noqa: UP006

    def set(self, key: Any, value: dict) -> None:
        self._store[key] = value

    def get(self, key: Any) -> Optional[dict]:  # noqa: UP045
        return self._store.get(key, None)

    def delete(self, key: Any) -> None:
        if key in self._store:
            del self._store[key]

    def list_keys(self) -> List[Any]:  # noqa: UP006
        return list(self._store.keys())


class OriginProtocolStore(ContextStore):
    """The same store, subclassing ``ContextStore`` as the origin's docs show."""

    def __init__(self) -> None:
        self._store: Dict[Any, dict] = {}  # noqa: UP006

    def set(self, key: Any, value: dict) -> None:
        self._store[key] = value

    def get(self, key: Any) -> Optional[dict]:  # noqa: UP045
        return self._store.get(key, None)

    def delete(self, key: Any) -> None:
        if key in self._store:
            del self._store[key]

    def list_keys(self) -> List[Any]:  # noqa: UP006
        return list(self._store.keys())


class GenomicData:
    def __init__(self, genes: list[str]) -> None:
        self.genes = genes


class GenomicContextAdapter(BaseContextAdapter):
    """An origin-style adapter: ``super().__init__(context_store)``, ``self.data`` set here."""

    def __init__(self, genomic_data: GenomicData, context_store: Any = None) -> None:
        super().__init__(context_store)
        self.data = genomic_data

    def validate_key(self, key: Any) -> None:
        if isinstance(key, tuple) and key[0] == "gene":
            gene_id = key[1]
            if gene_id not in self.data.genes:
                raise ContextKeyError(f"No such gene: {gene_id}")


STORES = [OriginStore, OriginProtocolStore]


@pytest.fixture(params=STORES, ids=lambda c: c.__name__)
def user_store(request: pytest.FixtureRequest) -> Any:
    return request.param()


@pytest.fixture
def df() -> pd.DataFrame:
    return pd.DataFrame({"GeneSymbol": ["BRCA1", "TP53", "EGFR"], "Expression": [12.3, 8.4, 9.1]})


# --------------------------------------------------------------------------- stores, via the pandas adapter


def test_four_method_store_through_pandas_adapter(user_store: Any, df: pd.DataFrame) -> None:
    adapter = PandasContextAdapter(df, context_store=user_store)
    adapter.add_context(("column", "GeneSymbol"), {"source": "CSV import"})
    adapter.add_context(("row", 0), {"checked": True})
    assert adapter.get_context(("column", "GeneSymbol")) == {"source": "CSV import"}
    assert adapter.get_context(("row", 0)) == {"checked": True}
    assert adapter.get_context(("row", 1)) is None
    assert adapter.get_context(("row", 1), {"d": 1}) == {"d": 1}
    # the data is in the user's own store, under the keys as given
    assert user_store._store == {
        ("column", "GeneSymbol"): {"source": "CSV import"},
        ("row", 0): {"checked": True},
    }
    assert sorted(adapter.list_context_keys(), key=repr) == [("column", "GeneSymbol"), ("row", 0)]
    assert adapter.remove_context(("row", 0)) is True
    assert adapter.remove_context(("row", 0)) is False
    assert ("row", 0) not in user_store._store


def test_four_method_store_batches_counts_and_updates(user_store: Any, df: pd.DataFrame) -> None:
    adapter = PandasContextAdapter(df, context_store=user_store)
    adapter.add_context_many([(("row", i), {"i": i}) for i in range(3)])
    assert user_store._store[("row", 2)] == {"i": 2}
    assert adapter.count_context() == 3
    assert adapter.count_context(("row",)) == 3
    assert adapter.update_context(("row", 1), {"note": "x"}) == {"i": 1, "note": "x"}
    assert user_store._store[("row", 1)] == {"i": 1, "note": "x"}
    assert adapter.increment_context(("row", 1), "n") == 1
    assert adapter.increment_context(("row", 1), "n", 2) == 3
    assert user_store._store[("row", 1)]["n"] == 3
    assert adapter.has_context(("row", 2)) is True
    assert adapter.has_context(("column", "Expression")) is False
    assert adapter.get_context_many([("row", 0), ("row", 1), ("column", "GeneSymbol")]) == [
        {"i": 0},
        {"i": 1, "note": "x", "n": 3},
        None,
    ]
    assert dict(adapter.iter_context(("row",)))[("row", 0)] == {"i": 0}
    assert adapter.remove_context_many([("row", 0), ("row", 0)]) == 1
    assert adapter.clear_context() == 2
    assert user_store._store == {}


def test_four_method_store_row_context_and_annotations(user_store: Any, df: pd.DataFrame) -> None:
    adapter = PandasContextAdapter(df, context_store=user_store)
    assert adapter.add_row_context([0, 2], {"batch": 1}, per_row=True) == 2
    assert user_store._store[("row", 2)] == {"batch": 1}
    assert adapter.add_row_context(slice(0, 1), {"qc": "ok"}) == 2  # one annotation
    assert adapter.get_row_context([0, 1, 2]) == [{"qc": "ok", "batch": 1}, {"qc": "ok"}, {"batch": 1}]
    assert adapter.get_context(("row", 1)) == {"qc": "ok"}
    assert len(adapter.list_annotations()) == 1


def test_four_method_store_namespaces_share_the_users_store(user_store: Any, df: pd.DataFrame) -> None:
    one = PandasContextAdapter(df, context_store=user_store, name="ds1")
    two = PandasContextAdapter(df, context_store=user_store, name="ds2")
    root = PandasContextAdapter(df, context_store=user_store)
    one.add_context(("column", "GeneSymbol"), {"ds": 1})
    two.add_context(("column", "GeneSymbol"), {"ds": 2})
    root.add_context(("column", "GeneSymbol"), {"ds": 0})
    got = [a.get_context(("column", "GeneSymbol")) for a in (one, two, root)]
    assert got == [{"ds": 1}, {"ds": 2}, {"ds": 0}]
    assert one.list_context_keys() == [("column", "GeneSymbol")]
    assert root.count_context() == 1
    # the documented key scheme: ("__namespace__", namespace, key) in the user's store
    assert user_store._store[("__namespace__", "ds1", ("column", "GeneSymbol"))] == {"ds": 1}
    assert one.clear_context() == 1
    assert two.count_context() == 1 and root.count_context() == 1


def test_four_method_store_values_follow_the_value_rules(user_store: Any, df: pd.DataFrame) -> None:
    adapter = PandasContextAdapter(df, context_store=user_store)
    with pytest.raises(ContextSerializationError):
        adapter.add_context(("row", 0), {"bad": {1, 2}})
    with pytest.raises(ContextSerializationError):
        adapter.add_context_many([(("row", 0), {"ok": 1}), (("row", 1), {"bad": float("nan")})])
    assert user_store._store == {}
    # what is stored is a private copy, and what is read is a fresh one
    value: dict[str, Any] = {"tags": ["a"]}
    adapter.add_context(("row", 0), value)
    value["tags"].append("b")
    got = adapter.get_context(("row", 0))
    assert got == {"tags": ["a"]}
    got["tags"].append("c")  # type: ignore[index]
    assert adapter.get_context(("row", 0)) == {"tags": ["a"]}


def test_four_method_store_through_base_adapter(user_store: Any) -> None:
    adapter = BaseContextAdapter(None, user_store)
    adapter.add_context(("gene", "TP53"), {"source": "PubMed"})
    assert user_store._store == {("gene", "TP53"): {"source": "PubMed"}}
    assert adapter.get_context(("gene", "TP53")) == {"source": "PubMed"}
    assert adapter.count_context() == 1


# --------------------------------------------------------------------------- the origin-style adapter


@pytest.mark.parametrize("store_class", [*STORES, InMemoryContextStore], ids=lambda c: c.__name__)
def test_origin_style_adapter(store_class: type) -> None:
    store = store_class()
    genes = GenomicData(["BRCA1", "TP53"])
    adapter = GenomicContextAdapter(genes, store)
    assert adapter.data is genes
    adapter.add_context(("gene", "TP53"), {"source": "PubMed"})
    adapter.add_context("free-form", {"note": 1})
    with pytest.raises(ContextKeyError, match="No such gene"):
        adapter.add_context(("gene", "NOPE"), {"x": 1})
    with pytest.raises(ContextKeyError):
        adapter.add_context_many([(("gene", "BRCA1"), {"ok": 1}), (("gene", "NOPE"), {"x": 1})])
    # the key a validate_key returning None accepted is used as given, in the user's store
    assert store.get(("gene", "TP53")) == {"source": "PubMed"}
    assert store.get(("gene", "BRCA1")) is None
    assert adapter.get_context(("gene", "TP53")) == {"source": "PubMed"}
    assert sorted(adapter.list_context_keys(), key=repr) == ["free-form", ("gene", "TP53")]
    adapter.add_context_many([(("gene", "BRCA1"), {"i": 1})])
    assert adapter.update_context(("gene", "BRCA1"), {"j": 2}) == {"i": 1, "j": 2}
    assert adapter.increment_context(("gene", "BRCA1"), "n") == 1
    assert adapter.count_context(("gene",)) == 2
    assert adapter.has_context(("gene", "BRCA1")) is True
    assert adapter.get_context_many([("gene", "BRCA1"), ("gene", "TP53")]) == [
        {"i": 1, "j": 2, "n": 1},
        {"source": "PubMed"},
    ]
    assert adapter.remove_context(("gene", "TP53")) is True
    assert adapter.clear_context() == 2
    assert store.list_keys() == []


def test_origin_style_adapter_without_a_store_uses_memory() -> None:
    adapter = GenomicContextAdapter(GenomicData(["TP53"]))
    adapter.add_context(("gene", "TP53"), {"a": 1})
    assert isinstance(adapter.context_store, InMemoryContextStore)
    assert adapter.get_context(("gene", "TP53")) == {"a": 1}


def test_origin_style_adapter_keeps_data_set_before_super() -> None:
    class EarlyData(BaseContextAdapter):
        def __init__(self, data: Any, context_store: Any = None) -> None:
            self.data = data
            super().__init__(context_store)

    store = OriginStore()
    adapter = EarlyData([1, 2], store)
    assert adapter.data == [1, 2]
    adapter.add_context("k", {"a": 1})
    assert store._store == {"k": {"a": 1}}


def test_origin_style_adapter_assigning_context_store() -> None:
    class Assigning(BaseContextAdapter):  # no super().__init__: assigns the store itself
        def __init__(self, data: Any, context_store: Any = None) -> None:
            self.data = data
            self.context_store = context_store or InMemoryContextStore()

    store = OriginStore()
    adapter = Assigning("data", store)
    adapter.add_context("k", {"a": 1})
    assert store._store == {"k": {"a": 1}}
    assert adapter.data == "data"
    with pytest.raises(ContextConfigurationError, match="super"):
        adapter.context_store = InMemoryContextStore()
    adapter.context_store = store  # the store it has: nothing to do
    assert adapter.get_context("k") == {"a": 1}


def test_origin_style_adapter_assigning_the_store_after_super() -> None:
    class Both(BaseContextAdapter):
        def __init__(self, data: Any, context_store: Any = None) -> None:
            super().__init__(context_store)
            self.context_store = context_store
            self.data = data

    store = OriginStore()
    Both("data", store).add_context("k", {"a": 1})
    assert store._store == {"k": {"a": 1}}


def test_store_like_object_lacking_core_methods_is_refused_at_construction() -> None:
    class HalfStore:
        def set(self, key: Any, value: dict) -> None: ...

        def get(self, key: Any) -> dict | None: ...

    with pytest.raises(TypeError, match="list_keys"):
        GenomicContextAdapter(GenomicData([]), HalfStore())


def test_validate_key_that_takes_no_key_is_refused_at_construction() -> None:
    class NoKey(BaseContextAdapter):
        def validate_key(self) -> None:  # type: ignore[override]
            pass

    with pytest.raises(ContextConfigurationError, match="validate_key"):
        NoKey(None)


# --------------------------------------------------------------------------- PandasContextAdapter subclasses


class EvenRowsOnly(PandasContextAdapter):
    """Refuses odd rows; keeps the canonical keys the base class returns."""

    def validate_key(self, key: Any) -> Any:
        key = super().validate_key(key)
        if key[0] == "row" and key[1] % 2:
            raise ContextKeyError(f"odd rows are private: {key!r}")
        return key


@pytest.fixture
def even() -> EvenRowsOnly:
    return EvenRowsOnly(pd.DataFrame({"A": range(6)}))


def test_override_is_honoured_by_the_fast_paths(even: EvenRowsOnly) -> None:
    even.add_context(("row", 0), {"a": 1})  # warms the index cache
    assert even.get_context(("row", 0)) == {"a": 1}
    with pytest.raises(ContextKeyError, match="private"):
        even.add_context(("row", 1), {"a": 1})
    with pytest.raises(ContextKeyError, match="private"):
        even.get_context(("row", 1))
    with pytest.raises(ContextKeyError, match="private"):
        even.validate_keys([("row", 2), ("row", 3)])
    assert even.count_context() == 1


def test_override_is_honoured_by_the_bulk_forms(even: EvenRowsOnly) -> None:
    even.add_context(("row", 0), {"a": 1})
    for call in (
        lambda: even.add_context_many([(("row", 2), {"a": 1}), (("row", 3), {"a": 1})]),
        lambda: even.add_row_context([2, 3], {"a": 1}),
        lambda: even.add_row_context([2, 3], {"a": 1}, per_row=True),
        lambda: even.add_row_context([2, 3], [{"a": 1}, {"a": 2}]),
        lambda: even.add_row_context(slice(2, 3), {"a": 1}),
        lambda: even.annotate_rows([2, 3], {"a": 1}),
        lambda: even.get_row_context([2, 3]),
        lambda: even.get_context_many([("row", 2), ("row", 3)]),
        lambda: even.remove_row_context([2, 3]),
        lambda: even.remove_context_many([("row", 3)]),
        lambda: even.update_context(("row", 3), {"a": 1}),
        lambda: even.has_context(("row", 3)),
    ):
        with pytest.raises(ContextKeyError, match="private"):
            call()
    assert even.list_context_keys() == [("row", 0)]
    assert even.add_row_context([0, 2, 4], {"ok": 1}) == 3
    assert even.get_row_context([0, 2]) == [{"ok": 1, "a": 1}, {"ok": 1}]


def test_base_class_fast_paths_are_unchanged() -> None:
    adapter = PandasContextAdapter(pd.DataFrame({"A": range(3)}))
    assert adapter._fast_index is None
    adapter.add_context(("row", 1), {"a": 1})
    assert adapter._fast_index is adapter.df.index  # the base class keeps its fast path


class OriginStylePandas(PandasContextAdapter):
    """A ``validate_key`` in the origin's style: it raises, or returns nothing."""

    def validate_key(self, key: Any) -> None:
        if key == ("column", "secret"):
            raise ContextKeyError("the secret column carries no context")


def test_pandas_override_returning_none_uses_the_key_as_given() -> None:
    adapter = OriginStylePandas(pd.DataFrame({"A": range(3), "secret": 0}))
    adapter.add_context(("row", 1), {"a": 1})
    adapter.add_context(("anything", "goes"), {"b": 2})  # the override replaced the checks
    assert adapter.get_context(("row", 1)) == {"a": 1}
    assert adapter.get_context(("anything", "goes")) == {"b": 2}
    adapter.add_context_many([(("row", 2), {"c": 3})])
    assert adapter.add_row_context([0], {"d": 4}, per_row=True) == 1
    listed = sorted(adapter.list_context_keys(), key=repr)
    assert listed == [("anything", "goes"), ("row", 0), ("row", 1), ("row", 2)]
    with pytest.raises(ContextKeyError, match="secret"):
        adapter.add_context(("column", "secret"), {"x": 1})


def test_origin_row_context_adapter_shape() -> None:
    """``PandasRowContextAdapter`` of the origin's advanced_adapter_examples.md."""

    class PandasRowContextAdapter(PandasContextAdapter):
        def add_context(self, key: Any, metadata: dict) -> None:
            if isinstance(key, tuple) and key[0] == "row":
                row_idx = key[1]
                col_name = key[3] if len(key) > 3 else None
                if col_name and col_name not in self.df.columns:
                    raise ContextKeyError(f"Column {col_name} not found.")
                if row_idx not in self.df.index:
                    raise ContextKeyError(f"Row index {row_idx} not found.")
            super().add_context(key, metadata)

    store = OriginStore()
    row_adapter = PandasRowContextAdapter(pd.DataFrame({"GeneSymbol": ["A", "B"]}), store)
    row_adapter.add_context(("row", 0, "column", "GeneSymbol"), {"verified": True})
    assert store._store == {("row", 0, "column", "GeneSymbol"): {"verified": True}}
    with pytest.raises(ContextKeyError):
        row_adapter.add_context(("row", 5, "column", "GeneSymbol"), {"verified": True})


# --------------------------------------------------------------------------- the protocol's defaults


def test_protocol_subclass_gets_working_defaults() -> None:
    store = OriginProtocolStore()
    store.set_many([(("row", 1), {"a": 1}), (("row", 2), {"a": 2})])
    assert store.count() == 2
    assert store.count(("row",)) == 2
    assert store.exists(("row", 1)) is True
    assert store.get_many([("row", 1), ("row", 9)]) == [{"a": 1}, None]
    assert store.update(("row", 1), {"b": 2}) == {"a": 1, "b": 2}
    assert store.increment(("row", 1), "n") == 1
    assert sorted(store.scan(), key=repr) == [("row", 1), ("row", 2)]
    assert dict(store.items())[("row", 2)] == {"a": 2}
    assert store.namespace == ""
    assert store.closed is False
    assert store.delete_many([("row", 2), ("row", 3)]) == 1
    view = store.with_namespace("a")
    view.set("k", {"v": 1})
    assert store.count() == 1 and view.count() == 1
    assert store.clear() == 1
    assert store._store == {("__namespace__", "a", "k"): {"v": 1}}
    store.close()


def test_protocol_subclass_missing_a_core_method_says_which() -> None:
    class NoListKeys(ContextStore):
        def __init__(self) -> None:
            self.d: dict[Any, Any] = {}

        def set(self, key: Any, value: dict) -> None:
            self.d[key] = value

        def get(self, key: Any) -> dict | None:
            return self.d.get(key)

        def delete(self, key: Any) -> None:
            self.d.pop(key, None)

    store = NoListKeys()
    store.set("k", {"a": 1})
    with pytest.raises(NotImplementedError, match=r"list_keys\(\)"):
        store.count()
    with pytest.raises(NotImplementedError, match=r"list_keys\(\)"):
        store.list_keys()


def test_our_stores_are_still_context_stores() -> None:
    assert isinstance(InMemoryContextStore(), ContextStore)
    assert not isinstance(OriginStore(), ContextStore)  # four methods are not the whole protocol
    assert isinstance(wrappers.as_context_store(OriginStore()), ContextStore)


# --------------------------------------------------------------------------- the wrapper itself


class StrictSignatureStore(OriginStore):
    """Fails loudly if called with anything but the origin's signatures."""

    def get(self, key: Any) -> Optional[dict]:  # noqa: UP045
        return self._store.get(key)

    def list_keys(self) -> List[Any]:  # noqa: UP006
        return list(self._store)


class StringKeyStore(OriginStore):
    """The origin's SQLite example keys rows by ``str(key)``: listing gives strings."""

    def set(self, key: Any, value: dict) -> None:
        self._store[str(key)] = value

    def get(self, key: Any) -> Optional[dict]:  # noqa: UP045
        return self._store.get(str(key))

    def delete(self, key: Any) -> None:
        self._store.pop(str(key), None)


def test_wrapper_calls_the_users_signatures() -> None:
    store = wrappers.as_context_store(StrictSignatureStore())
    store.set(("row", 1), {"a": 1})
    assert store.get(("row", 1), {"d": 1}) == {"a": 1}
    assert store.get(("row", 2), {"d": 1}) == {"d": 1}
    assert store.list_keys(("row",)) == [("row", 1)]


def test_wrapper_returns_listed_keys_as_given() -> None:
    inner = StringKeyStore()
    adapter = PandasContextAdapter(pd.DataFrame({"A": [1]}), inner)
    adapter.add_context(("column", "A"), {"a": 1})
    assert adapter.list_context_keys() == ["('column', 'A')"]
    assert adapter.count_context() == 1
    assert adapter.count_context(("column",)) == 0  # a string key is under no tuple prefix
    assert adapter.clear_context() == 1
    assert inner._store == {}


def test_wrapper_is_applied_only_when_needed() -> None:
    memory = InMemoryContextStore()
    assert wrappers.as_context_store(memory) is memory
    wrapped = wrappers.as_context_store(OriginStore())
    assert isinstance(wrapped, BaseContextStore)
    assert wrappers.as_context_store(wrapped) is wrapped
    with pytest.raises(TypeError, match="delete, list_keys"):
        wrappers.as_context_store({})


def test_wrapper_refuses_bad_keys_and_the_reserved_kind() -> None:
    inner = OriginStore()
    store = wrappers.as_context_store(inner)
    with pytest.raises(UnsupportedKeyError):
        store.set(["row", 1], {"a": 1})
    with pytest.raises(ContextKeyError, match="__namespace__"):
        store.set(("__namespace__", "x", "k"), {"a": 1})
    assert inner._store == {}


def test_wrapper_normalises_keys_for_the_users_store() -> None:
    np = pytest.importorskip("numpy")
    inner = OriginStore()
    store = wrappers.as_context_store(inner)
    store.set(("row", np.int64(3)), {"a": 1})
    assert list(inner._store) == [("row", 3)]
    assert type(next(iter(inner._store))[1]) is int


def test_wrapper_atomic_updates_across_adapters_of_one_store(df: pd.DataFrame) -> None:
    inner = OriginStore()
    adapters = [PandasContextAdapter(df, inner) for _ in range(4)]
    barrier = threading.Barrier(4)

    def work(adapter: PandasContextAdapter) -> None:
        barrier.wait()
        for _ in range(300):
            adapter.increment_context(("row", 0), "n")
            adapter.update_context(("row", 0), {f"t{id(adapter)}": 1})

    threads = [threading.Thread(target=work, args=(a,)) for a in adapters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inner._store[("row", 0)]["n"] == 1200
    assert len(inner._store[("row", 0)]) == 5


def test_one_lock_per_store_even_when_it_is_unhashable() -> None:
    @dataclasses.dataclass
    class DataclassStore:  # eq=True makes it unhashable
        data: dict = dataclasses.field(default_factory=dict)

        def set(self, key: Any, value: dict) -> None:
            self.data[key] = value

        def get(self, key: Any) -> dict | None:
            return self.data.get(key)

        def delete(self, key: Any) -> None:
            self.data.pop(key, None)

        def list_keys(self) -> list[Any]:
            return list(self.data)

    inner = DataclassStore()
    first, second = wrappers.as_context_store(inner), wrappers.as_context_store(inner)
    assert first._lock is second._lock
    assert wrappers.as_context_store(DataclassStore())._lock is not first._lock


def test_wrapper_pickles_with_the_users_store() -> None:
    store = wrappers.as_context_store(OriginStore(), max_value_size=100).with_namespace("a")
    store.set("k", {"a": 1})
    clone = pickle.loads(pickle.dumps(store))
    assert clone.namespace == "a" and clone.max_value_size == 100
    assert clone.get("k") == {"a": 1}


def test_wrapper_closes_the_users_store_only_when_it_owns_it() -> None:
    class Closing(OriginStore):
        closed_calls = 0

        def close(self) -> None:
            self.closed_calls += 1

    inner = Closing()
    adapter = PandasContextAdapter(pd.DataFrame({"A": [1]}), inner)
    adapter.close()
    assert inner.closed_calls == 0  # a store passed in stays open
    wrappers.as_context_store(inner).close()
    assert inner.closed_calls == 1


def test_wrapper_reports_a_broken_get() -> None:
    class Broken(OriginStore):
        def get(self, key: Any) -> Any:
            return "not a dict"

    store = wrappers.as_context_store(Broken())
    with pytest.raises(ContextStoreError, match=r"Broken\.get"):
        store.get("k")


def test_buffer_and_cache_wrap_a_four_method_store(df: pd.DataFrame) -> None:
    inner = OriginStore()
    adapter = PandasContextAdapter(df, inner, buffer=100, cache=100)
    adapter.add_context(("row", 0), {"a": 1})
    assert adapter.get_context(("row", 0)) == {"a": 1}
    adapter.flush()
    assert inner._store == {("row", 0): {"a": 1}}
    from context_framework.wrappers import BufferedStore, CachedStore

    buffered = BufferedStore(OriginStore())
    buffered.set("k", {"a": 1})
    buffered.flush()
    assert buffered.get("k") == {"a": 1}
    assert CachedStore(OriginProtocolStore()).count() == 0


def test_checkpoint_and_mpi_take_a_four_method_store(tmp_path: Path) -> None:
    from context_framework.checkpoint import export_store, import_store

    source, target = OriginStore(), OriginStore()
    wrappers.as_context_store(source).set_many([(("row", i), {"i": i}) for i in range(3)])
    assert export_store(source, tmp_path / "ctx.jsonl") == 3
    assert import_store(tmp_path / "ctx.jsonl", target) == 3
    assert target._store == source._store
    mpi = pytest.importorskip("mpi4py.MPI")
    from context_framework.mpi import MPIContext

    with MPIContext(target, mpi.COMM_SELF) as ctx:
        ctx.add(("row", 7), {"a": 1})
    assert target._store[("__namespace__", "MPI_COMM_SELF", ("rank", 0, "row", 7))] == {"a": 1}


def test_a_data_frame_with_set_and_get_columns_is_data() -> None:
    frame = pd.DataFrame({"set": [1], "get": [2], "delete": [3], "list_keys": [4]})
    adapter = BaseContextAdapter(frame)
    assert adapter.data is frame
    assert isinstance(adapter.context_store, InMemoryContextStore)


# --------------------------------------------------------------------------- the conformance suite


class TestFourMethodStoreConformance(StoreTests):
    """``StoreTests`` against the origin's dict store, wrapped."""

    shares_data_when_pickled = False  # pickling sends a copy of the dict
    # A dict holds 1, 1.0 and True (and equal instants) as one key.
    type_exact_keys = False

    def make_store(self, **options: Any) -> BaseContextStore:
        return wrappers.as_context_store(OriginStore(), **options)


class EncodedKeyStore(OriginStore):
    """Four methods keeping keys type-exact, as docs/custom-store.md recommends."""

    def set(self, key: Any, value: dict) -> None:
        self._store[encode_key(key)] = value

    def get(self, key: Any) -> Optional[dict]:  # noqa: UP045
        return self._store.get(encode_key(key))

    def delete(self, key: Any) -> None:
        self._store.pop(encode_key(key), None)

    def list_keys(self) -> List[Any]:  # noqa: UP006
        return [decode_key(k) for k in self._store]


class TestEncodedKeyStoreConformance(StoreTests):
    """The whole suite, type-exact keys included, on a four-method store that encodes keys."""

    shares_data_when_pickled = False

    def make_store(self, **options: Any) -> BaseContextStore:
        return wrappers.as_context_store(EncodedKeyStore(), **options)


TestEncodedKeyStoreStateMachine = make_state_machine_test(
    lambda: wrappers.as_context_store(EncodedKeyStore())
)


# --------------------------------------------------------------------------- the documentation's examples

DOCS = Path(__file__).resolve().parent.parent / "docs"


def run_doc(name: str) -> dict[str, Any]:
    """Run every Python block of ``docs/<name>`` in order as one module; return its namespace.

    The module is registered in ``sys.modules`` so that its classes pickle.
    """
    text = (DOCS / name).read_text(encoding="utf-8")
    module = types.ModuleType(f"docs_{name.removesuffix('.md').replace('-', '_')}")
    sys.modules[module.__name__] = module
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        exec(compile(block, str(DOCS / name), "exec"), module.__dict__)
    return module.__dict__


_store_doc = run_doc("custom-store.md")
_adapter_doc = run_doc("custom-adapter.md")

# The conformance suite exactly as docs/custom-store.md runs it.
TestDocDictStore = _store_doc["TestDictStore"]
TestDocSQLiteStore = _store_doc["TestSQLiteStore"]
TestDocSQLiteStoreStateMachine = _store_doc["TestSQLiteStoreStateMachine"]


def test_store_doc_data_lands_in_the_users_store() -> None:
    store = _store_doc["store"]
    assert store._store[("row", 1)] == {"qc": "ok", "note": "re-run", "reviews": 1}


def test_adapter_doc_example_validates() -> None:
    adapter = _adapter_doc["adapter"]
    with pytest.raises(ContextKeyError, match="not found on chromosome"):
        adapter.get_context(("gene", "chr7", "BRCA1"))
    assert adapter.data is _adapter_doc["genome"]
    assert adapter.get_context(("gene", "chr17", "BRCA1")) == {"reviewed": True}
