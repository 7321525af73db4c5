"""``ctx bench`` modes: per-call, buffered (through the wrappers, flush timed) and batch."""

from __future__ import annotations

import sys
from typing import Any

import pandas as pd
import pytest

from context_framework.bench.modes import MODES, buffered_loop, parse_modes, run_mode, wrappers_unavailable
from context_framework.bench.spec_benchmark import format_summary, format_table, run_benchmarks
from context_framework.bench.targets import open_target, parse_stores


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return pd.DataFrame({"A": range(500)})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_each_mode_leaves_every_write_in_the_store(store: str, mode: str, df: pd.DataFrame) -> None:
    with open_target(store) as target:
        add_s, get_s = run_mode(mode, df, target, 300)
        assert add_s > 0 and get_s > 0
        assert target.count() == 300
        assert target.get(("row", 0)) == {"meta": "value_0"}


def test_buffered_loop_times_the_flush(df: pd.DataFrame) -> None:
    """When the add clock stops, the writes are in the inner store, not only in the buffer."""
    with open_target("sqlite") as target:
        buffered_loop(df, target, 250)
        assert target.get(("row", 249)) == {"meta": "value_249"}


def test_redis_buffered_mode(redis_url: str, df: pd.DataFrame) -> None:
    with open_target("redis", redis_url) as target:
        run_mode("buffered", df, target, 200)
        assert target.count() == 200


def test_buffered_mode_says_unavailable_without_the_wrappers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "context_framework.wrappers.cached", None)
    assert "not importable" in (wrappers_unavailable() or "")
    notes: list[str] = []
    unavailable: dict[str, str] = {}
    results = run_benchmarks(
        num_ops=50, batch_ops=50, rows=50, repeat=1, stores=("memory",), notes=notes, unavailable=unavailable
    )
    assert {r.mode for r in results} == {"per-call", "batch"}
    assert "buffered" in unavailable and notes[0].startswith("buffered mode unavailable")
    assert "unavailable" in format_summary(results, MODES, unavailable)


def test_buffered_ratio_is_to_the_hand_written_buffer() -> None:
    """Like for like: the buffered row against a buffer written by hand over the same client; the
    raw per-call loop is a second, separately named ratio."""
    results = run_benchmarks(
        num_ops=100, batch_ops=100, rows=100, repeat=1, stores=("sqlite",), modes=("buffered",)
    )
    rows = {(r.store, r.mode): r for r in results}
    assert list(rows) == [
        ("hand-written buffer (sqlite3)", "buffered"),
        ("raw sqlite3", "per-call"),
        ("SQLiteContextStore", "buffered"),
    ]
    ours = rows[("SQLiteContextStore", "buffered")]
    assert (ours.baseline_of, ours.baseline_mode) == ("hand-written buffer (sqlite3)", "buffered")
    hand = rows[("hand-written buffer (sqlite3)", "buffered")]
    assert ours.ratio == pytest.approx(ours.ops_per_second / hand.ops_per_second)
    raw = rows[("raw sqlite3", "per-call")]
    assert ours.raw_per_call_of == "raw sqlite3"
    assert ours.raw_per_call_ratio == pytest.approx(ours.ops_per_second / raw.ops_per_second)
    table = format_table(results)
    assert "x hand-written buffer (sqlite3) (" in table and "x raw sqlite3 per-call" in table


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (parse_modes, " batch , per-call,batch", ("batch", "per-call")),
        (parse_stores, "sqlite,memory", ("sqlite", "memory")),
    ],
)
def test_parsers_keep_order_and_drop_repeats(parse: Any, text: str, expected: tuple[str, ...]) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize("text", ["", "fast", "per-call,slow"])
def test_parse_modes_refuses_unknown_modes(text: str) -> None:
    with pytest.raises(ValueError, match="mode"):
        parse_modes(text)
