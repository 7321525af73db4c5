"""InMemoryContextStore: the conformance suite, the state machine, and in-memory specifics."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from typing import Any

import pytest

from context_framework import InMemoryContextStore, open_store
from context_framework.base_store import BaseContextStore
from context_framework.testing import StoreTests, make_state_machine_test


class TestInMemoryStore(StoreTests):
    shares_data_when_pickled = False  # pickling sends a snapshot

    def make_store(self, **options: Any) -> BaseContextStore:
        return InMemoryContextStore(**options)


TestInMemoryStoreStateMachine = make_state_machine_test(InMemoryContextStore)


class TestInMemoryStoreViaUrl(TestInMemoryStore):
    """The same suite on a store opened by URL, bound to a namespace."""

    def make_store(self, **options: Any) -> BaseContextStore:
        return open_store("memory://?namespace=tenant/one", **options)

    def test_url_namespace(self, store: BaseContextStore) -> None:
        assert store.namespace == "tenant/one"
        assert store.with_namespace("a").namespace == "tenant/one/a"


# --------------------------------------------------------------------------- pickling


def test_pickle_is_a_snapshot() -> None:
    store = InMemoryContextStore(max_value_size=1000)
    store.set(("row", 1), {"v": [1]})
    store.with_namespace("a").set(("row", 1), {"v": "a"})
    clone = pickle.loads(pickle.dumps(store))
    assert type(clone) is InMemoryContextStore
    assert clone.max_value_size == 1000
    assert clone.get(("row", 1)) == {"v": [1]}
    assert clone.with_namespace("a").get(("row", 1)) == {"v": "a"}
    # later writes on either side stay on that side
    store.set(("row", 2), {"v": 2})
    clone.set(("row", 3), {"v": 3})
    clone.update(("row", 1), {"w": 1})
    assert clone.get(("row", 2)) is None
    assert store.get(("row", 3)) is None
    assert store.get(("row", 1)) == {"v": [1]}
    assert clone.get(("row", 1)) == {"v": [1], "w": 1}
    # closing one leaves the other open
    clone.close()
    assert store.get(("row", 2)) == {"v": 2}


def test_pickle_of_a_view_keeps_its_namespace_and_the_others() -> None:
    store = InMemoryContextStore()
    view = store.with_namespace("a/b")
    view.set("k", {"v": 1})
    store.set("k", {"v": "root"})
    clone = pickle.loads(pickle.dumps(view))
    assert clone.namespace == "a/b"
    assert clone.get("k") == {"v": 1}
    assert clone.count() == 1


def test_pickle_round_trip_of_nested_values_does_not_alias() -> None:
    store = InMemoryContextStore()
    store.set("k", {"nested": {"list": [1, 2]}})
    clone = pickle.loads(pickle.dumps(store))
    got = clone.get("k")
    got["nested"]["list"].append(3)
    assert clone.get("k") == {"nested": {"list": [1, 2]}}
    assert store.get("k") == {"nested": {"list": [1, 2]}}


# --------------------------------------------------------------------------- concurrency


def race(*actions: Callable[[], Any]) -> None:
    """Run ``actions`` in threads released together."""
    barrier = threading.Barrier(len(actions))

    def run(action: Callable[[], Any]) -> None:
        barrier.wait()
        action()

    threads = [threading.Thread(target=run, args=(a,)) for a in actions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.parametrize("fixed", [{"a": 0}, {"a": 0, "nested": [0]}], ids=["flat", "nested"])
def test_set_racing_update_is_serialisable(fixed: dict[str, Any]) -> None:
    """A lock-free set racing a locked update ends in a state of some serial order."""
    store = InMemoryContextStore()
    for i in range(300):
        key = ("race", i)
        store.set(key, {"a": -1, "old": True})
        race(lambda k=key: store.set(k, fixed), lambda k=key: store.update(k, {"b": 1}))
        set_then_update = {**fixed, "b": 1}
        update_then_set = fixed
        assert store.get(key) in (set_then_update, update_then_set)


def test_set_racing_increment_is_serialisable() -> None:
    store = InMemoryContextStore()
    for i in range(300):
        key = ("race", i)
        store.set(key, {"n": 100})
        race(
            lambda k=key: store.set(k, {"n": 0, "s": "x"}),
            lambda k=key: store.increment(k, "n", 5),
        )
        assert store.get(key) in ({"n": 5, "s": "x"}, {"n": 0, "s": "x"})


def test_set_racing_update_on_absent_key_loses_nothing() -> None:
    store = InMemoryContextStore()
    for i in range(300):
        key = ("absent", i)
        race(lambda k=key: store.set(k, {"s": 1}), lambda k=key: store.update(k, {"u": 1}))
        assert store.get(key) in ({"s": 1, "u": 1}, {"s": 1})


def test_delete_racing_update_is_serialisable() -> None:
    store = InMemoryContextStore()
    for i in range(300):
        key = ("gone", i)
        store.set(key, {"a": 1})
        race(lambda k=key: store.delete(k), lambda k=key: store.update(k, {"u": 1}))
        assert store.get(key) in (None, {"u": 1})


def test_views_share_one_lock_for_atomic_updates() -> None:
    store = InMemoryContextStore()
    views = [store.with_namespace("a") for _ in range(4)]
    barrier = threading.Barrier(len(views))

    def work(view: InMemoryContextStore) -> None:
        barrier.wait()
        for _ in range(500):
            view.increment("k", "n")

    threads = [threading.Thread(target=work, args=(v,)) for v in views]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.with_namespace("a").get("k") == {"n": 2000}


# --------------------------------------------------------------------------- internals worth pinning


def test_flat_and_nested_entries_read_back_the_same() -> None:
    store = InMemoryContextStore()
    store.set(("row", 1), {"a": 1})
    store.update(("row", 1), {"list": [1, {"x": None}]})
    assert store.get(("row", 1)) == {"a": 1, "list": [1, {"x": None}]}
    store.update(("row", 1), {"list": 0})
    assert store.get(("row", 1)) == {"a": 1, "list": 0}
    assert store.increment(("row", 1), "list") == 1
    assert list(store.items()) == [(("row", 1), {"a": 1, "list": 1})]


def test_tuple_subclass_keys_are_the_plain_tuple() -> None:
    from collections import namedtuple

    point = namedtuple("point", "x y")
    store = InMemoryContextStore()
    store.set(point(1, 2), {"v": 1})
    assert store.get((1, 2)) == {"v": 1}
    assert store.exists(point(1, 2))
    assert store.list_keys() == [(1, 2)]
    assert type(store.list_keys()[0]) is tuple
    store.set((1, 2), {"v": 2})
    assert store.count() == 1
    assert store.delete(point(1, 2)) is True


def test_repr() -> None:
    store = InMemoryContextStore()
    assert repr(store) == "InMemoryContextStore(memory)"
    assert repr(store.with_namespace("a")) == "InMemoryContextStore(memory, namespace='a')"
    store.close()
    assert repr(store) == "InMemoryContextStore(memory, closed)"


def test_pickling_a_closed_store_raises() -> None:
    from context_framework.exceptions import ContextStoreClosedError

    store = InMemoryContextStore()
    store.close()
    with pytest.raises(ContextStoreClosedError):
        pickle.dumps(store)
