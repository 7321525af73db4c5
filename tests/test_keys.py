"""The key codec: round trips, determinism, prefixes, ordering, normalisation, errors."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from context_framework.exceptions import ContextKeyError, UnsupportedKeyError
from context_framework.keys import (
    CODEC_VERSION,
    decode_key,
    encode_key,
    encode_prefix,
    has_prefix,
    normalize_key,
    prefix_range,
)

# --------------------------------------------------------------------------- strategies

MAX_KEY_INT = 2 ** (8 * 255) - 1

_offsets = st.integers(min_value=-(24 * 3600) + 1, max_value=24 * 3600 - 1).map(
    lambda s: timezone(timedelta(seconds=s))
)
_odd_text = st.text(alphabet=st.sampled_from(["\x00", "\x01", "a", "\xff", "\u00e9", "\U0001f600", "\ufffd"]))
texts = st.one_of(st.text(), _odd_text)
ints = st.one_of(
    st.integers(),
    st.integers(min_value=-MAX_KEY_INT, max_value=MAX_KEY_INT),
    st.sampled_from(
        [0, 1, -1, 255, 256, -255, -256, 2**63, -(2**63), 2**64, -(2**64), MAX_KEY_INT, -MAX_KEY_INT]
    ),
)
floats = st.floats(allow_nan=True, allow_infinity=True)
naive_datetimes = st.datetimes()
aware_datetimes = st.datetimes(timezones=_offsets)
scalars = st.one_of(
    texts,
    ints,
    floats,
    st.booleans(),
    st.none(),
    st.binary(),
    naive_datetimes,
    aware_datetimes,
    st.dates(),
)
keys = st.recursive(scalars, lambda children: st.lists(children, max_size=4).map(tuple), max_leaves=12)
tuple_keys = st.lists(keys, max_size=4).map(tuple)


def typed(key: Any) -> Any:
    """Type-exact description of a key: floats by bits, datetimes with their offset."""
    t = type(key)
    if t is tuple:
        return ("tuple", tuple(typed(p) for p in key))
    if t is float:
        return ("float", "nan" if key != key else struct.pack(">d", key))
    if t is datetime:
        return ("datetime", key.replace(tzinfo=None), key.utcoffset())
    return (t.__name__, key)


def under(key: Any, prefix: tuple[Any, ...]) -> bool:
    """Whether ``key`` starts with the elements of ``prefix``, element by element."""
    if not prefix:
        return True
    if type(key) is not tuple or len(key) < len(prefix):
        return False
    return all(typed(normalize_key(a)) == typed(normalize_key(b)) for a, b in zip(key, prefix, strict=False))


# --------------------------------------------------------------------------- round trip


@given(keys)
@example(("row", 1))
@example(("row", True))
@example(("row", 1.0))
@example(-0.0)
@example(("a\x00", None, (None, (), b"\x00\xff"), ""))
@example(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))))
@example(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(-timedelta(hours=23))))
@example(datetime(1, 1, 1))
@example(date(9999, 12, 31))
@example(("x", float("nan")))
def test_round_trip_keeps_types(key: Any) -> None:
    data = encode_key(key)
    assert isinstance(data, bytes)
    assert data[0] & 0x7F == CODEC_VERSION
    decoded = decode_key(data)
    assert typed(decoded) == typed(normalize_key(key))
    assert encode_key(decoded) == data
    assert typed(normalize_key(decoded)) == typed(decoded)


@given(keys)
def test_normalize_is_idempotent_and_encoding_agrees(key: Any) -> None:
    norm = normalize_key(key)
    assert typed(normalize_key(norm)) == typed(norm)
    assert encode_key(norm) == encode_key(key)


def test_distinct_looking_keys_have_distinct_encodings() -> None:
    utc2 = timezone(timedelta(hours=2))
    looks_alike = [
        ("row", 1),
        ("row", "1"),
        ("row", True),
        ("row", 1.0),
        ("row", b"1"),
        ("row",),
        "row",
        b"row",
        (("row",),),
        1,
        (1,),
        True,
        1.0,
        0.0,
        -0.0,
        None,
        (None,),
        ((None,),),
        (),
        ((),),
        "",
        b"",
        datetime(2024, 1, 1, 12),
        datetime(2024, 1, 1, 12, tzinfo=timezone.utc),
        datetime(2024, 1, 1, 14, tzinfo=utc2),
        date(2024, 1, 1),
    ]
    encodings = [encode_key(k) for k in looks_alike]
    assert len(set(encodings)) == len(looks_alike)
    aware = decode_key(encode_key(datetime(2024, 1, 1, 14, tzinfo=utc2)))
    assert aware.utcoffset() == timedelta(hours=2)
    assert aware == datetime(2024, 1, 1, 12, tzinfo=timezone.utc)


def test_nan_has_one_encoding() -> None:
    nans = [float("nan"), -float("nan"), struct.unpack(">d", b"\x7f\xf0\x00\x00\x00\x00\x00\x01")[0]]
    assert len({encode_key(("x", n)) for n in nans}) == 1
    assert math.isnan(decode_key(encode_key(("x", -float("nan"))))[1])


# --------------------------------------------------------------------------- determinism


DETERMINISM_KEYS = [
    ("row", 1),
    ("row", "\u00e9\U0001f600\x00"),
    ("cell", -(2**100), 1.5, True, None, b"\x00\xff"),
    (("nested", (1, 2)), ()),
    datetime(2024, 2, 29, 1, 2, 3, 4, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
    date(2000, 1, 1),
    float("nan"),
]


@given(keys)
def test_encoding_is_deterministic(key: Any) -> None:
    assert encode_key(key) == encode_key(key)


@pytest.mark.parametrize("hash_seed", ["0", "12345"])
def test_encoding_is_the_same_in_another_process(hash_seed: str) -> None:
    code = (
        "import datetime\n"
        "from math import nan\n"
        "from context_framework.keys import encode_key\n"
        f"keys = {DETERMINISM_KEYS!r}\n"
        "print(','.join(encode_key(k).hex() for k in keys))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": hash_seed, "PATH": ""},
    ).stdout.strip()
    assert out == ",".join(encode_key(k).hex() for k in DETERMINISM_KEYS)


def test_known_encodings_are_stable() -> None:
    # The byte format is versioned and persisted by every store: pin a few encodings.
    assert encode_key(("row", 1)) == b"\x01\x02row\x00\x15\x01"
    assert encode_key(("row", "1")) == b"\x01\x02row\x00\x021\x00"
    assert encode_key(("row", True)) == b"\x01\x02row\x00\x27"
    assert encode_key("row") == b"\x81\x02row\x00"
    assert encode_key(None) == b"\x81\x00"
    assert encode_key(()) == b"\x01"
    assert encode_key((None, (None,))) == b"\x01\x00\x05\x00\xff\x00"
    assert encode_key(("a\x00b",)) == b"\x01\x02a\x00\xffb\x00"
    assert encode_key((0, -1, 256)) == b"\x01\x14\x13\xfe\x16\x01\x00"
    assert encode_key((1.0,)) == b"\x01\x21\xbf\xf0\x00\x00\x00\x00\x00\x00"


# --------------------------------------------------------------------------- prefixes


@given(tuple_keys, tuple_keys)
def test_prefix_is_a_byte_prefix(prefix: tuple[Any, ...], rest: tuple[Any, ...]) -> None:
    assert encode_key(prefix + rest).startswith(encode_prefix(prefix))
    low, high = prefix_range(prefix)
    assert low <= encode_key(prefix + rest)
    if high is not None:
        assert encode_key(prefix + rest) < high


_small_parts = st.sampled_from(
    ["a", "a\x00", "a\x00b", "", "\x00", b"a", b"a\x00", 1, 1.0, True, None, ("a",), ("a", None), ()]
)
_small_tuples = st.lists(
    st.one_of(_small_parts, st.lists(_small_parts, max_size=2).map(tuple)), max_size=3
).map(tuple)


@given(_small_tuples, st.one_of(_small_tuples, _small_parts))
@example(("a",), ("a\x00",))
@example(("a",), ("a\x00", 1))
@example((("a",),), (("a", None),))
@example((b"a",), (b"a\x00",))
@example(("a", None), ("a", None, 1))
@settings(max_examples=300)
def test_prefix_range_holds_exactly_the_keys_under_the_prefix(prefix: tuple[Any, ...], key: Any) -> None:
    low, high = prefix_range(prefix)
    data = encode_key(key)
    in_range = low <= data and (high is None or data < high)
    assert in_range == under(key, prefix), (prefix, key, low, high, data)
    if prefix:
        assert has_prefix(data, encode_prefix(prefix)) == under(key, prefix)


def test_prefix_range_of_everything() -> None:
    assert prefix_range(None) == (b"", None)
    assert prefix_range(()) == (b"", None)
    low, high = prefix_range(("row",))
    assert low == encode_prefix(("row",))
    assert high is not None and low < high


def test_encode_prefix_requires_a_tuple() -> None:
    for bad in ("row", ["row"], None, 1):
        with pytest.raises(UnsupportedKeyError) as info:
            encode_prefix(bad)  # type: ignore[arg-type]
        assert "tuple" in str(info.value)
    with pytest.raises(UnsupportedKeyError):
        prefix_range("row")  # type: ignore[arg-type]
    assert encode_prefix(()) == b"\x01"


# --------------------------------------------------------------------------- ordering


def _assert_order_preserved(a: Any, b: Any) -> None:
    if a < b:
        assert encode_key(a) < encode_key(b)
        assert encode_key((a,)) < encode_key((b,))
        assert encode_key(("p", a, "z")) < encode_key(("p", b, "a"))
    elif b < a:
        assert encode_key(b) < encode_key(a)


@given(ints, ints)
@example(-256, -255)
@example(-(2**64), -(2**64) + 1)
@example(2**64 - 1, 2**64)
@example(-MAX_KEY_INT, -(2**64))
def test_int_order(a: int, b: int) -> None:
    _assert_order_preserved(a, b)


@given(st.floats(allow_nan=False), st.floats(allow_nan=False))
@example(-0.0, 5e-324)
@example(float("-inf"), -1.7976931348623157e308)
def test_float_order(a: float, b: float) -> None:
    _assert_order_preserved(a, b)


@given(texts, texts)
@example("a", "a\x00")
@example("a\x00b", "a\x01")
@example("\uffff", "\U00010000")
def test_str_order_is_code_point_order(a: str, b: str) -> None:
    _assert_order_preserved(a, b)


@given(st.binary(), st.binary())
def test_bytes_order(a: bytes, b: bytes) -> None:
    _assert_order_preserved(a, b)


@given(naive_datetimes, naive_datetimes)
def test_naive_datetime_order(a: datetime, b: datetime) -> None:
    _assert_order_preserved(a, b)


@given(aware_datetimes, aware_datetimes)
def test_aware_datetime_order_is_by_instant(a: datetime, b: datetime) -> None:
    _assert_order_preserved(a, b)


@given(st.dates(), st.dates())
def test_date_order(a: date, b: date) -> None:
    _assert_order_preserved(a, b)


@given(st.lists(st.integers(-1000, 1000), min_size=2, max_size=20))
def test_sorting_encodings_sorts_keys(values: list[int]) -> None:
    keys_ = [("row", v) for v in values]
    by_encoding = sorted(keys_, key=encode_key)
    assert by_encoding == sorted(keys_)


# --------------------------------------------------------------------------- normalisation


def test_subclasses_become_the_base_type() -> None:
    import enum
    from collections import namedtuple

    class Color(str, enum.Enum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    class MyFloat(float):
        pass

    point = namedtuple("point", "x y")
    assert typed(normalize_key((Color.RED, Level.HIGH, MyFloat(1.5)))) == typed(("red", 3, 1.5))
    assert typed(normalize_key(point(1, "a"))) == typed((1, "a"))
    assert encode_key(point(1, "a")) == encode_key((1, "a"))
    assert type(decode_key(encode_key(Level.HIGH))) is int


def test_numpy_scalars_are_normalised() -> None:
    np = pytest.importorskip("numpy")
    cases = [
        (np.int64(3), 3),
        (np.int8(-3), -3),
        (np.uint64(2**64 - 1), 2**64 - 1),
        (np.float32(1.5), 1.5),
        (np.float64(0.1), 0.1),
        (np.bool_(True), True),
        (np.bool_(False), False),
        (np.str_("col"), "col"),
        (np.bytes_(b"x"), b"x"),
        (np.datetime64("2024-01-02T03:04:05.123456"), datetime(2024, 1, 2, 3, 4, 5, 123456)),
        (np.datetime64("2024-01-02"), datetime(2024, 1, 2)),
        (np.float64("nan"), float("nan")),
    ]
    for given_, expected in cases:
        norm = normalize_key(("row", given_))
        assert typed(norm) == typed(("row", expected)), given_
        assert encode_key(("row", given_)) == encode_key(("row", expected))
        assert typed(normalize_key(given_)) == typed(expected)
    with pytest.raises(UnsupportedKeyError, match="sub-microsecond"):
        encode_key(("t", np.datetime64("2024-01-02T03:04:05.123456789")))
    with pytest.raises(UnsupportedKeyError, match="NaT"):
        encode_key(("t", np.datetime64("NaT")))
    with pytest.raises(UnsupportedKeyError):
        encode_key(("a", np.array([1, 2])))


def test_pandas_timestamps_are_normalised() -> None:
    pd = pytest.importorskip("pandas")
    naive = pd.Timestamp("2024-01-02 03:04:05.123456")
    assert typed(normalize_key(naive)) == typed(datetime(2024, 1, 2, 3, 4, 5, 123456))
    aware = pd.Timestamp("2024-01-02 03:04:05", tz="Europe/Paris")
    norm = normalize_key(("t", aware))
    assert type(norm[1]) is datetime
    assert norm[1].utcoffset() == timedelta(hours=1)
    decoded = decode_key(encode_key(("t", aware)))
    assert decoded[1] == aware.to_pydatetime()
    assert decoded[1].utcoffset() == timedelta(hours=1)
    with pytest.raises(UnsupportedKeyError, match="nanoseconds") as info:
        encode_key(("t", pd.Timestamp("2024-01-02 03:04:05.000000001")))
    assert "Timestamp" in str(info.value)
    with pytest.raises(UnsupportedKeyError, match="NaT"):
        encode_key(("t", pd.NaT))


# --------------------------------------------------------------------------- errors


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


@pytest.mark.parametrize(
    ("key", "part", "hint"),
    [
        (["row", 1], "['row', 1]", "use a tuple"),
        (("row", [1]), "[1]", "use a tuple"),
        (("row", {1, 2}), "{1, 2}", "set"),
        (("row", frozenset({3})), "frozenset({3})", "frozenset"),
        (("row", {"a": 1}), "{'a': 1}", "dict"),
        (("row", ("nested", Opaque())), "<Opaque thing>", "Opaque"),
        (Opaque(), "<Opaque thing>", "Opaque"),
        (("row", 1j), "1j", "complex"),
        (
            ("t", datetime(2024, 1, 1, tzinfo=timezone(timedelta(seconds=1, microseconds=5)))),
            "2024",
            "sub-second",
        ),
        (("row", "a\ud800"), "a\\ud800", "surrogate"),
        (("row", 2 ** (8 * 255)), "", "too large"),
        (("row", -(2 ** (8 * 255))), "", "too large"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else None,
)
def test_unsupported_keys_name_the_offending_part(key: Any, part: str, hint: str) -> None:
    with pytest.raises(UnsupportedKeyError) as info:
        encode_key(key)
    message = str(info.value)
    assert part in message
    assert hint in message
    assert isinstance(info.value, ContextKeyError)
    assert isinstance(info.value, KeyError) and isinstance(info.value, TypeError)
    if not (isinstance(key, tuple) and type(key[1]) is str) and not (
        isinstance(key, tuple) and type(key[1]) is int
    ):
        with pytest.raises(UnsupportedKeyError):
            normalize_key(key)


def test_largest_integers_are_keys() -> None:
    for v in (MAX_KEY_INT, -MAX_KEY_INT):
        assert decode_key(encode_key(("row", v))) == ("row", v)


def test_deeply_nested_keys_are_refused_cleanly() -> None:
    key: Any = "leaf"
    for _ in range(5000):
        key = (key,)
    with pytest.raises(UnsupportedKeyError, match="nested too deeply"):
        encode_key(key)
    with pytest.raises(UnsupportedKeyError, match="nested too deeply"):
        normalize_key(key)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02",  # unknown codec version
        b"\x81",  # scalar header, no element
        b"\x01\x02abc",  # unterminated string
        b"\x81\x14\x00",  # trailing bytes after a scalar
        b"\x01\x99",  # unknown type code
        b"\x81\x02\xff\x00",  # invalid UTF-8
        b"\x81\x21\x00",  # truncated float
        b"\x81\x3f\x00\x00\x00\x00",  # date ordinal 0
        b"\x81\x40\xff\xff\xff\xff\xff\xff\xff\xff",  # datetime out of range
        b"\x81\x41" + b"\x00" * 12,  # aware datetime out of range
        b"\x81\x41" + b"\x80" + b"\x00" * 7 + b"\xff\xff\xff\xff",  # bad UTC offset
        b"\x01\x05\x02a\x00",  # unterminated nested tuple
        b"\x01" + b"\x05" * 50_000,  # absurdly nested
    ],
    ids=lambda data: data.hex() if len(data) < 20 else f"{data[:4].hex()}...{len(data)}-bytes",
)
def test_decode_garbage_raises_unsupported_key_error(data: bytes) -> None:
    with pytest.raises(UnsupportedKeyError) as info:
        decode_key(data)
    assert "not a valid encoded context key" in str(info.value)


@given(st.binary(max_size=40))
@example(b"\x01\x05\x05\x05")
def test_decode_of_any_bytes_returns_a_key_or_raises_unsupported_key_error(data: bytes) -> None:
    try:
        key = decode_key(data)
    except UnsupportedKeyError:
        return
    encode_key(key)  # whatever decodes is a valid key


@given(keys)
def test_decode_of_a_truncated_encoding_never_raises_anything_else(key: Any) -> None:
    data = encode_key(key)
    for cut in range(len(data)):
        try:
            decode_key(data[:cut])
        except UnsupportedKeyError:
            pass


def test_unsupported_key_error_is_raised_for_sub_second_offset_even_in_nested_tuples() -> None:
    tz = timezone(timedelta(microseconds=1))
    with pytest.raises(UnsupportedKeyError, match="sub-second"):
        encode_key(("a", (datetime(2024, 1, 1, tzinfo=tz),)))
    with pytest.raises(UnsupportedKeyError, match="sub-second"):
        normalize_key(datetime(2024, 1, 1, tzinfo=tz))


def test_aware_datetime_round_trip_keeps_instant_and_offset() -> None:
    tz = timezone(timedelta(hours=5, minutes=45))
    dt = datetime(2024, 3, 31, 2, 30, tzinfo=tz)
    back = decode_key(encode_key(dt))
    assert back == dt and back.utcoffset() == dt.utcoffset()
    assert back.replace(tzinfo=None) == dt.replace(tzinfo=None)
