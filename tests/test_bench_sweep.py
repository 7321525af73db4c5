"""``ctx bench --sweep``: batch throughput per batch size."""

from __future__ import annotations

import pytest

from context_framework.bench.sweep import format_sweep, parse_sizes, run_batch_sweep, sweep_entries


def test_sweep_on_sqlite() -> None:
    steps: list[str] = []
    results = run_batch_sweep("sqlite", sizes=(1, 50), num_ops=120, repeat=2, step=steps.append)
    assert [(r["batch_size"], r["entries"], r["calls"]) for r in results] == [(1, 120, 120), (50, 150, 3)]
    assert all(r["add_entries_per_second"] > 0 and r["get_entries_per_second"] > 0 for r in results)
    assert len(steps) == 4 and "batch size 50" in steps[-1]
    table = format_sweep(results)
    assert "SQLiteContextStore" in table and "Add+get entries/s" in table


def test_sweep_on_redis(redis_url: str) -> None:
    (result,) = run_batch_sweep("redis", redis_url, sizes=(10,), num_ops=100, repeat=1)
    assert result["entries"] == 100 and result["entries_per_second"] > 0


def test_sweep_entries_make_at_least_three_calls() -> None:
    assert sweep_entries(1, 10_000) == 10_000
    assert sweep_entries(10_000, 10_000) == 30_000
    assert sweep_entries(300, 1000) == 1200


@pytest.mark.parametrize(
    ("text", "sizes"), [("1,10,100", (1, 10, 100)), ("100, 1 ,1_000,100", (1, 100, 1000))]
)
def test_parse_sizes(text: str, sizes: tuple[int, ...]) -> None:
    assert parse_sizes(text) == sizes


@pytest.mark.parametrize("text", ["", "0", "1,-5", "ten", "1.5"])
def test_parse_sizes_refuses_bad_values(text: str) -> None:
    with pytest.raises(ValueError):
        parse_sizes(text)
