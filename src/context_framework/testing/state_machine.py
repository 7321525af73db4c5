"""``StoreStateMachine``: random operations on a store, checked against a dict model.

Hypothesis drives ``set``, ``get``, ``delete``, ``exists``, ``set_many``,
``get_many``, ``delete_many``, ``update``, ``increment``, ``count``,
``list_keys``, ``items`` and ``clear`` (with and without prefixes) and
switches between the root namespace and two sub-namespaces; after every step
the store must agree with a plain ``dict`` model keyed by the encoded key
(so ``("row", 1)``, ``("row", 1.0)`` and ``("row", True)`` stay distinct).
Keys come from a small typed universe so that look-alike keys collide.

One line gives a store a ``unittest.TestCase`` that pytest collects::

    from context_framework.testing import make_state_machine_test

    TestMyStoreStateMachine = make_state_machine_test(lambda: MyStore(url))

``make_store`` is called once per example and must return a fresh, empty
store; the machine clears the namespaces it used and then calls
``cleanup(store)`` (default: ``store.close()``).
"""

from __future__ import annotations

import copy
import json
import unittest
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ..base_store import BaseContextStore
from ..exceptions import ContextValueError
from ..keys import encode_key, normalize_key

__all__ = [
    "KEYS",
    "NAMESPACES",
    "PREFIXES",
    "StoreStateMachine",
    "make_state_machine_test",
    "run_state_machine",
]

#: A small universe of typed keys: many are equal in Python but distinct as keys.
KEYS: tuple[Any, ...] = (
    *[("row", i) for i in range(4)],
    *[("row", str(i)) for i in range(4)],
    ("row", True),
    ("row", False),
    ("row", 1.0),
    ("row", None),
    ("row", 1, "col", "a"),
    ("col", "a"),
    ("rows", 1),
    ("row\x00", 1),
    "row",
    ("row",),
    None,
    b"x",
    1,
    (("row", 1), "x"),
    (("row",), 2),
    (("row", None), 3),
)

#: Prefixes for count/list_keys/items/clear (``None`` and ``()`` select everything).
PREFIXES: tuple[Any, ...] = (
    None,
    (),
    ("row",),
    ("row", 1),
    ("row", "1"),
    ("row", True),
    ("row", None),
    ("col",),
    ("rows",),
    (("row", 1),),
    (("row",),),
)

#: Namespaces the machine switches between ("" is the store it was given).
NAMESPACES: tuple[str, ...] = ("", "a", "b")

_FIELDS = ("a", "b", "n")
# Floats exactly representable in binary and decimal, so every backend adds them alike.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10),
    st.sampled_from([0.5, -2.25, 3.0, 1e20]),
    st.text(alphabet="xy\u00e9\U0001f600", max_size=3),
)
_field_values = st.one_of(
    _scalars,
    st.lists(_scalars, max_size=3),
    st.dictionaries(st.sampled_from(["x", "y"]), _scalars, max_size=2),
)
_values = st.dictionaries(st.sampled_from(_FIELDS), _field_values, max_size=3)
_keys = st.sampled_from(KEYS)
_prefixes = st.sampled_from(PREFIXES)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)


def _typed(key: Any) -> Any:
    t = type(key)
    if t is tuple:
        return ("tuple", tuple(_typed(p) for p in key))
    if t is float:
        return ("float", key.hex())
    return (t.__name__, key)


def _under(key: Any, prefix: Any) -> bool:
    """Whether ``key`` starts with the elements of ``prefix`` (computed element-wise)."""
    if not prefix:
        return True
    if type(key) is not tuple or len(key) < len(prefix):
        return False
    return all(encode_key((a,)) == encode_key((b,)) for a, b in zip(key, prefix, strict=False))


class StoreStateMachine(RuleBasedStateMachine):
    """Random operations on ``make_store()`` checked against a dict model after every step."""

    def make_store(self) -> BaseContextStore:
        """Return a fresh, empty store (set by :func:`make_state_machine_test`)."""
        raise NotImplementedError("subclass StoreStateMachine and implement make_store()")

    def cleanup_store(self, store: BaseContextStore) -> None:
        """Release ``store`` after an example (its namespaces are already cleared)."""
        store.close()

    def __init__(self) -> None:
        super().__init__()
        self.root = self.make_store()
        self.namespace = ""
        self.store = self.root
        # namespace -> {encoded key: (normalised key, value)}
        self.model: dict[str, dict[bytes, tuple[Any, dict[str, Any]]]] = {ns: {} for ns in NAMESPACES}
        for ns in NAMESPACES:
            view = self._view(ns)
            assert view.count() == 0, f"make_store() must return an empty store; {ns!r} is not"

    def _view(self, ns: str) -> BaseContextStore:
        return self.root.with_namespace(ns) if ns else self.root

    def teardown(self) -> None:
        root = getattr(self, "root", None)
        if root is None:
            return
        try:
            if not root.closed:
                for ns in NAMESPACES:
                    self._view(ns).clear()
        finally:
            self.cleanup_store(root)

    # ------------------------------------------------------------------ model helpers

    @property
    def data(self) -> dict[bytes, tuple[Any, dict[str, Any]]]:
        return self.model[self.namespace]

    def expected(self, key: Any) -> dict[str, Any] | None:
        entry = self.data.get(encode_key(key))
        return None if entry is None else entry[1]

    def check_value(self, got: Any, expected: dict[str, Any] | None, what: str) -> None:
        if expected is None:
            assert got is None, f"{what}: expected nothing, got {got!r}"
        else:
            assert type(got) is dict, f"{what}: expected {expected!r}, got {got!r}"
            assert _canon(got) == _canon(expected), f"{what}: expected {expected!r}, got {got!r}"

    def keys_under(self, prefix: Any) -> Counter[Any]:
        return Counter(_typed(k) for k, _ in self.data.values() if _under(k, prefix))

    def put(self, key: Any, value: dict[str, Any]) -> None:
        self.data[encode_key(key)] = (normalize_key(key), copy.deepcopy(value))

    # ------------------------------------------------------------------ rules

    @rule(ns=st.sampled_from(NAMESPACES))
    def switch_namespace(self, ns: str) -> None:
        # A new view every time: views of one namespace share the backend's data.
        self.namespace = ns
        self.store = self._view(ns)

    @rule(key=_keys, value=_values)
    def set(self, key: Any, value: dict[str, Any]) -> None:
        given = copy.deepcopy(value)
        self.store.set(key, given)
        given["mutated"] = True  # must not reach the store
        for v in given.values():
            if isinstance(v, (list, dict)):
                v.clear()
        self.put(key, value)

    @rule(key=_keys)
    def get(self, key: Any) -> None:
        got = self.store.get(key)
        self.check_value(got, self.expected(key), f"get({key!r})")
        if got is not None:
            got["mutated"] = True  # must not reach the store

    @rule(key=_keys)
    def exists(self, key: Any) -> None:
        expected = encode_key(key) in self.data
        assert self.store.exists(key) is expected
        assert (key in self.store) is expected

    @rule(key=_keys)
    def delete(self, key: Any) -> None:
        expected = self.data.pop(encode_key(key), None) is not None
        assert self.store.delete(key) is expected, f"delete({key!r})"

    @rule(pairs=st.lists(st.tuples(_keys, _values), max_size=5), as_mapping=st.booleans())
    def set_many(self, pairs: list[tuple[Any, dict[str, Any]]], as_mapping: bool) -> None:
        items: Any = dict(pairs) if as_mapping else list(pairs)
        self.store.set_many(copy.deepcopy(items))
        for key, value in items.items() if as_mapping else items:
            self.put(key, value)

    @rule(keys=st.lists(_keys, max_size=6))
    def get_many(self, keys: list[Any]) -> None:
        got = self.store.get_many(keys)
        assert isinstance(got, list) and len(got) == len(keys)
        for key, value in zip(keys, got, strict=True):
            self.check_value(value, self.expected(key), f"get_many(...{key!r}...)")

    @rule(keys=st.lists(_keys, max_size=6))
    def delete_many(self, keys: list[Any]) -> None:
        expected = 0
        for key in keys:
            if self.data.pop(encode_key(key), None) is not None:
                expected += 1
        assert self.store.delete_many(keys) == expected, f"delete_many({keys!r})"

    @rule(key=_keys, patch=_values)
    def update(self, key: Any, patch: dict[str, Any]) -> None:
        current = self.expected(key)
        merged = {**current, **patch} if current is not None else dict(patch)
        got = self.store.update(key, copy.deepcopy(patch))
        self.check_value(got, merged, f"update({key!r}, {patch!r})")
        got["mutated"] = True  # must not reach the store
        self.put(key, merged)

    @rule(key=_keys, field=st.sampled_from(_FIELDS), by=st.sampled_from([1, -3, 0.5, 2]))
    def increment(self, key: Any, field: str, by: Any) -> None:
        current = self.expected(key)
        old = (current or {}).get(field, 0)
        if isinstance(old, bool) or not isinstance(old, (int, float)):
            try:
                self.store.increment(key, field, by)
            except ContextValueError:
                return
            raise AssertionError(f"increment({key!r}, {field!r}) of {old!r} did not raise")
        result = self.store.increment(key, field, by)
        new = old + by
        assert type(result) is type(new) and result == new, f"increment: {result!r} != {new!r}"
        self.put(key, {**(current or {}), field: new})

    @rule(prefix=_prefixes)
    def count(self, prefix: Any) -> None:
        assert self.store.count(prefix) == sum(self.keys_under(prefix).values())

    @rule(prefix=_prefixes)
    def list_keys(self, prefix: Any) -> None:
        keys = self.store.list_keys(prefix)
        assert Counter(_typed(k) for k in keys) == self.keys_under(prefix), f"prefix {prefix!r}"

    @rule(prefix=_prefixes)
    def items(self, prefix: Any) -> None:
        seen: Counter[Any] = Counter()
        for key, value in self.store.items(prefix):
            seen[_typed(key)] += 1
            self.check_value(value, self.expected(key), f"items({prefix!r}) at {key!r}")
        assert seen == self.keys_under(prefix)

    @rule(prefix=_prefixes)
    def clear(self, prefix: Any) -> None:
        doomed = [enc for enc, (k, _) in self.data.items() if _under(k, prefix)]
        for enc in doomed:
            del self.data[enc]
        assert self.store.clear(prefix) == len(doomed), f"clear({prefix!r})"

    # ------------------------------------------------------------------ invariant

    @invariant()
    def agrees_with_model(self) -> None:
        got = {encode_key(k): v for k, v in self.store.items()}
        assert len(got) == self.store.count()
        want = self.data
        assert set(got) == set(want), (
            f"namespace {self.namespace!r}: store has {sorted(got)!r}, model {sorted(want)!r}"
        )
        for enc, (_, value) in want.items():
            self.check_value(got[enc], value, f"namespace {self.namespace!r}")


def _settings(max_examples: int, stateful_step_count: int, **kwargs: Any) -> settings:
    kwargs.setdefault("deadline", None)
    kwargs.setdefault("suppress_health_check", [HealthCheck.too_slow])
    return settings(max_examples=max_examples, stateful_step_count=stateful_step_count, **kwargs)


def _machine_for(
    make_store: Callable[[], BaseContextStore],
    cleanup: Callable[[BaseContextStore], None] | None,
) -> type[StoreStateMachine]:
    name = getattr(make_store, "__name__", "store")
    if not name.isidentifier() or name == "<lambda>":
        name = "store"
    body: dict[str, Any] = {"make_store": lambda self: make_store()}
    if cleanup is not None:
        body["cleanup_store"] = lambda self, store: cleanup(store)
    return type(f"StoreStateMachine_{name}", (StoreStateMachine,), body)


def make_state_machine_test(
    make_store: Callable[[], BaseContextStore],
    *,
    cleanup: Callable[[BaseContextStore], None] | None = None,
    max_examples: int = 50,
    stateful_step_count: int = 30,
    **settings_kwargs: Any,
) -> type[unittest.TestCase]:
    """A ``unittest.TestCase`` running :class:`StoreStateMachine` on ``make_store()`` stores.

    ``settings_kwargs`` go to ``hypothesis.settings`` (``deadline=None`` by default).
    """
    machine = _machine_for(make_store, cleanup)
    case = machine.TestCase
    case.settings = _settings(max_examples, stateful_step_count, **settings_kwargs)
    return case


def run_state_machine(
    make_store: Callable[[], BaseContextStore],
    *,
    cleanup: Callable[[BaseContextStore], None] | None = None,
    max_examples: int = 50,
    stateful_step_count: int = 30,
    **settings_kwargs: Any,
) -> None:
    """Run :class:`StoreStateMachine` on ``make_store()`` stores now (e.g. inside a test)."""
    run_state_machine_as_test(
        _machine_for(make_store, cleanup),
        settings=_settings(max_examples, stateful_step_count, **settings_kwargs),
    )
