"""Checkpoints: export/import/copy over memory, SQLite, Redis and PostgreSQL; the file format; errors; CLI.

Round trips use every key type of the codec and nested values, in JSON Lines,
gzip'd JSON Lines and Parquet (skipped without pyarrow, a failure under
``CI=true``). Redis tests work under their own key prefix, PostgreSQL tests
in their own table; both are removed afterwards. The acceptance run (1,000,000
entries from Redis, restored into PostgreSQL, compared entry by entry) is
``slow`` and prints its figures.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from context_framework import InMemoryContextStore, open_store
from context_framework.checkpoint import (
    copy_store,
    export_store,
    import_store,
    key_from_json,
    key_to_json,
    read_checkpoint,
    verify_checkpoint,
)
from context_framework.cli import main
from context_framework.exceptions import (
    ContextConfigurationError,
    ContextSerializationError,
    ContextValueTooLargeError,
    UnsupportedKeyError,
)
from context_framework.keys import encode_key
from context_framework.testing.fixtures import IN_CI
from context_framework.values import dumps_json

KEYS: list[Any] = [
    ("row", 1),
    ("row", 1.0),
    ("row", True),
    ("row", "1"),
    ("row", -1),
    ("row", 0),
    ("row", 2**64 - 1),
    ("row", -(2**63)),
    ("row", 2**70),
    ("row", -(2**70)),
    ("row", 0.1),
    ("row", -0.0),
    ("row", 0.0),
    ("row", 1e300),
    ("row", float("inf")),
    ("row", float("-inf")),
    ("row", float("nan")),
    ("row", None),
    ("row", False),
    ("row", 3, "column", "A"),
    ("column", "Gène ☃ 𝄞"),
    ("column", "a\x00b"),
    ("bytes", b"\x00\xff\x01"),
    ("date", date(2024, 2, 29)),
    ("date", date(1, 1, 1)),
    ("dt", datetime(2024, 1, 2, 3, 4, 5, 678901)),
    ("dt", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ("dt", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))),
    ("dt", datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5, seconds=7)))),
    (("nested", (1, (2.5, None))), "x"),
    (),
    "scalar",
    42,
    4.5,
    None,
    True,
    b"raw",
    date(2000, 1, 1),
    datetime(2000, 1, 1),
]


ROW_KEYS = sum(1 for k in KEYS if type(k) is tuple and k[:1] == ("row",))


def value(i: int) -> dict[str, Any]:
    return {
        "i": i,
        "nested": {"list": [1, 2.5, None, True, "x", {"deep": [[]]}], "text": "é☃\x00"},
        "big": 2**64 - 1,
        "neg": -(2**63),
        "empty": {},
    }


def fill(store: Any) -> None:
    store.set_many([(k, value(i)) for i, k in enumerate(KEYS)])
    sub = store.with_namespace("sub")
    sub.set_many([(("row", i), {"sub": i}) for i in range(5)])
    sub.close()


def snapshot(store: Any, namespace: str = "") -> list[tuple[bytes, str]]:
    """Every entry, type-exact: (encoded key, JSON text with sorted keys), sorted."""
    view = store.with_namespace(namespace) if namespace else store
    out = sorted((encode_key(k), json.dumps(v, sort_keys=True)) for k, v in view.items())
    if view is not store:
        view.close()
    return out


def need_pyarrow() -> None:
    if importlib.util.find_spec("pyarrow") is None:
        if IN_CI:
            pytest.fail("CI=true but pyarrow is not installed", pytrace=False)
        pytest.skip("pyarrow is not installed: pip install 'context-framework[parquet]'")


# --------------------------------------------------------------------------- stores of every kind


def _sweep_redis(url: str, prefix: str) -> None:
    import redis

    from context_framework.redis_store import RedisContextStore

    config = RedisContextStore._parse_url(url.partition("?")[0])
    client = redis.Redis(host=config["host"], port=config["port"], db=config.get("db", 0))
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()


def _drop_pg(url: str, table: str) -> None:
    import psycopg

    fns = ", ".join(f'"{table}_{f}"' for f in ("increment", "update", "merge", "nul_hide", "nul_show"))
    with psycopg.connect(url.partition("?")[0], autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_meta" CASCADE')
        conn.execute(f"DROP FUNCTION IF EXISTS {fns}")


@pytest.fixture
def make_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """``make_url(kind)``: the URL of a fresh, empty store of that kind, removed after the test."""
    cleanups: list[Callable[[], None]] = []

    def make(kind: str) -> str:
        name = f"cftest_{uuid.uuid4().hex[:12]}"
        if kind == "memory":
            return "memory://"
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / name}.db"
        if kind == "redis":
            base = request.getfixturevalue("redis_url").partition("?")[0]
            cleanups.append(lambda: _sweep_redis(base, f"{name}:"))
            return f"{base}?prefix={name}:"
        if kind == "postgresql":
            base = request.getfixturevalue("postgres_url").partition("?")[0]
            cleanups.append(lambda: _drop_pg(base, name))
            return f"{base}?table={name}"
        raise AssertionError(kind)

    yield make
    for cleanup in cleanups:
        cleanup()


KINDS = ["memory", "sqlite", "redis", "postgresql"]
SUFFIXES = [".jsonl", ".jsonl.gz", ".parquet"]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_every_key_type(
    kind: str, suffix: str, make_url: Callable[[str], str], tmp_path: Path
) -> None:
    if suffix == ".parquet":
        need_pyarrow()
    path = tmp_path / f"ckpt{suffix}"
    with open_store(make_url(kind)) as source:
        fill(source)
        assert export_store(source, path, namespaces=["", "sub"]) == len(KEYS) + 5
        expected, expected_sub = snapshot(source), snapshot(source, "sub")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with open_store(make_url(kind)) as target:
        assert import_store(path, target) == len(KEYS) + 5
        assert snapshot(target) == expected and snapshot(target, "sub") == expected_sub
        assert set(map(encode_key, target.list_keys())) == set(map(encode_key, KEYS))
    memory = InMemoryContextStore()  # any store reads any checkpoint
    import_store(path, memory, namespace="restored")
    assert snapshot(memory, "restored") == expected and snapshot(memory, "restored/sub") == expected_sub


def test_copy_memory_to_redis_by_url(make_url: Callable[[str], str]) -> None:
    source = InMemoryContextStore()
    fill(source)
    url = make_url("redis")
    assert copy_store(source, url, namespaces=["", "sub"]) == len(KEYS) + 5
    with open_store(url) as target:
        assert snapshot(target) == snapshot(source)
        assert snapshot(target, "sub") == snapshot(source, "sub")


def test_copy_between_urls_with_prefix_and_target_namespace(make_url: Callable[[str], str]) -> None:
    src_url, dst_url = make_url("sqlite"), make_url("postgresql")
    with open_store(src_url) as source:
        fill(source)
    assert copy_store(src_url, dst_url, prefix=("row",), namespace="copied") == ROW_KEYS
    with open_store(dst_url) as target:
        assert target.count() == 0
        keys = target.with_namespace("copied").list_keys()
        assert len(keys) == ROW_KEYS and all(type(k) is tuple and k[0] == "row" for k in keys)


def test_copy_refuses_to_clear_its_own_source() -> None:
    store = InMemoryContextStore()
    with pytest.raises(ContextConfigurationError, match="into itself"):
        copy_store(store, store, clear=True)


def test_export_of_a_namespace_view_and_a_prefix(tmp_path: Path) -> None:
    store = InMemoryContextStore()
    fill(store)
    path = tmp_path / "sub.jsonl"
    assert export_store(store.with_namespace("sub"), path, prefix=("row",)) == 5
    with read_checkpoint(path) as reader:
        assert reader.header["namespace"] == "sub" and reader.prefix == ("row",)
        rows = list(reader)
    assert [(ns, k) for ns, k, _, _ in rows] == [("", ("row", i)) for i in range(5)]
    assert [line for *_, line in rows] == [2, 3, 4, 5, 6]


def test_modes_replace_skip_existing_and_clear(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    source = InMemoryContextStore()
    source.set_many([(("row", i), {"v": "new"}) for i in range(4)])
    export_store(source, path)

    target = InMemoryContextStore()
    target.set_many([(("row", 0), {"v": "old"}), (("other", 1), {"v": "kept"})])
    assert import_store(path, target, mode="skip-existing") == 3
    assert target.get(("row", 0)) == {"v": "old"} and target.get(("row", 1)) == {"v": "new"}
    assert import_store(path, target) == 4  # replace (default), and idempotent
    assert import_store(path, target) == 4
    assert target.get(("row", 0)) == {"v": "new"} and target.count() == 5
    assert import_store(path, target, clear=True) == 4
    assert target.count() == 4 and target.get(("other", 1)) is None
    with pytest.raises(ContextConfigurationError, match="mode"):
        import_store(path, target, mode="merge")  # type: ignore[arg-type]
    with pytest.raises(ContextConfigurationError, match="batch_size"):
        import_store(path, target, batch_size=0)


def test_clear_with_a_prefix_clears_only_under_it(tmp_path: Path) -> None:
    source = InMemoryContextStore()
    source.set_many([(("row", i), {"i": i}) for i in range(3)])
    path = tmp_path / "rows.jsonl"
    export_store(source, path, prefix=("row",))
    target = InMemoryContextStore()
    target.set_many([(("row", 9), {}), (("column", "A"), {})])
    import_store(path, target, clear=True)
    assert sorted(target.list_keys()) == [("column", "A"), ("row", 0), ("row", 1), ("row", 2)]


@pytest.mark.parametrize("fmt", ["jsonl", "gzip", "parquet", "text"])
def test_file_objects(fmt: str) -> None:
    if fmt == "parquet":
        need_pyarrow()
    store = InMemoryContextStore()
    fill(store)
    buf: Any = io.StringIO() if fmt == "text" else io.BytesIO()
    kwargs: dict[str, Any] = {"compress": True} if fmt == "gzip" else {}
    if fmt == "parquet":
        kwargs["format"] = "parquet"
    assert export_store(store, buf, **kwargs) == len(KEYS)
    buf.seek(0)
    if fmt == "gzip":
        assert buf.getvalue()[:2] == b"\x1f\x8b"
    target = InMemoryContextStore()
    assert import_store(buf, target, verify=True) == len(KEYS)  # sniffed, read twice
    assert snapshot(target) == snapshot(store)


def test_format_is_sniffed_not_taken_from_the_name(tmp_path: Path) -> None:
    store = InMemoryContextStore()
    store.set(("row", 1), {"a": 1})
    gz = tmp_path / "x.jsonl.gz"
    export_store(store, gz)
    odd = tmp_path / "backup.dat"
    odd.write_bytes(gz.read_bytes())
    assert verify_checkpoint(odd).count == 1
    if importlib.util.find_spec("pyarrow") is not None:
        pq = tmp_path / "x.parquet"
        export_store(store, pq)
        pq.rename(tmp_path / "x.jsonl")
        reader = verify_checkpoint(tmp_path / "x.jsonl")
        assert (reader.format, reader.count) == ("parquet", 1)


def test_parquet_layout(tmp_path: Path) -> None:
    need_pyarrow()
    import pyarrow.parquet as pq

    store = InMemoryContextStore()
    store.set_many([(("row", i), {"i": i}) for i in range(25)])
    store.with_namespace("n").set("k", {"x": 1})
    path = tmp_path / "c.parquet"
    export_store(store, path, namespaces=["", "n"], row_group_size=10)
    pf = pq.ParquetFile(path)
    assert pf.schema_arrow.names == ["key", "value", "namespace"]
    assert [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)] == [10, 10, 6]
    table = pf.read()
    assert table.column("key")[0].as_py() == encode_key(("row", 0))
    assert table.column("value")[0].as_py() == '{"i":0}'
    assert table.column("namespace")[25].as_py() == "n"
    assert json.loads(pf.schema_arrow.metadata[b"context-framework"])["version"] == 1


def test_jsonl_layout(tmp_path: Path) -> None:
    store = InMemoryContextStore()
    store.set(("row", 7), {"source": "PubMed"})
    store.with_namespace("genes").set("k", {"n": 1})
    path = tmp_path / "c.jsonl"
    export_store(store, path, namespaces=["", "genes"])
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "context-framework" and header["version"] == 1
    assert header["namespaces"] == ["", "genes"] and header["prefix"] is None
    assert lines[1] == '{"k":["row",7],"v":{"source":"PubMed"}}'
    assert lines[2] == '{"ns":"genes","k":"k","v":{"n":1}}'
    end = json.loads(lines[3])
    assert end["end"] is True and end["count"] == 2
    assert len(lines) == 4


def test_progress_callback_and_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = InMemoryContextStore()
    store.set_many([(("row", i), {"i": i}) for i in range(5_000)])
    path = tmp_path / "c.jsonl"
    seen: list[int] = []
    export_store(store, path, progress=seen.append)
    assert seen and seen[-1] == 5_000 and seen == sorted(seen)
    loaded: list[int] = []
    import_store(path, InMemoryContextStore(), batch_size=1_000, progress=loaded.append)
    assert loaded == [1_000, 2_000, 3_000, 4_000, 5_000]
    capsys.readouterr()
    import_store(path, InMemoryContextStore(), progress=True)
    assert "import" in capsys.readouterr().err
    export_store(store, path, progress=False)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- typed JSON keys

_offsets = st.integers(min_value=-(24 * 3600) + 1, max_value=24 * 3600 - 1).map(
    lambda s: timezone(timedelta(seconds=s))
)
_scalars = st.one_of(
    st.text(),
    st.integers(min_value=-(2**100), max_value=2**100),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.binary(),
    st.datetimes(),
    st.datetimes(timezones=_offsets),
    st.dates(),
)
_keys = st.recursive(_scalars, lambda children: st.lists(children, max_size=4).map(tuple), max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(_keys)
def test_key_json_round_trip_is_type_exact(key: Any) -> None:
    text = json.dumps(key_to_json(key), allow_nan=False)
    assert encode_key(key_from_json(json.loads(text))) == encode_key(key)


def test_key_json_forms() -> None:
    assert key_to_json(("row", 7)) == ["row", 7]
    assert key_to_json(("row", 1.0)) == ["row", 1.0]
    assert key_to_json(("row", 2**64)) == ["row", {"int": str(2**64)}]
    assert key_to_json(float("nan")) == {"float": "nan"}
    assert key_to_json(b"\x00") == {"bytes": "AA=="}
    assert key_to_json(date(2024, 1, 31)) == {"date": "2024-01-31"}
    assert key_from_json(["row", 7]) == ("row", 7)
    for bad in ({"int": 5}, {"colour": "red"}, {"a": "1", "b": "2"}, {"float": "1.5"}, {"bytes": "!!"}):
        with pytest.raises(ValueError):
            key_from_json(bad)
    with pytest.raises(UnsupportedKeyError):
        key_to_json(["a", "list"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- bad files


def _good_file(tmp_path: Path, n: int = 30) -> Path:
    store = InMemoryContextStore()
    store.set_many([(("row", i), {"i": i}) for i in range(n)])
    path = tmp_path / "good.jsonl"
    export_store(store, path)
    return path


def _import_error(path: Path, **kwargs: Any) -> str:
    with pytest.raises(ContextSerializationError) as info:
        import_store(path, InMemoryContextStore(), **kwargs)
    return str(info.value)


def test_bad_lines_name_their_line_number(tmp_path: Path) -> None:
    lines = _good_file(tmp_path, 3).read_text().splitlines()
    cases = {
        "not json": (2, "{oops", "line 2: is not valid JSON"),
        "not an object": (3, "[1, 2]", "line 3: an entry is a JSON object"),
        "no key": (2, '{"v": {}}', "line 2: an entry needs a key"),
        "bad key": (4, '{"k": {"colour": "red"}, "v": {}}', "line 4: bad key"),
        "list value": (2, '{"k": 1, "v": [1]}', "line 2: the metadata 'v' must be a JSON object"),
        "bad namespace": (3, '{"ns": 5, "k": 1, "v": {}}', "line 3: bad namespace"),
    }
    for what, (line, text, message) in cases.items():
        bad = list(lines)
        bad[line - 1] = text
        path = tmp_path / f"{what}.jsonl"
        path.write_text("\n".join(bad) + "\n")
        assert message in _import_error(path), what


def test_bad_headers(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    for text, message in [
        ("", "the file is empty"),
        ('{"k": 1, "v": {}}\n', "not a context-framework checkpoint"),
        ("\x89PNG\r\n", "not a context-framework checkpoint"),
        (
            '{"format": "context-framework", "version": 2}\n',
            "format version 2; this library reads up to version 1",
        ),
        ('{"format": "context-framework"}\n', "no valid version"),
        ('{"format": "context-framework", "version": 1, "key_codec": 9}\n', "codec version 9"),
    ]:
        path.write_text(text)
        assert message in _import_error(path), text


def test_truncated_and_altered_files_are_refused(tmp_path: Path) -> None:
    good = _good_file(tmp_path)
    data = good.read_bytes()
    path = tmp_path / "bad.jsonl"
    path.write_bytes(data[: data.rindex(b'{"end"')])  # cut at a line boundary
    assert "ends without its end record after 30 entries: it is truncated" in _import_error(path)
    path.write_bytes(data[: data.rindex(b'{"end"') - 5])  # cut inside a line
    assert "line 31: is cut short (the file is truncated)" in _import_error(path)
    path.write_bytes(data.replace(b'{"i":7}', b'{"i":8}'))  # altered, still valid JSON
    assert "CRC-32 does not match" in _import_error(path)
    lines = data.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:5] + lines[6:]))  # a line lost
    assert "the end record counts 30 entries but the file holds 29" in _import_error(path)
    path.write_bytes(data + b'{"k": 1, "v": {}}\n')
    assert "line 33: data after the end record" in _import_error(path)
    path.write_bytes(data.replace(b'"i":3', b'"\xff":3'))
    assert "line 5: not valid UTF-8" in _import_error(path)
    path.write_bytes(data.replace(b"\n", b"\n\n"))  # blank lines are fine
    assert import_store(path, InMemoryContextStore()) == 30


def test_truncated_gzip_and_parquet(tmp_path: Path) -> None:
    store = InMemoryContextStore()
    store.set_many([(("row", i), {"i": i, "pad": "x" * 50}) for i in range(2_000)])
    gz = tmp_path / "c.jsonl.gz"
    export_store(store, gz)
    data = gz.read_bytes()
    gz.write_bytes(data[: len(data) // 2])
    assert "the compressed file is truncated" in _import_error(gz)
    gz.write_bytes(data[:2] + b"garbage" * 10)
    assert "cannot be read" in _import_error(gz)
    if importlib.util.find_spec("pyarrow") is None:
        return
    pq = tmp_path / "c.parquet"
    export_store(store, pq)
    data = pq.read_bytes()
    pq.write_bytes(data[: len(data) - 100])
    assert "not a readable Parquet file" in _import_error(pq, format="parquet")


def test_parquet_without_header_or_with_a_bad_key(tmp_path: Path) -> None:
    need_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"key": [b"\x01"], "value": ["{}"], "namespace": [""]}), path)
    assert "not a context-framework checkpoint" in _import_error(path)
    store = InMemoryContextStore()
    store.set_many([(("row", i), {"i": i}) for i in range(3)])
    good = tmp_path / "good.parquet"
    export_store(store, good)
    table = pq.read_table(good)
    keys = table.column("key").to_pylist()
    keys[1] = b"\x09garbage"
    bad = table.set_column(0, "key", pa.array(keys, pa.binary()))
    pq.write_table(bad.replace_schema_metadata(table.schema.metadata), path)
    assert "row 2: bad key" in _import_error(path)


def test_what_a_bad_entry_leaves_written(tmp_path: Path) -> None:
    """Batches before the bad line are written, nothing from its batch on; verify=True writes nothing."""
    lines = _good_file(tmp_path, 50).read_text().splitlines()
    lines[26] = '{"k": ["row", 25], "v": "not an object"}'  # the 26th entry
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    target = InMemoryContextStore()
    with pytest.raises(ContextSerializationError, match="line 27"):
        import_store(path, target, batch_size=10)
    assert sorted(target.list_keys()) == [("row", i) for i in range(20)]
    target = InMemoryContextStore()
    with pytest.raises(ContextSerializationError, match="line 27"):
        import_store(path, target, batch_size=10, verify=True)
    assert target.count() == 0
    target.set(("keep", 1), {})
    with pytest.raises(ContextSerializationError):
        import_store(path, target, clear=True)  # clear verifies first: nothing is deleted
    assert target.list_keys() == [("keep", 1)]


def test_an_entry_the_target_refuses_is_named(tmp_path: Path) -> None:
    store = InMemoryContextStore()
    store.set_many([(("row", i), {"text": "x" * (10 if i != 13 else 500)}) for i in range(30)])
    path = tmp_path / "c.jsonl"
    export_store(store, path)
    target = InMemoryContextStore(max_value_size=100)
    message = r"c\.jsonl: line 15 \(key \('row', 13\)\), not written"
    with pytest.raises(ContextValueTooLargeError, match=message):
        import_store(path, target, batch_size=10)
    assert target.count() == 10


def test_export_is_atomic(tmp_path: Path) -> None:
    class Failing(InMemoryContextStore):
        def items(self, prefix: Any = None) -> Iterator[tuple[Any, dict[str, Any]]]:
            yield from list(super().items(prefix))[:3]
            raise OSError("disk on fire")

    store = Failing()
    store.set_many([(("row", i), {"i": i}) for i in range(10)])
    path = tmp_path / "c.jsonl"
    path.write_text("previous checkpoint")
    with pytest.raises(OSError, match="disk on fire"):
        export_store(store, path)
    assert path.read_text() == "previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def test_export_option_errors(tmp_path: Path) -> None:
    store = InMemoryContextStore()
    with pytest.raises(ContextConfigurationError, match=r"drop the \.gz"):
        export_store(store, tmp_path / "x.parquet.gz")
    with pytest.raises(ContextConfigurationError, match="format must be"):
        export_store(store, tmp_path / "x", format="csv")  # type: ignore[arg-type]
    with pytest.raises(ContextConfigurationError, match="namespaces is empty"):
        export_store(store, tmp_path / "x", namespaces=[])
    with pytest.raises(UnsupportedKeyError):
        export_store(store, tmp_path / "x", prefix="row")  # type: ignore[arg-type]
    with pytest.raises(ContextConfigurationError, match="binary file"):
        export_store(store, io.StringIO(), compress=True)
    with pytest.raises(ContextConfigurationError, match="cannot open"):
        import_store(tmp_path / "missing.jsonl", store)
    with pytest.raises(ContextConfigurationError, match=r"cannot write .*No such file"):
        export_store(store, tmp_path / "no" / "x.jsonl")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- the ctx command


def test_cli_export_import_copy_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    dst = f"sqlite:///{tmp_path / 'dst.db'}"
    with open_store(src) as store:
        fill(store)
        expected = snapshot(store)
    path = str(tmp_path / "c.jsonl.gz")
    assert main(["export", src, path, "--namespace", "", "--namespace", "sub"]) == 0
    assert f"{len(KEYS) + 5:,} entries" in capsys.readouterr().err
    assert main(["import", path, "--check"]) == 0
    assert "valid jsonl checkpoint of 44 entries" in capsys.readouterr().err
    assert main(["import", path, dst, "--into", "restored", "--batch-size", "7", "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["copy", src, dst, "--prefix", '["row"]', "--into", "copied", "--mode", "skip-existing"]) == 0
    with open_store(dst) as store:
        assert snapshot(store, "restored") == expected and store.with_namespace("restored/sub").count() == 5
        assert store.with_namespace("copied").count() == ROW_KEYS


def test_cli_errors_exit_codes_and_no_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "context-framework", "version": 1}\n{oops\n')
    assert main(["import", str(bad), "memory://"]) == 1
    err = capsys.readouterr().err
    assert "line 2: is not valid JSON" in err and "Traceback" not in err
    assert main(["import", str(bad)]) == 2
    assert "give the URL" in capsys.readouterr().err
    assert main(["export", "memory://", str(tmp_path / "x.jsonl"), "--prefix", "row"]) == 2
    assert "--prefix takes" in capsys.readouterr().err
    assert main(["export", "nosuch://x", str(tmp_path / "x.jsonl")]) == 2
    assert "no store is registered" in capsys.readouterr().err
    secret = "s3cr3t-pw"
    url = f"redis://user:{secret}@127.0.0.1:1/0?socket_connect_timeout=0.5&retries=0"
    assert main(["export", url, str(tmp_path / "x.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ctx export: ") and secret not in err and "Traceback" not in err
    assert main(["copy", "memory://", f"postgresql://u:{secret}@127.0.0.1:1/db?connect_timeout=1"]) == 1
    err = capsys.readouterr().err
    assert secret not in err and "Traceback" not in err
    assert not (tmp_path / "x.jsonl").exists()


def test_cli_pipes_through_stdin_and_stdout(tmp_path: Path) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    dst = f"sqlite:///{tmp_path / 'dst.db'}"
    with open_store(src) as store:
        fill(store)
        expected = snapshot(store)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    ctx = [sys.executable, "-m", "context_framework"]
    export = subprocess.Popen([*ctx, "export", src, "-", "--gzip"], stdout=subprocess.PIPE, env=env)
    result = subprocess.run(
        [*ctx, "import", "-", dst], stdin=export.stdout, capture_output=True, text=True, env=env, timeout=60
    )
    assert export.wait(timeout=60) == 0 and export.stdout is not None
    export.stdout.close()
    assert result.returncode == 0, result.stderr
    assert f"{len(KEYS)} entries" in result.stderr
    with open_store(dst) as store:
        assert snapshot(store) == expected


# --------------------------------------------------------------------------- acceptance


def _acceptance_key(i: int) -> Any:
    """Mostly ("row", i); one entry in 1,000 has another key type."""
    if i % 1000:
        return ("row", i)
    kinds = [
        ("row", float(i) + 0.5),
        ("row", str(i)),
        ("cell", i, "column", "Gène"),
        ("when", datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=i)),
        ("blob", i.to_bytes(4, "big")),
        ("day", date(2000, 1, 1) + timedelta(days=i // 1000)),
    ]
    return kinds[(i // 1000) % len(kinds)]


def _acceptance_value(i: int) -> dict[str, Any]:
    return {"i": i, "source": "sensor-7", "q": i * 0.25, "tags": ["a", str(i % 7)], "ok": i % 2 == 0}


@pytest.mark.slow
def test_acceptance_million_entries_redis_to_postgres(
    redis_url: str, postgres_url: str, unique_name: str, tmp_path: Path
) -> None:
    """A checkpoint of 1,000,000 entries written from Redis and restored into PostgreSQL compares equal."""
    n = 1_000_000
    redis_base, pg_base = redis_url.partition("?")[0], postgres_url.partition("?")[0]
    path = tmp_path / "million.jsonl"
    source = open_store(f"{redis_base}?prefix={unique_name}:")
    target = open_store(f"{pg_base}?table={unique_name}")
    try:
        for start in range(0, n, 50_000):
            source.set_many(
                [(_acceptance_key(i), _acceptance_value(i)) for i in range(start, start + 50_000)]
            )
        c0, t0 = time.process_time(), time.perf_counter()
        assert export_store(source, path) == n
        c1, t1 = time.process_time(), time.perf_counter()
        assert import_store(path, target) == n
        c2, t2 = time.process_time(), time.perf_counter()
        assert target.count() == n
        compared = 0
        page: list[tuple[Any, dict[str, Any]]] = []

        def compare() -> int:
            found = source.get_many([k for k, _ in page])
            for (key, restored), original in zip(page, found):
                assert original is not None, key
                assert dumps_json(restored) == dumps_json(original), key
            return len(page)

        for item in target.items():
            page.append(item)
            if len(page) == 10_000:
                compared += compare()
                page.clear()
        compared += compare()
        assert compared == n
        size = path.stat().st_size
        print(
            f"\ncheckpoint of {n:,} entries ({size / 1e6:.0f} MB JSON Lines): export from Redis "
            f"{t1 - t0:.1f} s ({n / (t1 - t0):,.0f} entries/s, client CPU {c1 - c0:.1f} s), import into "
            f"PostgreSQL {t2 - t1:.1f} s ({n / (t2 - t1):,.0f} entries/s, client CPU {c2 - c1:.1f} s); "
            f"load average {os.getloadavg()[0]:.1f}"
        )
    finally:
        source.clear()
        source.close()
        target.close()
        _drop_pg(pg_base, unique_name)


def test_a_key_too_long_for_sql_names_the_batch(make_url: Callable[[str], str], tmp_path: Path) -> None:
    store = InMemoryContextStore()
    store.set_many([(("row", i), {}) for i in range(4)])
    store.set(("row", "x" * 3000), {})
    path = tmp_path / "c.jsonl"
    export_store(store, path)
    with open_store(make_url("postgresql")) as target:
        message = r"c\.jsonl: lines 2-6, not written: .*2,048-byte limit"
        with pytest.raises(UnsupportedKeyError, match=message):
            import_store(path, target, batch_size=100)
        assert target.count() == 0
