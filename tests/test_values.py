"""Metadata values: documented conversions, errors naming the path, size limit, no aliasing."""

from __future__ import annotations

import enum
import io
import json
import os
import re
import uuid
from collections import OrderedDict, namedtuple
from collections.abc import Iterator, Mapping
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from context_framework.exceptions import (
    ContextError,
    ContextSerializationError,
    ContextValueTooLargeError,
)
from context_framework.values import (
    DEFAULT_MAX_VALUE_SIZE,
    check_size,
    decode_value,
    encode_value,
    prepare_value,
)


def canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)


class Color(enum.Enum):
    RED = "red"


class Name(str, enum.Enum):
    ALICE = "alice"


class Level(enum.IntEnum):
    HIGH = 3


class Ratio(float):
    pass


class Frozen(Mapping):  # a read-only Mapping that is not a dict
    def __init__(self, **data: Any) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


Point = namedtuple("Point", "x y")


# --------------------------------------------------------------------------- accepted values

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)
metadata = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


@given(metadata)
def test_json_compatible_values_round_trip_exactly(value: dict[str, Any]) -> None:
    prepared = prepare_value(value, None)
    assert canon(prepared) == canon(value)
    text = encode_value(value, None)
    assert canon(decode_value(text)) == canon(value)
    assert canon(decode_value(text.encode("utf-8"))) == canon(value)


@given(metadata)
def test_prepare_value_never_aliases(value: dict[str, Any]) -> None:
    prepared = prepare_value(value, None)
    assert prepared is not value

    def containers(obj: Any) -> Iterator[int]:
        if isinstance(obj, (dict, list)):
            yield id(obj)
            for child in obj.values() if isinstance(obj, dict) else obj:
                yield from containers(child)

    assert not set(containers(prepared)) & set(containers(value))


def test_mutating_the_input_after_prepare_changes_nothing() -> None:
    value: dict[str, Any] = {"a": [1, {"b": 2}], "flat": 1}
    prepared = prepare_value(value)
    value["a"][1]["b"] = 3
    value["a"].append(4)
    value["flat"] = 2
    assert prepared == {"a": [1, {"b": 2}], "flat": 1}
    flat = {"x": 1}
    prepared_flat = prepare_value(flat)
    assert prepared_flat is not flat
    flat["x"] = 2
    assert prepared_flat == {"x": 1}


def test_limits_of_integers() -> None:
    for ok in (2**64 - 1, -(2**63), 0, 2**63):
        assert prepare_value({"i": ok}) == {"i": ok}
        assert prepare_value({"i": [ok]}) == {"i": [ok]}
    for bad in (2**64, -(2**63) - 1, 10**30):
        with pytest.raises(ContextSerializationError, match="as a string"):
            prepare_value({"i": bad})
        with pytest.raises(ContextSerializationError):
            prepare_value({"i": [bad]})
        with pytest.raises(ContextSerializationError):
            encode_value({"i": bad})


def test_documented_conversions() -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, 10)
    aware = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=-3)))
    uid = uuid.uuid4()
    given_ = {
        "tuple": (1, (2, "x")),
        "namedtuple": Point(1, 2),
        "mapping": MappingProxyType({"m": 1}),
        "ordered": OrderedDict(b=1, a=2),
        "custom_mapping": Frozen(z=(1,)),
        "str_enum": Name.ALICE,
        "int_enum": Level.HIGH,
        "float_sub": Ratio(0.5),
        "datetime": when,
        "aware": aware,
        "date": date(2024, 5, 6),
        "time": time(7, 8, 9, 10),
        "uuid": uid,
        "nested": [{"when": when}],
    }
    out = prepare_value(given_)
    assert out == {
        "tuple": [1, [2, "x"]],
        "namedtuple": [1, 2],
        "mapping": {"m": 1},
        "ordered": {"b": 1, "a": 2},
        "custom_mapping": {"z": [1]},
        "str_enum": "alice",
        "int_enum": 3,
        "float_sub": 0.5,
        "datetime": "2024-05-06T07:08:09.000010",
        "aware": "2024-05-06T07:08:09-03:00",
        "date": "2024-05-06",
        "time": "07:08:09.000010",
        "uuid": str(uid),
        "nested": [{"when": "2024-05-06T07:08:09.000010"}],
    }
    assert type(out["str_enum"]) is str
    assert type(out["int_enum"]) is int
    assert type(out["float_sub"]) is float
    assert type(out["ordered"]) is dict
    # a Mapping at the top level, and str-subclass keys
    assert prepare_value(MappingProxyType({Name.ALICE: 1})) == {"alice": 1}
    assert type(next(iter(prepare_value({Name.ALICE: 1})))) is str
    assert prepare_value(Frozen(a=1)) == {"a": 1}


def test_numpy_conversions() -> None:
    np = pytest.importorskip("numpy")
    out = prepare_value(
        {
            "i": np.int64(-3),
            "u": np.uint64(2**64 - 1),
            "f": np.float32(0.25),
            "b": np.bool_(False),
            "s": np.str_("x"),
            "arr": np.arange(6).reshape(2, 3),
            "farr": np.array([0.5, 1.5]),
            "dt": np.datetime64("2024-01-02T03:04:05"),
            "nested": [np.int8(1), {"x": np.float64(2.5)}],
        }
    )
    assert out == {
        "i": -3,
        "u": 2**64 - 1,
        "f": 0.25,
        "b": False,
        "s": "x",
        "arr": [[0, 1, 2], [3, 4, 5]],
        "farr": [0.5, 1.5],
        "dt": "2024-01-02T03:04:05",
        "nested": [1, {"x": 2.5}],
    }
    assert type(out["i"]) is int and type(out["f"]) is float and type(out["b"]) is bool
    assert type(out["s"]) is str
    for bad, path in (
        ({"x": np.float64("nan")}, "['x']"),
        ({"x": [np.array([1.0, np.inf])]}, "['x'][0][1]"),
        ({"x": np.datetime64("NaT")}, "['x']"),
        ({"x": np.void(b"\x00")}, "['x']"),
    ):
        with pytest.raises(ContextSerializationError) as info:
            prepare_value(bad)
        assert path in str(info.value)


def test_pandas_conversions() -> None:
    pd = pytest.importorskip("pandas")
    out = prepare_value(
        {
            "ts": pd.Timestamp("2024-01-02 03:04:05", tz="UTC"),
            "td": pd.Timedelta(seconds=90),
            "series": pd.Series([1, 2]),
            "index": pd.Index(["a", "b"]),
        }
    )
    assert out == {
        "ts": "2024-01-02T03:04:05+00:00",
        "td": "P0DT0H1M30S",
        "series": [1, 2],
        "index": ["a", "b"],
    }
    for bad in (pd.NaT, pd.NA):
        with pytest.raises(ContextSerializationError, match="use None"):
            prepare_value({"x": bad})
    with pytest.raises(ContextSerializationError, match="pandas DataFrame"):
        prepare_value({"x": pd.DataFrame({"a": [1]})})


# --------------------------------------------------------------------------- refused values


@pytest.mark.parametrize(
    ("value", "path", "hint"),
    [
        ({"s": {1, 2}}, "metadata['s']", "sorted list"),
        ({"a": [0, frozenset()]}, "metadata['a'][1]", "sorted list"),
        ({"b": b"raw"}, "metadata['b']", "base64"),
        ({"b": bytearray(b"raw")}, "metadata['b']", "base64"),
        ({"b": memoryview(b"raw")}, "metadata['b']", "base64"),
        ({"f": float("nan")}, "metadata['f']", "use None"),
        ({"f": float("inf")}, "metadata['f']", "use None"),
        ({"deep": {"er": [1.0, float("-inf")]}}, "metadata['deep']['er'][1]", "use None"),
        ({1: "x"}, "metadata ", "must be strings"),
        ({"n": {None: 1}}, "metadata['n']", "must be strings"),
        ({"n": {("t",): 1}}, "metadata['n']", "must be strings"),
        ({"i": 2**64}, "metadata['i']", "as a string"),
        ({"d": Decimal("1.1")}, "metadata['d']", "decimal.Decimal"),
        ({"e": Color.RED}, "metadata['e']", "Color"),
        ({"c": 1 + 2j}, "metadata['c']", "complex"),
        ({"o": object()}, "metadata['o']", "object"),
        ({"io": io.StringIO("x")}, "metadata['io']", "file-like"),
        ({"r": range(3)}, "metadata['r']", "range"),
        ({"f": lambda: 1}, "metadata['f']", "function"),
    ],
    # no memory addresses in the ids, so every pytest-xdist worker collects the same tests
    ids=lambda v: None if isinstance(v, str) else re.sub(r" at 0x[0-9a-f]+", "", repr(v))[:40],
)
def test_refused_values_name_the_path(value: Any, path: str, hint: str) -> None:
    with pytest.raises(ContextSerializationError) as info:
        prepare_value(value)
    message = str(info.value)
    assert path in message, message
    assert hint in message, message
    assert isinstance(info.value, TypeError) and isinstance(info.value, ContextError)
    with pytest.raises(ContextSerializationError):
        encode_value(value)


def test_open_file_is_refused() -> None:
    with open(os.devnull) as handle, pytest.raises(ContextSerializationError, match="file-like"):
        prepare_value({"f": handle})


@pytest.mark.parametrize("value", [None, [("a", 1)], "text", 1, b"{}", {"a"}, ("a", 1)])
def test_top_level_must_be_a_mapping(value: Any) -> None:
    with pytest.raises(ContextSerializationError, match="must be a dict"):
        prepare_value(value)
    with pytest.raises(ContextSerializationError, match="must be a dict"):
        encode_value(value)


def test_self_reference_and_depth() -> None:
    loop: dict[str, Any] = {}
    loop["me"] = loop
    with pytest.raises(ContextSerializationError, match="nested too deeply"):
        prepare_value(loop)
    deep: Any = 1
    for _ in range(150):
        deep = [deep]
    assert prepare_value({"d": deep}) == {"d": deep}
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ContextSerializationError, match="nested too deeply"):
        prepare_value({"d": deep})


def test_lone_surrogates_never_leak_unicode_errors() -> None:
    # Not valid Unicode: either kept as is or refused as a serialisation error,
    # never a raw UnicodeEncodeError, whatever the size path taken.
    for max_size in (None, 10, 1000, DEFAULT_MAX_VALUE_SIZE):
        for value in ({"s": "\ud800" * 100}, {"s": ["a\udcff"] * 50}, {"\ud800": 1}):
            try:
                prepare_value(value, max_size)
                encode_value(value, max_size)
            except ContextSerializationError:
                pass


# --------------------------------------------------------------------------- size limit


def test_default_max_value_size() -> None:
    assert DEFAULT_MAX_VALUE_SIZE == 1 << 20
    prepare_value({"s": "x" * ((1 << 20) - 8)})
    with pytest.raises(ContextValueTooLargeError):
        prepare_value({"s": "x" * ((1 << 20) - 7)})
    prepare_value({"s": "x" * (2 << 20)}, None)


@pytest.mark.parametrize("filler", ["x", "\u00e9", "\u20ac", "\U0001f600", "\x00"])
@pytest.mark.parametrize("nested", [False, True])
def test_size_limit_is_exact_in_utf8_bytes(filler: str, nested: bool) -> None:
    def make(n: int) -> dict[str, Any]:
        return {"s": [filler * n]} if nested else {"s": filler * n}

    limit = 200
    n = 0
    while len(encode_value(make(n + 1), None).encode("utf-8")) <= limit:
        n += 1
    exact = make(n)
    assert prepare_value(exact, limit) == exact
    assert encode_value(exact, limit)
    with pytest.raises(ContextValueTooLargeError) as info:
        prepare_value(make(n + 1), limit)
    assert "200" in str(info.value) and "max_value_size" in str(info.value)
    with pytest.raises(ContextValueTooLargeError):
        encode_value(make(n + 1), limit)


@given(metadata, st.integers(min_value=2, max_value=300))
def test_size_limit_matches_the_encoded_size(value: dict[str, Any], limit: int) -> None:
    size = len(encode_value(value, None).encode("utf-8"))
    if size <= limit:
        assert canon(prepare_value(value, limit)) == canon(value)
    else:
        with pytest.raises(ContextValueTooLargeError):
            prepare_value(value, limit)


def test_check_size() -> None:
    check_size("x" * 10, 10)
    check_size("x" * 10, None)
    with pytest.raises(ContextValueTooLargeError):
        check_size("x" * 11, 10)
    with pytest.raises(ContextValueTooLargeError):
        check_size("\u00e9" * 6, 10)
    assert issubclass(ContextValueTooLargeError, ContextSerializationError)


def test_encode_value_is_compact_and_unicode() -> None:
    assert encode_value({"a": [1, 2], "b": "\u00e9"}) == '{"a":[1,2],"b":"\u00e9"}'
