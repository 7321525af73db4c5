"""pytest-benchmark suite: the spec's adds and gets per store, in the three modes, and batch sizes.

Run ``python -m pytest benchmarks`` (pytest-benchmark prints its table;
``--benchmark-json FILE`` saves it, ``--benchmark-compare`` compares runs).
Every benchmark works on ``--bench-ops`` entries ``("row", i) -> {"meta":
"value_i"}`` of the spec's DataFrame, on a fresh store per test:

* ``test_add[store-mode]``: the adds, from an empty store each round
  (buffered: the final ``flush()`` included; batch: one ``add_context_many``);
* ``test_get[store-mode]``: the gets of entries already stored (buffered: the
  cache has them, as after the adds);
* ``test_batch_size[store-size]``: ``add_context_many`` then ``get_context_many``
  in calls of ``size`` entries.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from context_framework.adapters.pandas_adapter import PandasContextAdapter
from context_framework.bench.modes import BUFFER, CACHE, MODES

SIZES = (1, 10, 100, 1000, 10_000)


def _adapter(df: pd.DataFrame, store: Any, mode: str) -> PandasContextAdapter:
    wrapping: dict[str, Any] = {"buffer": BUFFER, "cache": CACHE} if mode == "buffered" else {}
    return PandasContextAdapter(df, store, **wrapping)


def _items(n: int) -> list[tuple[tuple[str, int], dict[str, str]]]:
    return [(("row", i), {"meta": f"value_{i}"}) for i in range(n)]


def _add(adapter: PandasContextAdapter, mode: str, n: int) -> None:
    if mode == "batch":
        adapter.add_context_many(_items(n))
        return
    for i in range(n):
        adapter.add_context(("row", i), {"meta": f"value_{i}"})
    if mode == "buffered":
        adapter.flush()


def _get(adapter: PandasContextAdapter, mode: str, n: int) -> Any:
    if mode == "batch":
        return adapter.get_context_many([("row", i) for i in range(n)])
    value = None
    for i in range(n):
        value = adapter.get_context(("row", i))
    return value


@pytest.mark.parametrize("mode", MODES)
def test_add(benchmark: Any, store: Any, df: pd.DataFrame, mode: str, ops: int, rounds: int) -> None:
    adapters: list[PandasContextAdapter] = []

    def fresh() -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Each round starts from an empty store (and, buffered, an empty buffer and cache)."""
        store.clear()
        adapters.append(_adapter(df, store, mode))
        return (adapters[-1], mode, ops), {}

    benchmark.group = f"add {ops:,}"
    benchmark.pedantic(_add, setup=fresh, rounds=rounds)
    for adapter in adapters:
        adapter.close()
    assert store.get(("row", ops - 1)) == {"meta": f"value_{ops - 1}"}


@pytest.mark.parametrize("mode", MODES)
def test_get(benchmark: Any, store: Any, df: pd.DataFrame, mode: str, ops: int, rounds: int) -> None:
    adapter = _adapter(df, store, mode)
    _add(adapter, mode, ops)
    benchmark.group = f"get {ops:,}"
    last = benchmark.pedantic(_get, args=(adapter, mode, ops), rounds=rounds)
    adapter.close()
    assert (last[-1] if mode == "batch" else last) == {"meta": f"value_{ops - 1}"}


@pytest.mark.parametrize("size", SIZES)
def test_batch_size(benchmark: Any, store: Any, df: pd.DataFrame, size: int, ops: int, rounds: int) -> None:
    adapter = PandasContextAdapter(df, store)
    items = _items(ops)
    chunks = [items[lo : lo + size] for lo in range(0, ops, size)]
    key_chunks = [[key for key, _ in chunk] for chunk in chunks]

    def add_then_get() -> Any:
        for chunk in chunks:
            adapter.add_context_many(chunk)
        values = None
        for keys in key_chunks:
            values = adapter.get_context_many(keys)
        return values

    benchmark.group = f"batch add+get {ops:,} by size"
    values = benchmark.pedantic(add_then_get, setup=lambda: store.clear() and None, rounds=rounds)
    assert values[-1] == {"meta": f"value_{ops - 1}"}
