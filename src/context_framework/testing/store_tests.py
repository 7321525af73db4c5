# The suite passes wrong types on purpose (bad keys, values, batches):
# mypy: disable-error-code="arg-type,list-item,index"
"""``StoreTests``: the conformance suite every context store subclasses.

Protocol (modelled on zarr-python's ``StoreTests`` and dogpile.cache's
generic backend tests)::

    from context_framework.testing import StoreTests

    class TestMyStore(StoreTests):
        shares_data_when_pickled = True          # False if pickling sends a snapshot

        def make_store(self, **options):         # options: e.g. max_value_size=...
            return MyStore(dsn, namespace=f"t-{uuid.uuid4().hex}", **options)

        def reopen_store(self, store):           # optional: persistence tests
            return MyStore(dsn, namespace=store.namespace,
                           max_value_size=store.max_value_size)

        def cleanup_store(self, store):          # optional: drop what a test left
            ...

* ``make_store(**options)`` must return a fresh, **empty** store (for a shared
  server: a fresh namespace, or a freshly emptied database) and pass every
  keyword in ``options`` (at least ``max_value_size``) to the store.
* ``reopen_store(store)`` returns a *new* instance over the same data and
  namespace. The default skips the tests that need it (in-memory stores).
* ``cleanup_store(store)`` runs after each test for every store the test
  opened (``store`` fixture, ``self.open_store()``, ``self.track()``). The
  default clears the store's namespace and the sub-namespaces the suite uses
  (``SUITE_NAMESPACES``) when the store is still open, then closes it.
  Server-backed stores that use a fresh namespace per test may override it
  to drop that namespace even after a test closed the store.
* ``sync(store)``: makes ``store``'s writes visible to another instance
  before the suite reads them there; the default calls ``store.flush()`` when
  the store has one (write-behind wrappers), else does nothing.
* ``shares_data_when_pickled``: whether ``pickle.loads(pickle.dumps(store))``
  sees the same data (a store pickled by configuration) or a snapshot.
* ``type_exact_keys``: whether keys that Python finds equal (``1``, ``1.0``
  and ``True``; one instant at two UTC offsets) stay distinct keys, as on
  every store of this package. ``False`` for a store that holds them as one
  (a ``dict`` keyed by the key itself, e.g. a four-method store wrapped by
  :func:`~context_framework.wrappers.as_context_store`): the tests that need
  them apart are skipped.
* ``thread_count``, ``increments_per_thread``, ``updates_per_thread`` and
  ``large_batch_size`` size the concurrency and batch tests.

Each test uses the ``store`` fixture (one fresh store from ``make_store()``)
or ``self.open_store(**options)`` for more. Tests only use the public API,
compare metadata by its JSON form (``1``, ``1.0`` and ``True`` differ; dict
order does not matter) and keys by their encoding and types.
"""

from __future__ import annotations

import enum
import json
import os
import pickle
import threading
import uuid
from collections import Counter, OrderedDict, namedtuple
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any, ClassVar

import pytest

from ..base_store import BaseContextStore, ContextStore
from ..exceptions import (
    ContextConfigurationError,
    ContextError,
    ContextSerializationError,
    ContextStoreClosedError,
    ContextStoreError,
    ContextValueError,
    ContextValueTooLargeError,
    UnsupportedKeyError,
)
from ..keys import encode_key, normalize_key
from ..values import dumps_json

__all__ = ["StoreTests", "canon", "typed_key"]


# --------------------------------------------------------------------------- helpers


def canon(value: Any) -> str:
    """Canonical JSON text of ``value``: type-exact (``1``/``1.0``/``True`` differ), order-free."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)


def assert_value(actual: Any, expected: Any) -> None:
    """``actual`` is a dict equal to ``expected`` with exactly the same JSON types."""
    assert type(actual) is dict, f"expected a dict, got {type(actual).__name__} {actual!r:.200}"
    assert canon(actual) == canon(expected), f"{actual!r:.500} != {expected!r:.500}"


def typed_key(key: Any) -> Any:
    """A structural, type-exact description of a (normalised) key, for comparisons."""
    t = type(key)
    if t is tuple:
        return ("tuple", tuple(typed_key(p) for p in key))
    if t is float:
        return ("float", "nan" if key != key else key.hex())
    if t is datetime:
        return ("datetime", key.isoformat(), key.utcoffset())
    return (t.__name__, key)


def key_set(keys: Any) -> Counter[Any]:
    """Multiset of type-exact key descriptions (order-free comparison of key lists)."""
    return Counter(typed_key(k) for k in keys)


def expected_key_set(keys: Any) -> Counter[Any]:
    return Counter(typed_key(normalize_key(k)) for k in keys)


class _Color(enum.Enum):
    RED = "red"


class _StrEnum(str, enum.Enum):
    A = "a"


class _IntEnum(enum.IntEnum):
    ONE = 1


_Point = namedtuple("_Point", "x y")

_UTC2 = timezone(timedelta(hours=2))
_MINUS_0530 = timezone(-timedelta(hours=5, minutes=30))

#: Keys that are all different on every store although Python finds many equal.
DISTINCT_KEYS: list[Any] = [
    ("row", 1),
    ("row", "1"),
    ("row", True),
    ("row", 1.0),
    ("row", 0),
    ("row", False),
    ("row", 0.0),
    ("row", -5),
    ("row", 2**70),
    ("row", -(2**70)),
    ("row", None),
    ("row", b"1"),
    ("row",),
    "row",
    ("rows", 1),
    ("row", 1, "column", "A"),
    ("row", ("a", 1)),
    ("row", ("a", (1, None))),
    (("row", 1),),
    (),
    ("",),
    "",
    1,
    True,
    1.0,
    (1,),
    None,
    b"row",
    b"",
    ("unicode", "h\u00e9llo \u2713 \U0001f600"),
    ("nul", "a\x00b"),
    datetime(2024, 1, 2, 3, 4, 5, 6),
    datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc),
    datetime(2024, 1, 2, 5, 4, 5, 6, tzinfo=_UTC2),  # same instant, another offset
    ("t", datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=_MINUS_0530)),
    date(2024, 1, 2),
    ("d", date(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)),
]

#: JSON-compatible values that every store must give back exactly.
SAMPLE_VALUES: list[dict[str, Any]] = [
    {},
    {"s": "text", "i": 42, "f": 3.5, "t": True, "fa": False, "n": None},
    {"nested": {"a": [1, 2, {"b": [None, True, "x", 1.5]}], "empty": {}, "el": []}},
    {
        "unicode": "h\u00e9llo w\u00f6rld \u2713 \U0001f600 \u4e2d\u6587",
        "\u043a\u043b\u044e\u0447": "\u0437\u043d",
        "\U0001f600": "emoji key",
    },
    {"max_u64": 2**64 - 1, "max_i64": 2**63 - 1, "min_i64": -(2**63), "zero": 0, "neg": -1},
    {"one_float": 1.0, "one_int": 1, "true": True, "floats": [0.1, -2.5, 1e-7, 123456789.125]},
    {"extreme": [1e308, -1e308, 1.7976931348623157e308, 5e-324, 2.2250738585072014e-308]},
    {"escapes": 'a "quoted" \\ back\\slash\nnewline\ttab\r', "ctrl": "\x01\x1f\x7f", "": "empty key"},
    {"list_of_dicts": [{"a": i, "b": [i, str(i)]} for i in range(50)]},
    {"long": "x" * 20_000, "long_unicode": "\u00e9" * 5_000},
]


# Writes for test_check_write_raises_what_set_raises (the store has max_value_size=100).
WRITE_CHECKS: list[tuple[str, Any, Any]] = [
    ("valid", ("row", 1), {"a": 1}),
    ("valid nested", ("row", 2), {"a": [1, {"b": None}]}),
    ("not a dict", ("row", 3), [("a", 1)]),
    ("bad value", ("row", 4), {"a": {1, 2}}),
    ("nan", ("row", 5), {"a": float("nan")}),
    ("over max_value_size", ("row", 6), {"a": "x" * 200}),
    ("bad key", ("row", ["a"]), {"a": 1}),
    ("lone surrogate key", ("row", "a\ud800"), {"a": 1}),
    ("bad key and bad value", ("row", ["a"]), {"a": {1}}),
    ("3 KB key", ("row", "k" * 3000), {"a": 1}),
    ("3 KB key and bad value", ("row", "k" * 3000), {"a": {1}}),
    ("70 KB key", ("k" * 70_000,), {"a": 1}),
    ("255-byte int in the key", ("row", 2 ** (8 * 255) - 1), {"a": 1}),
]


def _outcome(call: Callable[..., Any], *args: Any) -> tuple[str, str] | None:
    """``None`` if ``call(*args)`` returns, else the type and message of what it raised."""
    try:
        call(*args)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return None


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for i in range(depth):
        value = {"level": i, "child": value, "list": [i, [str(i)]]}
    return value


class _Boom:
    """An arbitrary object: not JSON-compatible, not a key."""

    def __repr__(self) -> str:
        return "<Boom>"


#: (id, value) pairs that every store must refuse with ContextSerializationError.
BAD_VALUES: list[tuple[str, Any]] = [
    ("set", {"s": {1, 2}}),
    ("frozenset", {"s": frozenset()}),
    ("bytes", {"b": b"x"}),
    ("bytearray", {"b": bytearray(b"x")}),
    ("nan", {"f": float("nan")}),
    ("inf", {"f": float("inf")}),
    ("-inf", {"f": float("-inf")}),
    ("nested_nan", {"a": [1, {"f": float("nan")}]}),
    ("int_key", {1: "x"}),
    ("nested_int_key", {"a": {2: "x"}}),
    ("none_key", {None: "x"}),
    ("tuple_key", {("a",): "x"}),
    ("int_too_big", {"i": 2**64}),
    ("int_too_small", {"i": -(2**63) - 1}),
    ("nested_int_too_big", {"a": [2**80]}),
    ("object", {"o": _Boom()}),
    ("enum", {"e": _Color.RED}),
    ("decimal", {"d": Decimal("1.5")}),
    ("complex", {"c": 1j}),
    ("nested_set", {"a": {"b": [1, {"c": {3}}]}}),
    ("top_list", [("a", 1)]),
    ("top_str", "metadata"),
    ("top_none", None),
    ("top_int", 42),
    ("top_bytes", b"{}"),
    ("top_set", {"a"}),
]

#: (id, key) pairs that every store must refuse with UnsupportedKeyError.
BAD_KEYS: list[tuple[str, Any]] = [
    ("list", ["row", 1]),
    ("list_in_tuple", ("row", [1])),
    ("set_in_tuple", ("row", {1})),
    ("frozenset", frozenset({"row"})),
    ("dict", {"row": 1}),
    ("dict_in_tuple", ("row", {"a": 1})),
    ("object", _Boom()),
    ("object_in_nested_tuple", ("row", ("a", _Boom()))),
    ("enum", _Color.RED),
    ("sub_second_offset", datetime(2024, 1, 1, tzinfo=timezone(timedelta(seconds=1, microseconds=5)))),
]


class StoreTests:
    """Conformance suite for a context store. See the module docstring for the protocol."""

    #: Whether a pickled-and-unpickled store sees (and shares) the original's data.
    shares_data_when_pickled: ClassVar[bool] = True
    #: Whether keys Python finds equal (1, 1.0, True) stay distinct (see the module docstring).
    type_exact_keys: ClassVar[bool] = True
    #: Sizes of the concurrency and batch tests (lower them only for very slow backends).
    thread_count: ClassVar[int] = 4
    increments_per_thread: ClassVar[int] = 500
    updates_per_thread: ClassVar[int] = 100
    large_batch_size: ClassVar[int] = 5_000
    #: Sub-namespaces the suite writes to (the default cleanup clears them).
    SUITE_NAMESPACES: ClassVar[tuple[str, ...]] = ("a", "b", "a/b", "a/b/c")

    # ------------------------------------------------------------------ the protocol

    def make_store(self, **options: Any) -> BaseContextStore:
        """Return a fresh, empty store; pass ``options`` (e.g. ``max_value_size``) to it."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_store(**options)")

    def reopen_store(self, store: BaseContextStore) -> BaseContextStore:
        """Return a new instance over the same data as ``store`` (skips by default)."""
        pytest.skip(f"{type(self).__name__} does not implement reopen_store (no persistence)")

    def sync(self, store: BaseContextStore) -> None:
        """Make ``store``'s writes visible to other instances (a write buffer flushes)."""
        flush = getattr(store, "flush", None)
        if flush is not None:
            flush()

    def cleanup_store(self, store: BaseContextStore) -> None:
        """Remove what a test left in ``store`` and close it."""
        if store.closed:
            return
        try:
            for name in self.SUITE_NAMESPACES:
                store.with_namespace(name).clear()
            store.clear()
        finally:
            store.close()

    # ------------------------------------------------------------------ fixtures and helpers

    @pytest.fixture(autouse=True)
    def _opened_stores(self) -> Iterator[None]:
        self._opened: list[BaseContextStore] = []
        yield
        opened, self._opened = self._opened, []
        errors = []
        for store in reversed(opened):
            try:
                self.cleanup_store(store)
            except Exception as exc:  # keep cleaning the others
                errors.append(exc)
        if errors:
            raise errors[0]

    @pytest.fixture
    def store(self, _opened_stores: None) -> BaseContextStore:
        """A fresh, empty store from :meth:`make_store`, cleaned up after the test."""
        return self.open_store()

    def open_store(self, **options: Any) -> BaseContextStore:
        """``make_store(**options)``, cleaned up after the test."""
        return self.track(self.make_store(**options))

    def track(self, store: BaseContextStore) -> BaseContextStore:
        """Clean ``store`` up (``cleanup_store``) after the test."""
        self._opened.append(store)
        return store

    def true_row_key(self) -> Any:
        """``("row", True)``, which Python finds equal to ``("row", 1)``; ``("row", "true")``
        for a store that holds such keys as one (``type_exact_keys = False``)."""
        return ("row", True) if self.type_exact_keys else ("row", "true")

    def needs_type_exact_keys(self) -> None:
        """Skip the calling test when the store holds keys Python finds equal as one."""
        if not self.type_exact_keys:
            pytest.skip(f"{type(self).__name__} holds keys that Python finds equal as one (type_exact_keys)")

    @staticmethod
    def snapshot(store: BaseContextStore) -> list[tuple[bytes, str]]:
        """Everything in ``store``'s namespace, comparable."""
        return sorted((encode_key(k), canon(v)) for k, v in store.items())

    # ================================================================== basics

    def test_make_store_gives_an_empty_store(self, store: BaseContextStore) -> None:
        assert store.count() == 0
        assert store.list_keys() == []
        assert not store.closed
        assert isinstance(store, ContextStore)
        assert isinstance(store.namespace, str)

    def test_repr(self, store: BaseContextStore) -> None:
        name = type(store).__name__
        assert name in repr(store)
        view = store.with_namespace("a")
        assert name in repr(view)
        assert isinstance(str(store), str)
        view.close()
        assert name in repr(view)
        store.close()
        assert name in repr(store)

    # ================================================================== values

    @pytest.mark.parametrize("index", range(len(SAMPLE_VALUES)))
    def test_value_round_trip(self, store: BaseContextStore, index: int) -> None:
        value = SAMPLE_VALUES[index]
        store.set(("row", index), value)
        assert_value(store.get(("row", index)), value)

    def test_deeply_nested_value_round_trip(self, store: BaseContextStore) -> None:
        value = _deep(40)
        store.set("deep", value)
        assert_value(store.get("deep"), value)

    def test_nul_character_in_values(self, store: BaseContextStore) -> None:
        value = {"nul": "a\x00b", "list": ["\x00"], "key\x00": 1}
        store.set("nul", value)
        assert_value(store.get("nul"), value)

    def test_lone_surrogate_in_value_is_refused(self, store: BaseContextStore) -> None:
        store.set("k", {"s": "kept"})
        for bad in ({"s": "a\ud800b"}, {"a\udfff": 1}, {"l": ["ok", "\ud800"]}, {"s": "é\ud800"}):
            with pytest.raises(ContextSerializationError, match="surrogate"):
                store.set("k", bad)
            with pytest.raises(ContextSerializationError, match="surrogate"):
                store.set_many([("k2", {"x": 1}), ("k", bad)])
        assert store.get("k") == {"s": "kept"}
        assert store.get("k2") is None
        store.set("k", {"s": "été ✓ 𝄞"})  # valid non-ASCII text is fine
        assert store.get("k") == {"s": "été ✓ 𝄞"}

    def test_set_replaces(self, store: BaseContextStore) -> None:
        store.set("k", {"a": 1, "b": 2})
        store.set("k", {"c": 3})
        assert_value(store.get("k"), {"c": 3})
        assert store.count() == 1

    def test_get_missing(self, store: BaseContextStore) -> None:
        assert store.get(("row", 1)) is None
        sentinel = object()
        assert store.get(("row", 1), sentinel) is sentinel
        assert store.get(("row", 1), default={"d": 1}) == {"d": 1}
        store.set(("row", 1), {"a": 1})
        assert_value(store.get(("row", 1), sentinel), {"a": 1})
        assert store.get(("row", 2)) is None

    def test_documented_value_conversions(self, store: BaseContextStore) -> None:
        when = datetime(2024, 5, 6, 7, 8, 9, 123456)
        aware = datetime(2024, 5, 6, 7, 8, 9, tzinfo=_UTC2)
        uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
        given = {
            "tuple": (1, (2, 3), []),
            "mapping": MappingProxyType({"a": (1,)}),
            "ordered": OrderedDict([("z", 1), ("a", 2)]),
            "datetime": when,
            "aware": aware,
            "date": date(2024, 5, 6),
            "time": time(7, 8, 9),
            "uuid": uid,
            "str_enum": _StrEnum.A,
            "int_enum": _IntEnum.ONE,
            "namedtuple": _Point(1, 2),
            "list": [when, (None,)],
        }
        expected = {
            "tuple": [1, [2, 3], []],
            "mapping": {"a": [1]},
            "ordered": {"z": 1, "a": 2},
            "datetime": when.isoformat(),
            "aware": aware.isoformat(),
            "date": "2024-05-06",
            "time": "07:08:09",
            "uuid": str(uid),
            "str_enum": "a",
            "int_enum": 1,
            "namedtuple": [1, 2],
            "list": [when.isoformat(), [None]],
        }
        store.set("conv", given)
        assert_value(store.get("conv"), expected)
        store.set_many([("conv2", given)])
        assert_value(store.get("conv2"), expected)
        assert_value(store.update("conv3", given), expected)
        assert_value(store.get("conv3"), expected)
        # a Mapping at the top level is accepted too
        store.set("proxy", MappingProxyType({"a": (1, 2)}))
        assert_value(store.get("proxy"), {"a": [1, 2]})

    def test_numpy_and_pandas_value_conversions(self, store: BaseContextStore) -> None:
        np = pytest.importorskip("numpy")
        pd = pytest.importorskip("pandas")
        given = {
            "i64": np.int64(7),
            "u8": np.uint8(255),
            "f32": np.float32(0.5),
            "f64": np.float64(0.1),
            "bool": np.bool_(True),
            "str": np.str_("s"),
            "array": np.array([[1, 2], [3, 4]]),
            "ts": pd.Timestamp("2024-01-02 03:04:05"),
            "series": pd.Series([1.5, 2.5]),
        }
        expected = {
            "i64": 7,
            "u8": 255,
            "f32": 0.5,
            "f64": 0.1,
            "bool": True,
            "str": "s",
            "array": [[1, 2], [3, 4]],
            "ts": "2024-01-02T03:04:05",
            "series": [1.5, 2.5],
        }
        store.set("np", given)
        assert_value(store.get("np"), expected)
        for bad in (np.float64("nan"), pd.NaT, pd.NA, np.datetime64("NaT"), np.array([np.inf])):
            with pytest.raises(ContextSerializationError):
                store.set("np", {"bad": bad})
        assert_value(store.get("np"), expected)

    @pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=[n for n, _ in BAD_VALUES])
    def test_bad_value_is_refused_and_changes_nothing(
        self, store: BaseContextStore, name: str, value: Any
    ) -> None:
        store.set("k", {"before": 1})
        store.set("other", {"x": [1, 2]})
        before = self.snapshot(store)
        with pytest.raises(ContextSerializationError):
            store.set("k", value)
        with pytest.raises(ContextSerializationError):
            store.set("new", value)
        with pytest.raises(ContextSerializationError):
            store.set_many([("new", {"ok": 1}), ("k", value)])
        with pytest.raises(ContextSerializationError):
            store.update("k", value)
        with pytest.raises(ContextSerializationError):
            store.update("new", value)
        assert self.snapshot(store) == before
        assert store.count() == 2
        assert store.get("new") is None

    def test_open_file_is_refused(self, store: BaseContextStore) -> None:
        store.set("k", {"before": 1})
        with open(os.devnull) as handle, pytest.raises(ContextSerializationError):
            store.set("k", {"file": handle})
        assert_value(store.get("k"), {"before": 1})

    def test_self_referencing_value_is_refused(self, store: BaseContextStore) -> None:
        value: dict[str, Any] = {"a": 1}
        value["self"] = value
        with pytest.raises(ContextSerializationError):
            store.set("k", value)
        assert store.count() == 0

    def test_serialization_error_names_the_path(self, store: BaseContextStore) -> None:
        with pytest.raises(ContextSerializationError) as info:
            store.set("k", {"outer": {"inner": [0, {1, 2}]}})
        assert "['outer']['inner'][1]" in str(info.value)
        assert isinstance(info.value, TypeError)
        assert isinstance(info.value, ContextError)

    # ================================================================== size limit

    def test_max_value_size(self) -> None:
        store = self.open_store(max_value_size=100)
        assert store.max_value_size == 100
        store.set("k", {"small": "x"})
        with pytest.raises(ContextValueTooLargeError):
            store.set("k", {"big": "x" * 200})
        with pytest.raises(ContextValueTooLargeError):
            store.set("k", {"nested": ["x" * 50, {"y": "x" * 60}]})
        with pytest.raises(ContextValueTooLargeError):
            store.set_many([("a", {"ok": 1}), ("b", {"big": "x" * 200})])
        with pytest.raises(ContextSerializationError):  # the parent class
            store.set("k", {"big": "x" * 200})
        assert_value(store.get("k"), {"small": "x"})
        assert store.count() == 1

    def test_max_value_size_boundary_counts_utf8_bytes(self) -> None:
        store = self.open_store(max_value_size=64)
        # {"s":"..."} is 8 bytes of JSON around the text; é is 2 bytes, the emoji 4.
        for filler in ("x", "\u00e9", "\U0001f600"):
            width = len(filler.encode("utf-8"))
            n = (64 - 8) // width
            exact = {"s": filler * n}
            assert len(dumps_json(exact).encode("utf-8")) <= 64
            store.set("k", exact)
            assert_value(store.get("k"), exact)
            over = {"s": filler * (n + 1)}
            assert len(dumps_json(over).encode("utf-8")) > 64
            with pytest.raises(ContextValueTooLargeError):
                store.set("k", over)
            assert_value(store.get("k"), exact)
        exact = {"s": "x" * 56}
        assert len(dumps_json(exact)) == 64
        store.set("exact", exact)
        with pytest.raises(ContextValueTooLargeError):
            store.set("exact", {"s": "x" * 57})

    def test_default_max_value_size_is_one_mib_and_none_disables_it(self) -> None:
        store = self.open_store()
        big = {"s": "x" * (1 << 20)}
        with pytest.raises(ContextValueTooLargeError):
            store.set("big", big)
        assert store.get("big") is None
        unlimited = self.open_store(max_value_size=None)
        unlimited.set("big", big)
        assert unlimited.get("big") == big

    def test_bad_max_value_size_is_refused(self) -> None:
        for bad in (0, -1, "10", 1.5):
            with pytest.raises(ContextConfigurationError):
                self.open_store(max_value_size=bad)

    def test_update_respects_max_value_size(self) -> None:
        store = self.open_store(max_value_size=100)
        store.set("k", {"a": "x" * 60})
        with pytest.raises(ContextValueTooLargeError):
            store.update("k", {"b": "y" * 60})
        assert_value(store.get("k"), {"a": "x" * 60})
        with pytest.raises(ContextValueTooLargeError):
            store.update("new", {"b": "y" * 200})
        assert store.get("new") is None

    # ================================================================== aliasing

    def test_no_aliasing_after_set(self, store: BaseContextStore) -> None:
        value: dict[str, Any] = {"flat": 1, "list": [1, [2]], "dict": {"x": {"y": 1}}}
        store.set("k", value)
        value["flat"] = 2
        value["new"] = True
        value["list"].append(3)
        value["list"][1].append(4)
        value["dict"]["x"]["y"] = 2
        assert_value(store.get("k"), {"flat": 1, "list": [1, [2]], "dict": {"x": {"y": 1}}})
        flat = {"a": 1}
        store.set("flat", flat)
        flat["a"] = 2
        assert_value(store.get("flat"), {"a": 1})

    def test_no_aliasing_from_get(self, store: BaseContextStore) -> None:
        store.set("k", {"flat": 1, "list": [1, [2]], "dict": {"x": {"y": 1}}})
        store.set("flat", {"a": 1})
        for key in ("k", "flat"):
            got = store.get(key)
            again = store.get(key)
            assert got is not again
            got["added"] = 1
        got = store.get("k")
        got["list"].append(3)
        got["list"][1].append(4)
        got["dict"]["x"]["y"] = 2
        assert_value(store.get("k"), {"flat": 1, "list": [1, [2]], "dict": {"x": {"y": 1}}})
        assert_value(store.get("flat"), {"a": 1})

    def test_no_aliasing_in_batches_update_and_items(self, store: BaseContextStore) -> None:
        value: dict[str, Any] = {"list": [1], "n": 0}
        store.set_many({"a": value, "b": value})
        value["list"].append(2)
        first, second, third = store.get_many(["a", "a", "b"])
        assert first is not second
        assert first is not None and third is not None
        first["list"].append(3)
        third["n"] = 5
        for _, got in store.items():
            got["list"].append(9)
        merged = store.update("a", {"m": {"z": 1}})
        merged["m"]["z"] = 2
        merged["list"].append(4)
        assert_value(store.get("a"), {"list": [1], "n": 0, "m": {"z": 1}})
        assert_value(store.get("b"), {"list": [1], "n": 0})
        patch: dict[str, Any] = {"p": [1]}
        store.update("b", patch)
        patch["p"].append(2)
        assert_value(store.get("b"), {"list": [1], "n": 0, "p": [1]})

    # ================================================================== keys

    def test_typed_keys_stay_distinct(self, store: BaseContextStore) -> None:
        self.needs_type_exact_keys()
        for i, key in enumerate(DISTINCT_KEYS):
            store.set(key, {"i": i})
        assert store.count() == len(DISTINCT_KEYS)
        for i, key in enumerate(DISTINCT_KEYS):
            assert_value(store.get(key), {"i": i})
            assert store.exists(key)
        assert key_set(store.list_keys()) == expected_key_set(DISTINCT_KEYS)
        assert key_set(store.scan()) == expected_key_set(DISTINCT_KEYS)
        by_key = {encode_key(k): v for k, v in store.items()}
        for i, key in enumerate(DISTINCT_KEYS):
            assert_value(by_key[encode_key(key)], {"i": i})
        # deleting one leaves its look-alikes
        assert store.delete(("row", 1)) is True
        assert store.get(("row", 1)) is None
        for key in (("row", True), ("row", 1.0), ("row", "1")):
            assert store.get(key) is not None
        assert store.count() == len(DISTINCT_KEYS) - 1

    def test_keys_round_trip_with_types(self, store: BaseContextStore) -> None:
        self.needs_type_exact_keys()
        for key in DISTINCT_KEYS:
            store.set(key, {"k": 1})
        for key in store.list_keys():
            # each key listed gets back its own value, and is of the exact normalised type
            assert typed_key(key) == typed_key(normalize_key(key))
            assert store.get(key) is not None
        aware = [k for k in store.list_keys() if type(k) is datetime and k.tzinfo is not None]
        assert sorted(str(k.utcoffset()) for k in aware) == ["0:00:00", "2:00:00"]

    def test_key_normalisation(self, store: BaseContextStore) -> None:
        store.set(("row", _StrEnum.A), {"v": "enum"})
        assert_value(store.get(("row", "a")), {"v": "enum"})
        store.set(("row", _IntEnum.ONE), {"v": "int-enum"})
        assert_value(store.get(("row", 1)), {"v": "int-enum"})
        store.set(_Point(1, 2), {"v": "namedtuple"})
        assert_value(store.get((1, 2)), {"v": "namedtuple"})
        store.set(("nan", float("nan")), {"v": "nan"})
        assert_value(store.get(("nan", -float("nan"))), {"v": "nan"})
        assert store.count() == 4
        listed = key_set(store.list_keys())
        assert listed == Counter(
            [
                typed_key(("row", "a")),
                typed_key(("row", 1)),
                typed_key((1, 2)),
                ("tuple", (("str", "nan"), ("float", "nan"))),
            ]
        )

    def test_numpy_and_pandas_keys_are_normalised(self, store: BaseContextStore) -> None:
        np = pytest.importorskip("numpy")
        pd = pytest.importorskip("pandas")
        store.set(("row", np.int64(3)), {"v": "i64"})
        store.set(("row", np.float32(1.5)), {"v": "f32"})
        store.set(("row", np.bool_(True)), {"v": "bool"})
        store.set(("col", np.str_("A")), {"v": "str"})
        store.set(("ts", pd.Timestamp("2024-01-02 03:04:05")), {"v": "ts"})
        store.set(("dt64", np.datetime64("2024-01-02T03:04:05")), {"v": "dt64"})
        assert_value(store.get(("row", 3)), {"v": "i64"})
        assert_value(store.get(("row", 1.5)), {"v": "f32"})
        assert_value(store.get(("row", True)), {"v": "bool"})
        assert_value(store.get(("col", "A")), {"v": "str"})
        assert_value(store.get(("ts", datetime(2024, 1, 2, 3, 4, 5))), {"v": "ts"})
        assert_value(store.get(("dt64", datetime(2024, 1, 2, 3, 4, 5))), {"v": "dt64"})
        assert key_set(store.list_keys()) == key_set(
            [
                ("row", 3),
                ("row", 1.5),
                ("row", True),
                ("col", "A"),
                ("ts", datetime(2024, 1, 2, 3, 4, 5)),
                ("dt64", datetime(2024, 1, 2, 3, 4, 5)),
            ]
        )
        with pytest.raises(UnsupportedKeyError):
            store.set(("ts", pd.Timestamp("2024-01-02 03:04:05.000000001")), {"v": 1})
        with pytest.raises(UnsupportedKeyError):
            store.set(("ts", pd.NaT), {"v": 1})
        assert store.count() == 6

    @pytest.mark.parametrize(("name", "key"), BAD_KEYS, ids=[n for n, _ in BAD_KEYS])
    def test_bad_key_is_refused_and_changes_nothing(
        self, store: BaseContextStore, name: str, key: Any
    ) -> None:
        store.set(("row", 1), {"before": 1})
        before = self.snapshot(store)
        with pytest.raises(UnsupportedKeyError) as info:
            store.set(key, {"a": 1})
        assert isinstance(info.value, ContextError)
        assert isinstance(info.value, KeyError)
        with pytest.raises(UnsupportedKeyError):
            store.set_many([(("row", 2), {"ok": 1}), (key, {"a": 1})])
        for op in (
            lambda: store.get(key),
            lambda: store.delete(key),
            lambda: store.exists(key),
            lambda: store.update(key, {"a": 1}),
            lambda: store.increment(key, "n"),
            lambda: store.get_many([("row", 1), key]),
            lambda: store.delete_many([("row", 1), key]),
        ):
            with pytest.raises(UnsupportedKeyError):
                op()
        assert self.snapshot(store) == before

    def test_unencodable_str_and_int_parts_are_refused(self, store: BaseContextStore) -> None:
        # Strings with lone surrogates and integers over 255 bytes have no encoding.
        for key in (
            ("row", "a\ud800b"),
            "\udcff",
            ("row", 2 ** (8 * 255)),
            -(2 ** (8 * 255)),
            ("row", ("nested", 2**2048)),
        ):
            with pytest.raises(UnsupportedKeyError):
                store.set(key, {"a": 1})
            with pytest.raises(UnsupportedKeyError):
                store.set_many([(key, {"a": 1})])
            with pytest.raises(UnsupportedKeyError):
                store.update(key, {"a": 1})
        assert store.count() == 0
        store.set(("row", 2 ** (8 * 255) - 1), {"largest": True})
        assert store.list_keys() == [("row", 2 ** (8 * 255) - 1)]

    def test_unsupported_key_error_names_the_part(self, store: BaseContextStore) -> None:
        with pytest.raises(UnsupportedKeyError) as info:
            store.set(("row", ["a"]), {"a": 1})
        assert "['a']" in str(info.value)
        assert "tuple" in str(info.value)

    # ================================================================== checking writes

    @pytest.mark.parametrize(("name", "key", "value"), WRITE_CHECKS, ids=[n for n, _, _ in WRITE_CHECKS])
    def test_check_write_raises_what_set_raises(self, name: str, key: Any, value: Any) -> None:
        """``check_write(key, value)`` raises exactly what ``set`` raises (type and message)
        for that key and value, and writes nothing."""
        store = self.open_store(max_value_size=100)
        check = getattr(store, "check_write", None)
        if check is None:
            pytest.skip(f"{type(store).__name__} has no check_write")
        checked = _outcome(check, key, value)
        assert store.count() == 0
        written = _outcome(store.set, key, value)
        assert checked == written

    # ================================================================== delete / exists

    def test_delete(self, store: BaseContextStore) -> None:
        store.set(("row", 1), {"a": 1})
        assert store.delete(("row", 1)) is True
        assert store.delete(("row", 1)) is False
        assert store.delete(("never", "there")) is False
        assert store.get(("row", 1)) is None
        assert store.count() == 0

    def test_exists_and_contains(self, store: BaseContextStore) -> None:
        assert not store.exists(("row", 1))
        assert ("row", 1) not in store
        store.set(("row", 1), {})
        assert store.exists(("row", 1))
        assert ("row", 1) in store
        if self.type_exact_keys:
            assert ("row", True) not in store
            assert ("row", 1.0) not in store
        assert ("row", "1") not in store
        assert_value(store.get(("row", 1)), {})

    # ================================================================== batches

    def test_set_many_mapping_and_pairs(self, store: BaseContextStore) -> None:
        true = self.true_row_key()
        store.set_many({("row", 1): {"a": 1}, ("row", "1"): {"a": "1"}})
        store.set_many([(("row", 2), {"a": 2}), (true, {"a": True})])
        store.set_many((("row", i), {"i": i}) for i in range(10, 13))  # a generator
        store.set_many([])
        store.set_many({})
        assert store.count() == 7
        assert_value(store.get(("row", 1)), {"a": 1})
        assert_value(store.get(("row", "1")), {"a": "1"})
        assert_value(store.get(true), {"a": True})
        assert_value(store.get(("row", 12)), {"i": 12})

    def test_set_many_duplicates_last_wins(self, store: BaseContextStore) -> None:
        store.set_many([("k", {"v": 1}), ("other", {"v": 0}), ("k", {"v": 2})])
        assert_value(store.get("k"), {"v": 2})
        assert store.count() == 2

    def test_set_many_bad_item_stores_nothing(self, store: BaseContextStore) -> None:
        store.set("k", {"before": 1})
        before = self.snapshot(store)
        with pytest.raises(ContextSerializationError):
            store.set_many([("a", {"ok": 1}), ("k", {"ok": 2}), ("b", {"bad": {1}}), ("c", {})])
        with pytest.raises(ContextSerializationError):
            store.set_many({"a": {"ok": 1}, "b": {"bad": float("nan")}})
        with pytest.raises(ContextSerializationError):
            store.set_many([("a", {"ok": 1}), ("not a pair",)])  # type: ignore[list-item]
        with pytest.raises(UnsupportedKeyError):
            store.set_many([("a", {"ok": 1}), (["bad", "key"], {"ok": 1})])
        assert self.snapshot(store) == before

    def test_get_many(self, store: BaseContextStore) -> None:
        store.set_many([(("row", i), {"i": i}) for i in range(5)])
        keys = [("row", 3), ("row", 99), ("row", 0), ("row", 3), self.true_row_key(), ("row", 1)]
        got = store.get_many(keys)
        assert isinstance(got, list)
        assert len(got) == len(keys)
        assert got[1] is None
        assert got[4] is None
        for (_, i), value in zip(keys, got, strict=True):
            if value is not None:
                assert_value(value, {"i": i})
        assert got[0] is not got[3]
        assert store.get_many([]) == []
        assert store.get_many(iter([("row", 2)])) == [{"i": 2}]

    def test_delete_many(self, store: BaseContextStore) -> None:
        store.set_many([(("row", i), {"i": i}) for i in range(5)])
        assert store.delete_many([("row", 0), ("row", 0), ("row", 99), self.true_row_key()]) == 1
        assert store.delete_many(iter([("row", 1), ("row", 2)])) == 2
        assert store.delete_many([]) == 0
        assert key_set(store.list_keys()) == key_set([("row", 3), ("row", 4)])

    # ================================================================== scan / count / clear

    PREFIX_KEYS: ClassVar[list[Any]] = [
        ("row", 1),
        ("row", 2),
        ("row", "x"),
        ("row", True),
        ("row", 1.0),
        ("row", None),
        ("row", 1, "column", "A"),
        ("row", 1, "column", "B"),
        ("row", "1", "column", "A"),
        ("row",),
        ("rows", 1),
        ("ro",),
        ("row\x00", 1),
        ("column", "A"),
        (("row", 1), "n"),
        (("row", 1, None), "m"),
        "row",
        None,
        1,
    ]

    def _fill_prefix_keys(self, store: BaseContextStore) -> None:
        store.set_many([(k, {"i": i}) for i, k in enumerate(self.PREFIX_KEYS)])

    def _prefix_index(self, key: Any) -> int:
        """Position of ``key`` in PREFIX_KEYS, by type-exact identity (not ``==``)."""
        wanted = encode_key(key)
        return next(i for i, k in enumerate(self.PREFIX_KEYS) if encode_key(k) == wanted)

    @pytest.mark.parametrize(
        ("prefix", "expected"),
        [
            (
                ("row",),
                [
                    ("row", 1),
                    ("row", 2),
                    ("row", "x"),
                    ("row", True),
                    ("row", 1.0),
                    ("row", None),
                    ("row", 1, "column", "A"),
                    ("row", 1, "column", "B"),
                    ("row", "1", "column", "A"),
                    ("row",),
                ],
            ),
            (("row", 1), [("row", 1), ("row", 1, "column", "A"), ("row", 1, "column", "B")]),
            (("row", 1, "column"), [("row", 1, "column", "A"), ("row", 1, "column", "B")]),
            (("row", "1"), [("row", "1", "column", "A")]),
            (("row", True), [("row", True)]),
            (("row", 1.0), [("row", 1.0)]),
            (("row", None), [("row", None)]),
            (("rows",), [("rows", 1)]),
            (("row\x00",), [("row\x00", 1)]),
            ((("row", 1),), [(("row", 1), "n")]),
            (("column", "A"), [("column", "A")]),
            (("nothing",), []),
        ],
        ids=lambda v: repr(v) if isinstance(v, tuple) else "",
    )
    def test_prefix_selects_exactly(
        self, store: BaseContextStore, prefix: tuple[Any, ...], expected: list[Any]
    ) -> None:
        self.needs_type_exact_keys()
        self._fill_prefix_keys(store)
        assert key_set(store.list_keys(prefix)) == key_set(expected)
        assert key_set(store.scan(prefix)) == key_set(expected)
        assert store.count(prefix) == len(expected)
        items = list(store.items(prefix))
        assert key_set(k for k, _ in items) == key_set(expected)
        for key, value in items:
            assert_value(value, {"i": self._prefix_index(key)})
        assert store.count() == len(self.PREFIX_KEYS)

    def test_empty_prefix_selects_everything(self, store: BaseContextStore) -> None:
        self.needs_type_exact_keys()
        self._fill_prefix_keys(store)
        everything = key_set(self.PREFIX_KEYS)
        for prefix in (None, ()):
            assert key_set(store.list_keys(prefix)) == everything
            assert key_set(store.scan(prefix)) == everything
            assert store.count(prefix) == len(self.PREFIX_KEYS)
            assert key_set(k for k, _ in store.items(prefix)) == everything
        assert key_set(store.list_keys()) == everything
        assert store.count() == len(self.PREFIX_KEYS)

    def test_prefix_does_not_match_continued_elements(self, store: BaseContextStore) -> None:
        # A NUL inside the last prefix element, or a None inside a nested tuple, is
        # escaped as 00 FF: such keys share the prefix's bytes but not its elements.
        keys = [
            ("a", 1),
            ("a\x00", 1.0),
            ("a\x00",),
            ("a\x00b", "c"),
            (b"a", 2),
            (b"a\x00", 2),
            (("a",), 1),
            (("a", None), 1),
            (("a", None, "b"),),
        ]
        store.set_many([(k, {"i": i}) for i, k in enumerate(keys)])
        assert key_set(store.list_keys(("a",))) == key_set([("a", 1)])
        assert store.count(("a",)) == 1
        assert key_set(store.list_keys(("a\x00",))) == key_set([("a\x00", 1.0), ("a\x00",)])
        assert key_set(store.list_keys((b"a",))) == key_set([(b"a", 2)])
        assert key_set(store.list_keys((("a",),))) == key_set([(("a",), 1)])
        assert key_set(store.list_keys((("a", None),))) == key_set([(("a", None), 1)])
        assert store.clear(("a",)) == 1
        assert store.count() == len(keys) - 1

    def test_prefix_must_be_a_tuple(self, store: BaseContextStore) -> None:
        store.set(("row", 1), {"a": 1})
        for bad in ("row", ["row"], 1, b"row"):
            with pytest.raises(UnsupportedKeyError):
                store.list_keys(bad)  # type: ignore[arg-type]
            with pytest.raises(UnsupportedKeyError):
                list(store.scan(bad))  # type: ignore[arg-type]
            with pytest.raises(UnsupportedKeyError):
                store.count(bad)  # type: ignore[arg-type]
            with pytest.raises(UnsupportedKeyError):
                list(store.items(bad))  # type: ignore[arg-type]
            with pytest.raises(UnsupportedKeyError):
                store.clear(bad)  # type: ignore[arg-type]
        with pytest.raises(UnsupportedKeyError):
            store.list_keys(("row", ["x"]))
        assert store.count() == 1

    def test_scan_with_normalised_prefix(self, store: BaseContextStore) -> None:
        store.set(("row", 1, "c"), {"a": 1})
        store.set(("row", True, "c"), {"a": 2})
        assert key_set(store.list_keys(("row", _IntEnum.ONE))) == key_set([("row", 1, "c")])
        assert store.count((_StrEnum.A,)) == 0

    def test_clear(self, store: BaseContextStore) -> None:
        self.needs_type_exact_keys()
        self._fill_prefix_keys(store)
        total = len(self.PREFIX_KEYS)
        assert store.clear(("row", 1)) == 3
        assert store.count() == total - 3
        assert store.get(("row", 1)) is None
        assert_value(store.get(("row", True)), {"i": self._prefix_index(("row", True))})
        assert store.clear(("nothing",)) == 0
        assert store.clear(("row",)) == 7
        assert store.count(("row",)) == 0
        assert store.count() == total - 10
        assert store.clear() == total - 10
        assert store.count() == 0
        assert store.list_keys() == []
        assert store.clear() == 0
        store.set("again", {"a": 1})
        assert store.clear(()) == 1

    # ================================================================== update

    def test_update(self, store: BaseContextStore) -> None:
        merged = store.update("k", {"a": 1, "nested": {"x": 1}})
        assert_value(merged, {"a": 1, "nested": {"x": 1}})
        assert_value(store.get("k"), {"a": 1, "nested": {"x": 1}})
        merged = store.update("k", {"b": (2, 3), "nested": {"y": 2}})
        # shallow: "nested" is replaced, not merged
        assert_value(merged, {"a": 1, "b": [2, 3], "nested": {"y": 2}})
        assert_value(store.get("k"), {"a": 1, "b": [2, 3], "nested": {"y": 2}})
        assert_value(store.update("k", {}), {"a": 1, "b": [2, 3], "nested": {"y": 2}})
        assert_value(store.update("k", {"a": None}), {"a": None, "b": [2, 3], "nested": {"y": 2}})
        assert_value(store.update("empty", {}), {})
        assert store.exists("empty")
        assert store.count() == 2

    def test_update_validates_the_patch(self, store: BaseContextStore) -> None:
        store.set("k", {"a": 1})
        for bad in ({"s": {1}}, {"f": float("inf")}, {1: "x"}, [("a", 1)], None, "a"):
            with pytest.raises(ContextSerializationError):
                store.update("k", bad)  # type: ignore[arg-type]
            with pytest.raises(ContextSerializationError):
                store.update("new", bad)  # type: ignore[arg-type]
        assert_value(store.get("k"), {"a": 1})
        assert store.count() == 1

    # ================================================================== increment

    def test_increment(self, store: BaseContextStore) -> None:
        result = store.increment("k", "n")
        assert result == 1 and type(result) is int
        assert_value(store.get("k"), {"n": 1})
        result = store.increment("k", "n", 5)
        assert result == 6 and type(result) is int
        result = store.increment("k", "n", -10)
        assert result == -4 and type(result) is int
        result = store.increment("k", "f", 0.5)
        assert result == 0.5 and type(result) is float
        result = store.increment("k", "f", 2)
        assert result == 2.5 and type(result) is float
        result = store.increment("k", "n", 0.25)
        assert result == -3.75 and type(result) is float
        assert_value(store.get("k"), {"n": -3.75, "f": 2.5})

    def test_increment_keeps_other_fields(self, store: BaseContextStore) -> None:
        store.set("k", {"name": "x", "tags": ["a"], "n": 10})
        assert store.increment("k", "n", 3) == 13
        assert store.increment("k", "m") == 1
        assert_value(store.get("k"), {"name": "x", "tags": ["a"], "n": 13, "m": 1})

    def test_increment_errors_leave_value_unchanged(self, store: BaseContextStore) -> None:
        value = {"s": "text", "b": True, "none": None, "list": [1], "d": {"x": 1}, "n": 1}
        store.set("k", value)
        for field in ("s", "b", "none", "list", "d"):
            with pytest.raises(ContextValueError):
                store.increment("k", field)
        for by in (True, False, "1", None, float("nan"), float("inf"), [1]):
            with pytest.raises(ContextValueError):
                store.increment("k", "n", by)  # type: ignore[arg-type]
            with pytest.raises(ContextValueError):
                store.increment("new", "n", by)  # type: ignore[arg-type]
        with pytest.raises(ContextValueError):
            store.increment("k", 1)  # type: ignore[arg-type]
        assert_value(store.get("k"), value)
        assert store.get("new") is None
        assert store.count() == 1

    def test_increment_out_of_range_is_a_value_error(self, store: BaseContextStore) -> None:
        store.set("k", {"big": 2**64 - 1, "low": -(2**63), "f": 1.7e308})
        for field, by in (("big", 1), ("low", -1), ("f", 1.7e308)):
            with pytest.raises(ContextValueError, match=field):
                store.increment("k", field, by)
        assert_value(store.get("k"), {"big": 2**64 - 1, "low": -(2**63), "f": 1.7e308})
        assert store.increment("k", "big", -1) == 2**64 - 2

    # ================================================================== namespaces

    def test_namespaces_are_isolated(self, store: BaseContextStore) -> None:
        a = store.with_namespace("a")
        b = store.with_namespace("b")
        base = store.namespace
        assert a.namespace == (f"{base}/a" if base else "a")
        assert b.namespace == (f"{base}/b" if base else "b")
        assert type(a) is type(store)
        key = ("row", 1)
        store.set(key, {"ns": "root"})
        a.set(key, {"ns": "a"})
        b.set(key, {"ns": "b"})
        a.set(("only", "a"), {"x": 1})
        assert_value(store.get(key), {"ns": "root"})
        assert_value(a.get(key), {"ns": "a"})
        assert_value(b.get(key), {"ns": "b"})
        assert store.count() == 1 and a.count() == 2 and b.count() == 1
        assert key_set(store.list_keys()) == key_set([key])
        assert key_set(a.list_keys()) == key_set([key, ("only", "a")])
        assert store.get(("only", "a")) is None and b.get(("only", "a")) is None
        assert not b.exists(("only", "a"))
        assert a.delete(key) is True
        assert store.exists(key) and b.exists(key)
        assert a.clear() == 1
        assert store.count() == 1 and b.count() == 1
        assert store.clear() == 1
        assert b.count() == 1

    def test_nested_namespaces(self, store: BaseContextStore) -> None:
        a = store.with_namespace("a")
        ab = a.with_namespace("b")
        same = store.with_namespace("a/b")
        assert ab.namespace == same.namespace
        assert ab.namespace.endswith("a/b")
        abc = ab.with_namespace("c")
        ab.set("k", {"v": "a/b"})
        abc.set("k", {"v": "a/b/c"})
        assert_value(same.get("k"), {"v": "a/b"})
        assert a.get("k") is None and a.count() == 0
        assert ab.count() == 1 and abc.count() == 1
        assert store.count() == 0
        assert ab.clear() == 1
        assert abc.count() == 1

    def test_views_of_one_namespace_share_data(self, store: BaseContextStore) -> None:
        first = store.with_namespace("a")
        second = store.with_namespace("a")
        first.set("k", {"a": 1})
        assert_value(second.get("k"), {"a": 1})
        second.update("k", {"b": 2})
        assert_value(first.get("k"), {"a": 1, "b": 2})
        first.increment("k", "n")
        assert second.increment("k", "n") == 2
        second.set_many([("x", {}), ("y", {})])
        assert first.count() == 3
        assert first.delete_many(["x", "y"]) == 2
        assert second.count() == 1

    def test_namespace_views_support_every_operation(self, store: BaseContextStore) -> None:
        view = store.with_namespace("a")
        view.set_many([(("row", i), {"i": i}) for i in range(3)])
        assert [v and v["i"] for v in view.get_many([("row", 2), ("row", 0)])] == [2, 0]
        assert view.count(("row",)) == 3
        assert key_set(view.scan(("row",))) == key_set([("row", i) for i in range(3)])
        assert_value(view.update(("row", 0), {"u": 1}), {"i": 0, "u": 1})
        assert view.increment(("row", 1), "i") == 2
        assert view.delete_many([("row", 2)]) == 1
        assert view.clear(("row",)) == 2
        assert store.count() == 0

    def test_bad_namespace_names(self, store: BaseContextStore) -> None:
        for bad in ("", "/", 1, None):
            with pytest.raises(ContextConfigurationError):
                store.with_namespace(bad)  # type: ignore[arg-type]

    # ================================================================== close

    def _operations(self, store: BaseContextStore) -> list[tuple[str, Callable[[], Any]]]:
        return [
            ("set", lambda: store.set("k", {"a": 1})),
            ("get", lambda: store.get("k")),
            ("delete", lambda: store.delete("k")),
            ("exists", lambda: store.exists("k")),
            ("contains", lambda: "k" in store),
            ("set_many", lambda: store.set_many([("k", {"a": 1})])),
            ("get_many", lambda: store.get_many(["k"])),
            ("delete_many", lambda: store.delete_many(["k"])),
            ("scan", lambda: list(store.scan())),
            ("scan_prefix", lambda: list(store.scan(("row",)))),
            ("list_keys", lambda: store.list_keys()),
            ("items", lambda: list(store.items())),
            ("count", lambda: store.count()),
            ("count_prefix", lambda: store.count(("row",))),
            ("update", lambda: store.update("k", {"a": 1})),
            ("increment", lambda: store.increment("k", "n")),
            ("clear", lambda: store.clear()),
            ("clear_prefix", lambda: store.clear(("row",))),
            ("with_namespace", lambda: store.with_namespace("a")),
        ]

    def _assert_closed(self, store: BaseContextStore) -> None:
        assert store.closed
        for name, op in self._operations(store):
            with pytest.raises(ContextStoreClosedError):
                op()
                pytest.fail(f"{name} worked on a closed store")

    def test_closed_store_refuses_every_operation(self, store: BaseContextStore) -> None:
        store.set("k", {"a": 1})
        store.close()
        self._assert_closed(store)
        assert issubclass(ContextStoreClosedError, ContextStoreError)
        with pytest.raises(ContextStoreClosedError), store:
            pass

    def test_double_close_is_fine(self, store: BaseContextStore) -> None:
        store.close()
        store.close()
        assert store.closed

    def test_closing_a_view_leaves_the_parent_usable(self, store: BaseContextStore) -> None:
        a = store.with_namespace("a")
        other = store.with_namespace("a")
        a.set("k", {"a": 1})
        a.close()
        self._assert_closed(a)
        a.close()
        assert not store.closed and not other.closed
        store.set("root", {"r": 1})
        assert_value(store.get("root"), {"r": 1})
        assert_value(other.get("k"), {"a": 1})
        assert_value(store.with_namespace("a").get("k"), {"a": 1})

    def test_closing_the_store_closes_its_views(self, store: BaseContextStore) -> None:
        a = store.with_namespace("a")
        ab = a.with_namespace("b")
        a.set("k", {"a": 1})
        store.close()
        self._assert_closed(store)
        self._assert_closed(a)
        self._assert_closed(ab)

    def test_context_manager_closes(self) -> None:
        store = self.open_store()
        with store as entered:
            assert entered is store
            entered.set("k", {"a": 1})
            assert_value(store.get("k"), {"a": 1})
        assert store.closed
        with pytest.raises(ContextStoreClosedError):
            store.get("k")
        other = self.open_store()
        with pytest.raises(RuntimeError), other:
            raise RuntimeError("boom")
        assert other.closed

    # ================================================================== pickling / reopening

    def test_pickle(self, store: BaseContextStore) -> None:
        store.set(("row", 1), {"before": [1]})
        clone = self.track(pickle.loads(pickle.dumps(store)))
        assert type(clone) is type(store)
        assert clone is not store
        assert clone.namespace == store.namespace
        assert clone.max_value_size == store.max_value_size
        assert not clone.closed
        assert_value(clone.get(("row", 1)), {"before": [1]})
        clone.set(("row", 2), {"clone": True})
        assert_value(clone.get(("row", 2)), {"clone": True})
        assert clone.increment(("row", 2), "n") == 1
        if self.shares_data_when_pickled:
            self.sync(clone)
            assert_value(store.get(("row", 2)), {"clone": True, "n": 1})
            store.set(("row", 3), {"after": 1})
            self.sync(store)
            assert_value(clone.get(("row", 3)), {"after": 1})

    def test_pickle_keeps_namespace_and_options(self) -> None:
        store = self.open_store(max_value_size=100)
        view = store.with_namespace("a")
        view.set("k", {"ns": "a"})
        clone = self.track(pickle.loads(pickle.dumps(view)))
        assert type(clone) is type(store)
        assert clone.namespace == view.namespace
        assert clone.max_value_size == 100
        with pytest.raises(ContextValueTooLargeError):
            clone.set("big", {"s": "x" * 200})
        if self.shares_data_when_pickled:
            assert_value(clone.get("k"), {"ns": "a"})
            clone.set("k2", {"from": "clone"})
            self.sync(clone)
            assert_value(view.get("k2"), {"from": "clone"})
            assert store.get("k2") is None
        # closing the clone leaves the original open
        clone.close()
        assert not view.closed and not store.closed
        assert_value(view.get("k"), {"ns": "a"})

    def test_reopen_sees_the_same_data(self, store: BaseContextStore) -> None:
        store.set(("row", 1), {"v": 1})
        store.with_namespace("a").set(("row", 1), {"v": "a"})
        self.sync(store)
        other = self.track(self.reopen_store(store))
        assert other is not store
        assert type(other) is type(store)
        assert other.namespace == store.namespace
        assert_value(other.get(("row", 1)), {"v": 1})
        assert_value(other.with_namespace("a").get(("row", 1)), {"v": "a"})
        other.set(("row", 2), {"v": 2})
        self.sync(other)
        assert_value(store.get(("row", 2)), {"v": 2})
        store.close()
        assert not other.closed
        assert other.count() == 2
        assert key_set(other.list_keys()) == key_set([("row", 1), ("row", 2)])

    # ================================================================== concurrency

    def _run_threads(self, work: Callable[[int], None]) -> None:
        n = self.thread_count
        barrier = threading.Barrier(n)
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                barrier.wait(timeout=30)
                work(i)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads), "a worker thread hung"
        if errors:
            raise errors[0]

    def test_concurrent_increments_are_atomic(self, store: BaseContextStore) -> None:
        per = self.increments_per_thread
        key = ("counter", 1)

        def work(_: int) -> None:
            for _ in range(per):
                store.increment(key, "n")

        self._run_threads(work)
        assert_value(store.get(key), {"n": self.thread_count * per})

    def test_concurrent_updates_lose_no_field(self, store: BaseContextStore) -> None:
        per = self.updates_per_thread
        key = ("shared", 1)
        store.set(key, {"start": True})

        def work(i: int) -> None:
            for j in range(per):
                store.update(key, {f"t{i}": j})
                store.increment(key, "total")

        self._run_threads(work)
        expected: dict[str, Any] = {"start": True, "total": self.thread_count * per}
        expected.update({f"t{i}": per - 1 for i in range(self.thread_count)})
        assert_value(store.get(key), expected)

    # ================================================================== volume

    def test_large_batch_round_trip(self, store: BaseContextStore) -> None:
        n = self.large_batch_size
        keys = [("row", i) for i in range(n)]
        store.set_many({k: {"i": k[1], "s": str(k[1])} for k in keys})
        assert store.count() == n
        assert store.count(("row",)) == n
        got = store.get_many(keys)
        assert all(v == {"i": i, "s": str(i)} for i, v in enumerate(got))
        assert key_set(store.list_keys(("row",))) == key_set(keys)
        assert sum(1 for _ in store.items()) == n
        assert store.delete_many(keys[::2]) == (n + 1) // 2
        assert store.count() == n // 2
        assert store.clear(("row",)) == n // 2
        assert store.count() == 0
