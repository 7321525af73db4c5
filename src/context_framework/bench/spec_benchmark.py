"""The spec's single-process benchmark, run for every store, with baselines measured in the same run.

The spec (``performance_benchmarks.md``, section 3) wraps a 100,000-row
DataFrame in ``PandasContextAdapter`` and times ``num_ops`` ``add_context``
calls on ``("row", i)`` followed by ``num_ops`` ``get_context`` calls. Its
table counts an add+get *pair* as one op; we print that (Ops/Second) and the
number of calls per second (twice as many).

Every case runs ``repeat`` times, interleaved with its baseline so that both
see the same machine load, and the median is reported. Baselines:

* **dict baseline**: the minimal implementation of the spec's API — a plain
  ``dict`` plus the same key validation as ours (key conventions, labels in
  the axis with their exact type), written the plain pandas way
  (``label in df.index``). It copies nothing, so it gives none of our
  isolation or value guarantees. A second reference row, **dict (membership
  only)**, does bare ``label in df.index`` tests and accepts keys we refuse.
* **raw sqlite3**: the same loop written directly against ``sqlite3`` with
  the same journal settings (see :mod:`.sqlite_baseline`).
"""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from numbers import Integral
from typing import Any

__all__ = [
    "CaseResult",
    "DictBaselineAdapter",
    "MembershipDictAdapter",
    "run_benchmarks",
    "spec_loop",
]

#: Stores ``ctx bench`` knows; server stores use the URL given, else the one in their
#: environment variable, else a throwaway server (``context_framework.testing.servers``).
STORES = ("memory", "sqlite", "redis", "redis-cluster", "postgres", "mysql")
SERVER_STORES = ("redis", "redis-cluster", "postgres", "mysql")

Case = tuple[str, str, int, str | None, Callable[[], tuple[float, float]]]


@dataclass
class CaseResult:
    """The median timing of one benchmark case."""

    store: str
    mode: str
    num_ops: int
    add_seconds: float
    get_seconds: float
    baseline_of: str | None = None
    ratio: float | None = None
    runs: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.add_seconds + self.get_seconds

    @property
    def ops_per_second(self) -> float:
        """Add+get pairs per second, as the spec's table counts them."""
        return self.num_ops / self.seconds if self.seconds else float("inf")

    @property
    def calls_per_second(self) -> float:
        return 2 * self.ops_per_second

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            seconds=self.seconds,
            ops_per_second=self.ops_per_second,
            calls_per_second=self.calls_per_second,
        )
        return out


class MembershipDictAdapter:
    """A dict plus bare membership tests (``label in df.index``): weaker checks than ours.

    It accepts keys that ``PandasContextAdapter`` refuses (``("row", True)``,
    ``("row", 1.0)`` on an integer index, unknown kinds), so it is shown for
    reference only, without a ratio.
    """

    def __init__(self, df: Any) -> None:
        self.df = df
        self._data: dict[Any, Any] = {}

    def _validate(self, key: Any) -> None:
        if not isinstance(key, tuple) or not key:
            raise KeyError(key)
        if key[0] == "row":
            if key[1] not in self.df.index:
                raise KeyError(key)
        elif key[0] == "column" and key[1] not in self.df.columns:
            raise KeyError(key)

    def add_context(self, key: Any, metadata: dict[str, Any]) -> None:
        self._validate(key)
        self._data[key] = metadata

    def get_context(self, key: Any) -> dict[str, Any] | None:
        self._validate(key)
        return self._data.get(key)


def _check_label(label: Any, labels: Any) -> None:
    """Plain pandas version of the adapter's rule: the label is in the axis, type included."""
    kind = labels.dtype.kind
    if isinstance(label, bool) and kind != "b":
        raise KeyError(label)
    if kind in "iu" and isinstance(label, float):
        raise KeyError(label)
    if kind == "f" and isinstance(label, Integral) and not isinstance(label, bool):
        raise KeyError(label)
    if label not in labels:
        raise KeyError(label)


class DictBaselineAdapter(MembershipDictAdapter):
    """The minimal implementation of the spec's API with the same key validation as ours.

    A plain ``dict`` plus the checks ``PandasContextAdapter`` makes, written the
    plain pandas way: the key conventions (``("dataset",)``, ``("column", c)``,
    ``("row", r)``, ``("row", r, "column", c)``; other kinds refused) and labels
    that are in the axis with their exact type (no ``True`` or ``1.0`` for the
    row ``1``). It stores and returns the caller's dicts as they are, so it has
    none of our isolation or value checks.
    """

    def _validate(self, key: Any) -> None:
        if not isinstance(key, tuple) or not key:
            raise KeyError(key)
        kind = key[0]
        if kind == "row":
            if len(key) == 2:
                _check_label(key[1], self.df.index)
            elif len(key) == 4 and key[2] == "column":
                _check_label(key[1], self.df.index)
                _check_label(key[3], self.df.columns)
            else:
                raise KeyError(key)
        elif kind == "column" and len(key) == 2:
            _check_label(key[1], self.df.columns)
        elif kind != "dataset" or len(key) != 1:
            raise KeyError(key)


def spec_loop(adapter: Any, num_ops: int) -> tuple[float, float]:
    """The spec's loop: ``num_ops`` adds then ``num_ops`` gets; returns (add_s, get_s)."""
    start = time.perf_counter()
    for i in range(num_ops):
        adapter.add_context(("row", i), {"meta": f"value_{i}"})
    mid = time.perf_counter()
    for i in range(num_ops):
        adapter.get_context(("row", i))
    end = time.perf_counter()
    return mid - start, end - mid


def batch_loop(adapter: Any, num_ops: int) -> tuple[float, float]:
    """The same work through ``add_context_many`` / ``get_context_many``."""
    start = time.perf_counter()
    adapter.add_context_many([(("row", i), {"meta": f"value_{i}"}) for i in range(num_ops)])
    mid = time.perf_counter()
    values = adapter.get_context_many([("row", i) for i in range(num_ops)])
    end = time.perf_counter()
    if values[-1] != {"meta": f"value_{num_ops - 1}"}:
        raise AssertionError("batch benchmark read back the wrong value")
    return mid - start, end - mid


@contextmanager
def _sqlite_file(workdir: str, name: str) -> Iterator[str]:
    path = os.path.join(workdir, name)
    try:
        yield path
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.remove(path + suffix)
            except FileNotFoundError:
                pass


def _cases(df: Any, num_ops: int, batch_ops: int, stores: tuple[str, ...], workdir: str) -> list[Case]:
    """(store label, mode, num_ops, baseline label, run) for every case, baselines first."""
    from ..adapters.pandas_adapter import PandasContextAdapter
    from ..in_memory_context_store import InMemoryContextStore

    cases: list[Case] = []
    if "memory" in stores:
        cases.append(("dict baseline", "per-call", num_ops, None,
                      lambda: spec_loop(DictBaselineAdapter(df), num_ops)))
        cases.append(("dict (membership only)", "per-call", num_ops, None,
                      lambda: spec_loop(MembershipDictAdapter(df), num_ops)))
        cases.append(("InMemoryContextStore", "per-call", num_ops, "dict baseline",
                      lambda: spec_loop(PandasContextAdapter(df, InMemoryContextStore()), num_ops)))
        cases.append(("InMemoryContextStore", "batch", batch_ops, None,
                      lambda: batch_loop(PandasContextAdapter(df, InMemoryContextStore()),
                                         batch_ops)))
    if "sqlite" in stores:
        from ..sqlite_store import SQLiteContextStore
        from .sqlite_baseline import raw_sqlite_batch, raw_sqlite_per_call

        def raw_per_call() -> tuple[float, float]:
            with _sqlite_file(workdir, "raw.db") as path:
                return raw_sqlite_per_call(path, num_ops)

        def ours_per_call() -> tuple[float, float]:
            with _sqlite_file(workdir, "ctx.db") as path:
                store = SQLiteContextStore(path)
                try:
                    return spec_loop(PandasContextAdapter(df, store), num_ops)
                finally:
                    store.close()

        def raw_batch() -> tuple[float, float]:
            with _sqlite_file(workdir, "raw-batch.db") as path:
                return raw_sqlite_batch(path, batch_ops)

        def ours_batch() -> tuple[float, float]:
            with _sqlite_file(workdir, "ctx-batch.db") as path:
                store = SQLiteContextStore(path)
                try:
                    return batch_loop(PandasContextAdapter(df, store), batch_ops)
                finally:
                    store.close()

        cases += [
            ("raw sqlite3", "per-call", num_ops, None, raw_per_call),
            ("SQLiteContextStore", "per-call", num_ops, "raw sqlite3", ours_per_call),
            ("raw sqlite3", "batch", batch_ops, None, raw_batch),
            ("SQLiteContextStore", "batch", batch_ops, "raw sqlite3", ours_batch),
        ]
    return cases


def _tag() -> str:
    return f"ctxbench_{uuid.uuid4().hex[:10]}"


def _redis_cases(url: str, cluster: bool, df: Any, num_ops: int, batch_ops: int) -> list[Case]:
    from ..adapters.pandas_adapter import PandasContextAdapter
    from ..redis_store import RedisContextStore
    from . import redis_baseline as raw

    suffix = " (cluster)" if cluster else ""
    if cluster and not url.split("://", 1)[0].endswith("+cluster"):
        url = url.replace("://", "+cluster://", 1)  # the throwaway cluster yields redis://

    def ours(loop: Callable[[Any, int], tuple[float, float]], n: int) -> tuple[float, float]:
        store = RedisContextStore.from_url(url, namespace=_tag())
        try:
            return loop(PandasContextAdapter(df, store), n)
        finally:
            store.clear()
            store.close()

    probe = raw._raw_client(url)  # fail here, not mid-run, if the server is unreachable
    try:
        probe.ping()
    finally:
        probe.close()
    raw_label, ours_label = f"raw redis-py{suffix}", f"RedisContextStore{suffix}"
    return [
        (raw_label, "per-call", num_ops, None, lambda: raw.raw_per_call(url, num_ops)),
        (ours_label, "per-call", num_ops, raw_label, lambda: ours(spec_loop, num_ops)),
        (raw_label, "batch", batch_ops, None, lambda: raw.raw_batch(url, batch_ops)),
        (ours_label, "batch", batch_ops, raw_label, lambda: ours(batch_loop, batch_ops)),
    ]


def _sql_cases(url: str, df: Any, num_ops: int, batch_ops: int) -> list[Case]:
    from ..adapters.pandas_adapter import PandasContextAdapter
    from ..db_store import DBContextStore
    from . import sql_baseline as raw

    postgres = url.split("://", 1)[0].lower().startswith("postgres")
    raw_label = "raw psycopg (jsonb)" if postgres else "raw PyMySQL"
    ours_label = "DBContextStore (PostgreSQL)" if postgres else "DBContextStore (MariaDB)"

    probe = (raw._pg_connect if postgres else raw._my_connect)(url)  # fail early if unreachable
    probe.close()

    def ours(loop: Callable[[Any, int], tuple[float, float]], n: int) -> tuple[float, float]:
        table = _tag()
        store = DBContextStore(url, table=table)
        try:
            return loop(PandasContextAdapter(df, store), n)
        finally:
            store.close()
            raw._drop_store_table(url, table)

    return [
        (raw_label, "per-call", num_ops, None, lambda: raw.raw_per_call(url, num_ops)),
        (ours_label, "per-call", num_ops, raw_label, lambda: ours(spec_loop, num_ops)),
        (raw_label, "batch", batch_ops, None, lambda: raw.raw_batch(url, batch_ops)),
        (ours_label, "batch", batch_ops, raw_label, lambda: ours(batch_loop, batch_ops)),
    ]


def _server_url(store: str, urls: Mapping[str, str], stack: ExitStack) -> str:
    """The URL for a server store: given, from the environment, or a throwaway server."""
    if urls.get(store):
        return urls[store]
    from ..testing import servers

    start = {
        "redis": servers.redis_server,
        "redis-cluster": servers.redis_cluster,
        "postgres": servers.postgres_server,
        "mysql": servers.mysql_server,
    }[store]
    return stack.enter_context(start())


def run_benchmarks(
    *,
    num_ops: int = 10_000,
    batch_ops: int = 100_000,
    rows: int = 100_000,
    repeat: int = 5,
    stores: tuple[str, ...] = STORES,
    urls: Mapping[str, str] | None = None,
    notes: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[CaseResult]:
    """Run every case ``repeat`` times (interleaved) and return the medians.

    A server store whose server cannot be had (or whose driver is missing) is
    left out; the reason is appended to ``notes``.
    """
    import pandas as pd

    rows = max(rows, num_ops, batch_ops)
    df = pd.DataFrame({"A": range(rows)})
    unknown = set(stores) - set(STORES)
    if unknown:
        raise ValueError(f"unknown store(s) {sorted(unknown)}; choose from {', '.join(STORES)}")
    with tempfile.TemporaryDirectory(prefix="ctx-bench-") as workdir, ExitStack() as stack:
        cases = _cases(df, num_ops, batch_ops, stores, workdir)
        for store in (s for s in SERVER_STORES if s in stores):
            if progress:
                progress(f"connecting to {store} (or starting a throwaway server)")
            try:
                url = _server_url(store, urls or {}, stack)
                if store.startswith("redis"):
                    cases += _redis_cases(url, store == "redis-cluster", df, num_ops, batch_ops)
                else:
                    cases += _sql_cases(url, df, num_ops, batch_ops)
            except Exception as exc:  # a missing server or driver must not hide the other rows
                if notes is not None:
                    notes.append(f"{store}: left out ({type(exc).__name__}: {exc})")
        timings: list[list[tuple[float, float]]] = [[] for _ in cases]
        for r in range(repeat):
            for i, (label, mode, _, _, run) in enumerate(cases):
                if progress:
                    progress(f"run {r + 1}/{repeat}: {label} {mode}")
                gc.collect()
                timings[i].append(run())
    results: list[CaseResult] = []
    for (label, mode, n, baseline, _), runs in zip(cases, timings):
        median_total = statistics.median(a + g for a, g in runs)
        add, get = min(runs, key=lambda t: abs(t[0] + t[1] - median_total))
        results.append(
            CaseResult(label, mode, n, add, get, baseline_of=baseline,
                       runs=[a + g for a, g in runs])
        )
    by_name = {(r.store, r.mode): r for r in results}
    for res in results:
        if res.baseline_of:
            base = by_name[(res.baseline_of, res.mode)]
            res.ratio = res.ops_per_second / base.ops_per_second
    return results


def format_table(results: list[CaseResult]) -> str:
    """The spec's table, plus calls/s and the ratio to the baseline of the same run.

    The ratio is of add+get throughput; in brackets, of the add (write) half and
    of the get (read) half alone.
    """
    header = ("Store", "Mode", "Num Ops (Add+Get)", "Time (Seconds)", "Ops/Second",
              "Calls/Second", "vs. baseline (add, get)")
    by_name = {(r.store, r.mode): r for r in results}
    rows = [header]
    for r in results:
        ratio = "-"
        if r.ratio is not None and r.baseline_of is not None:
            base = by_name[(r.baseline_of, r.mode)]
            add = base.add_seconds / r.add_seconds if r.add_seconds else float("inf")
            get = base.get_seconds / r.get_seconds if r.get_seconds else float("inf")
            ratio = f"{r.ratio:.2f}x {r.baseline_of} ({add:.2f}x, {get:.2f}x)"
        rows.append((r.store, r.mode, f"{r.num_ops:,}", f"{r.seconds:.4f}",
                     f"{r.ops_per_second:,.0f}", f"{r.calls_per_second:,.0f}", ratio))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), sep, *(line(row) for row in rows[1:])])
