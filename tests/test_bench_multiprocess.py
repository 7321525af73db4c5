"""``ctx bench --processes N``: N processes on one shared store."""

from __future__ import annotations

from typing import Any

import pytest

from context_framework import InMemoryContextStore
from context_framework.bench.multiprocess import format_processes, percentiles, run_multiprocess_bench


def _check(run: dict[str, Any], processes: int, ops: int) -> None:
    assert run["processes"] == processes and run["ops_per_process"] == ops
    assert len(run["per_process"]) == processes
    assert run["add_seconds"] > 0 and run["get_seconds"] > 0
    entries = processes * ops
    assert run["calls_per_second"] == pytest.approx(2 * entries / (run["add_seconds"] + run["get_seconds"]))
    for phase in ("add_us", "get_us"):
        assert 0 < run[phase]["p50"] <= run[phase]["p99"] <= run[phase]["max"]
        for proc in run["per_process"]:
            assert 0 < proc[phase]["p50"] <= proc[phase]["p99"]


def test_two_processes_share_one_sqlite_file() -> None:
    run = run_multiprocess_bench("sqlite", processes=2, mode="per-call", num_ops=300, rows=100)
    _check(run, 2, 300)
    assert run["shared"] and run["entries_per_call"] == 1


def test_two_processes_share_one_redis_namespace(redis_url: str) -> None:
    run = run_multiprocess_bench("redis", redis_url, processes=2, mode="per-call", num_ops=300)
    _check(run, 2, 300)
    assert run["store"] == "RedisContextStore"


def test_buffered_and_batch_modes() -> None:
    buffered = run_multiprocess_bench("sqlite", processes=2, mode="buffered", num_ops=300)
    _check(buffered, 2, 300)
    assert all(p["flush_ms"] > 0 for p in buffered["per_process"])
    batch = run_multiprocess_bench("memory", processes=1, mode="batch", num_ops=250, batch_size=100)
    _check(batch, 1, 250)
    assert batch["entries_per_call"] == 100 and not batch["shared"]
    table = format_processes([buffered, batch])
    assert "InMemoryContextStore (one per process)" in table and "batch (100/call)" in table


def test_a_failing_worker_is_reported() -> None:
    """Each worker's store refuses the spec's values (too big): the error names the process and why."""
    tiny = InMemoryContextStore(max_value_size=8)
    with pytest.raises(RuntimeError, match=r"process [01]: Context\w*Error"):
        run_multiprocess_bench("memory", processes=2, num_ops=10, target=tiny)


@pytest.mark.parametrize("kwargs", [{"processes": 0}, {"mode": "turbo"}, {"num_ops": 0}, {"batch_size": 0}])
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        run_multiprocess_bench("memory", **kwargs)


def test_percentiles_are_nearest_rank_in_microseconds() -> None:
    samples = [i * 1000 for i in range(1, 101)]  # 1..100 µs
    assert percentiles(samples) == {"p50": 50.0, "p99": 99.0, "max": 100.0}
    assert percentiles([7000]) == {"p50": 7.0, "p99": 7.0, "max": 7.0}
    assert percentiles([]) == {"p50": 0.0, "p99": 0.0, "max": 0.0}
