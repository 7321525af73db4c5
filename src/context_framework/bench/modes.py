"""The three ways ``ctx bench`` runs the spec's work: per-call, buffered, batch.

* **per-call**: the spec's loop, ``num_ops`` × ``add_context(("row", i), {"meta": ...})``
  then ``num_ops`` × ``get_context(("row", i))``, on a ``PandasContextAdapter``.
* **buffered**: the *same, unchanged* loop on
  ``PandasContextAdapter(df, store, buffer=1000, cache=10000)``, i.e. through
  ``CachedStore(BufferedStore(store))``. The add time includes the final
  ``flush()``: when the clock stops, every write is in the store. Gets go
  through the cache, which the writes filled (write-through).
* **batch**: the same entries through ``add_context_many`` / ``get_context_many``.

Each loop returns ``(add_seconds, get_seconds)``.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = [
    "BUFFER",
    "CACHE",
    "MODES",
    "batch_loop",
    "buffered_loop",
    "parse_modes",
    "run_mode",
    "spec_loop",
    "wrappers_unavailable",
]

MODES = ("per-call", "buffered", "batch")
#: Write-buffer size and cache size of the buffered mode.
BUFFER = 1000
CACHE = 10_000


def parse_modes(text: str) -> tuple[str, ...]:
    """``"per-call,batch"`` -> ``("per-call", "batch")``; ``ValueError`` naming unknown modes."""
    from .targets import parse_choices

    return parse_choices(text, MODES, "mode")


def wrappers_unavailable() -> str | None:
    """Why the buffered mode cannot run (the wrappers do not import), or ``None``."""
    import importlib

    try:
        for module in ("buffered", "cached"):
            importlib.import_module(f"context_framework.wrappers.{module}")
    except ImportError as exc:
        return f"BufferedStore/CachedStore not importable ({exc})"
    return None


def spec_loop(adapter: Any, num_ops: int, *, flush: bool = False) -> tuple[float, float]:
    """The spec's loop: ``num_ops`` adds then ``num_ops`` gets; returns (add_s, get_s).

    ``flush=True`` calls ``adapter.flush()`` before the add clock stops.
    """
    start = time.perf_counter()
    for i in range(num_ops):
        adapter.add_context(("row", i), {"meta": f"value_{i}"})
    if flush:
        adapter.flush()
    mid = time.perf_counter()
    for i in range(num_ops):
        adapter.get_context(("row", i))
    end = time.perf_counter()
    return mid - start, end - mid


def batch_loop(adapter: Any, num_ops: int) -> tuple[float, float]:
    """The same work through ``add_context_many`` / ``get_context_many``.

    Both are given generators, as the docs advise: the adapter consumes them with
    the cyclic garbage collector paused (a list of 100,000 fresh dicts built by
    the caller first sets off full collections that cost more than the writes).
    """
    start = time.perf_counter()
    adapter.add_context_many((("row", i), {"meta": f"value_{i}"}) for i in range(num_ops))
    mid = time.perf_counter()
    values = adapter.get_context_many(("row", i) for i in range(num_ops))
    end = time.perf_counter()
    if values[-1] != {"meta": f"value_{num_ops - 1}"}:
        raise AssertionError("batch benchmark read back the wrong value")
    return mid - start, end - mid


def buffered_loop(df: Any, store: Any, num_ops: int) -> tuple[float, float]:
    """The spec's loop, unchanged, through a write buffer and a read cache over ``store``."""
    from ..adapters.pandas_adapter import PandasContextAdapter

    adapter = PandasContextAdapter(df, store, buffer=BUFFER, cache=CACHE)
    try:
        timing = spec_loop(adapter, num_ops, flush=True)
    finally:
        adapter.close()  # flushes (nothing left) and closes the wrappers; ``store`` stays open
    last = num_ops - 1
    if store.get(("row", last)) != {"meta": f"value_{last}"}:
        raise AssertionError("buffered benchmark: the last write is not in the store after flush()")
    return timing


def run_mode(mode: str, df: Any, store: Any, num_ops: int) -> tuple[float, float]:
    """Run ``mode`` on ``store`` (wrapped in a ``PandasContextAdapter`` over ``df``)."""
    from ..adapters.pandas_adapter import PandasContextAdapter

    if mode == "per-call":
        return spec_loop(PandasContextAdapter(df, store), num_ops)
    if mode == "buffered":
        return buffered_loop(df, store, num_ops)
    if mode == "batch":
        return batch_loop(PandasContextAdapter(df, store), num_ops)
    raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
