"""The spec's single-process benchmark, run for every store and mode, with baselines measured in the same run.

The spec (``performance_benchmarks.md``, section 3) wraps a 100,000-row
DataFrame in ``PandasContextAdapter`` and times ``num_ops`` ``add_context``
calls on ``("row", i)`` followed by ``num_ops`` ``get_context`` calls. Its
table counts an add+get *pair* as one op; we print that (Ops/Second) and the
number of calls per second (twice as many).

Each store runs in up to three modes (:mod:`.modes`): **per-call** (the
spec's loop), **buffered** (the same loop through ``BufferedStore`` +
``CachedStore``, final ``flush()`` included in the add time) and **batch**
(``add_context_many``/``get_context_many``).

Every case runs ``repeat`` times, interleaved with its baseline so that both
see the same machine load, and the median is reported. Baselines:

* **dict baseline**: the minimal implementation of the spec's API — a plain
  ``dict`` plus the same key validation as ours (key conventions, labels in
  the axis with their exact type), written the plain pandas way
  (``label in df.index``). It copies nothing, so it gives none of our
  isolation or value guarantees. A second reference row, **dict (membership
  only)**, does bare ``label in df.index`` tests and accepts keys we refuse.
* **raw clients**: the same loop written directly against ``sqlite3``,
  redis-py, psycopg or PyMySQL (:mod:`.sqlite_baseline`,
  :mod:`.redis_baseline`, :mod:`.sql_baseline`). The buffered mode is
  compared with the raw client's per-call loop (the same loop, written the
  obvious way), the batch mode with the raw client's batch.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from numbers import Integral
from typing import Any

from .modes import MODES, batch_loop, run_mode, spec_loop, wrappers_unavailable
from .progress import Progress
from .targets import LABELS, SERVER_STORES, STORES, open_target, server_url

__all__ = [
    "CaseResult",
    "DictBaselineAdapter",
    "MembershipDictAdapter",
    "batch_loop",
    "format_summary",
    "format_table",
    "run_benchmarks",
    "spec_loop",
]

Timing = tuple[float, float]


@dataclass
class Case:
    """One thing to time: a store (ours or a baseline) in one mode."""

    label: str
    mode: str
    num_ops: int
    run: Callable[[], Timing]
    baseline: tuple[str, str] | None = None  # (label, mode) of the row it is compared with
    backend: str | None = None  # the store of ``ctx bench --stores``
    role: str = "ours"  # "ours", "baseline" (a raw client or dict) or "reference" (no ratio)


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
    baseline_mode: str | None = None
    backend: str | None = None
    role: str = "ours"

    @property
    def seconds(self) -> float:
        return self.add_seconds + self.get_seconds

    @property
    def ops_per_second(self) -> float:
        """Add+get pairs per second, as the spec's table counts them."""
        return self.num_ops / self.seconds if self.seconds else float("inf")

    @property
    def calls_per_second(self) -> float:
        """Adds and gets per second (in batch mode: entries written and read per second)."""
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


def _our_cases(
    store: str,
    url: str | None,
    df: Any,
    modes: tuple[str, ...],
    sizes: dict[str, int],
    workdir: str,
    raw: Mapping[str, str],
) -> list[Case]:
    """Our store in every mode; ``raw[mode]`` is the label of its raw client's row in that mode."""

    def make(mode: str) -> Callable[[], Timing]:
        def run() -> Timing:
            with open_target(store, url, workdir) as target:
                return run_mode(mode, df, target, sizes[mode])

        return run

    cases = []
    for mode in modes:
        raw_mode = "batch" if mode == "batch" else "per-call"
        base = raw.get(raw_mode)
        cases.append(
            Case(LABELS[store], mode, sizes[mode], make(mode), (base, raw_mode) if base else None, store)
        )
    return cases


def _memory_cases(df: Any, modes: tuple[str, ...], sizes: dict[str, int], workdir: str) -> list[Case]:
    cases = []
    if "per-call" in modes or "buffered" in modes:
        n = sizes["per-call"]
        cases += [
            Case(
                "dict baseline",
                "per-call",
                n,
                lambda: spec_loop(DictBaselineAdapter(df), n),
                backend="memory",
                role="baseline",
            ),
            Case(
                "dict (membership only)",
                "per-call",
                n,
                lambda: spec_loop(MembershipDictAdapter(df), n),
                backend="memory",
                role="reference",
            ),
        ]
    return cases + _our_cases("memory", None, df, modes, sizes, workdir, {"per-call": "dict baseline"})


def _sqlite_cases(df: Any, modes: tuple[str, ...], sizes: dict[str, int], workdir: str) -> list[Case]:
    import os

    from .sqlite_baseline import raw_sqlite_batch, raw_sqlite_per_call

    def raw_run(fn: Callable[[str, int], Timing], n: int) -> Callable[[], Timing]:
        def run() -> Timing:
            path = os.path.join(workdir, "raw.db")
            try:
                return fn(path, n)
            finally:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    if os.path.exists(path + suffix):
                        os.remove(path + suffix)

        return run

    raw = {"per-call": "raw sqlite3", "batch": "raw sqlite3"}
    baselines = _raw_cases(
        "sqlite",
        raw["per-call"],
        modes,
        sizes,
        raw_run(raw_sqlite_per_call, sizes["per-call"]),
        raw_run(raw_sqlite_batch, sizes["batch"]),
    )
    return _interleave(baselines, _our_cases("sqlite", None, df, modes, sizes, workdir, raw))


def _raw_cases(
    store: str,
    label: str,
    modes: tuple[str, ...],
    sizes: dict[str, int],
    per_call: Callable[[], Timing],
    batch: Callable[[], Timing],
) -> list[Case]:
    """The raw client's rows that the chosen modes compare with."""
    cases = []
    if "per-call" in modes or "buffered" in modes:
        cases.append(Case(label, "per-call", sizes["per-call"], per_call, backend=store, role="baseline"))
    if "batch" in modes:
        cases.append(Case(label, "batch", sizes["batch"], batch, backend=store, role="baseline"))
    return cases


def _interleave(baselines: list[Case], ours: list[Case]) -> list[Case]:
    """Each baseline right before the first of our rows compared with it (the table's order)."""
    out: list[Case] = []
    pending = list(baselines)
    for case in ours:
        for base in list(pending):
            if case.baseline == (base.label, base.mode):
                out.append(base)
                pending.remove(base)
        out.append(case)
    return out + pending


def _redis_cases(
    store: str, url: str, df: Any, modes: tuple[str, ...], sizes: dict[str, int], workdir: str
) -> list[Case]:
    from . import redis_baseline as raw
    from .targets import cluster_url

    if store == "redis-cluster":
        url = cluster_url(url)
    probe = raw._raw_client(url)  # fail here, not mid-run, if the server is unreachable
    try:
        probe.ping()
    finally:
        probe.close()
    label = "raw redis-py (cluster)" if store == "redis-cluster" else "raw redis-py"
    return _server_vs_raw(store, url, label, raw, df, modes, sizes, workdir)


def _sql_cases(
    store: str, url: str, df: Any, modes: tuple[str, ...], sizes: dict[str, int], workdir: str
) -> list[Case]:
    from . import sql_baseline as raw

    postgres = url.split("://", 1)[0].lower().startswith("postgres")
    label = "raw psycopg (jsonb)" if postgres else "raw PyMySQL"
    probe = (raw._pg_connect if postgres else raw._my_connect)(url)  # fail early if unreachable
    probe.close()
    return _server_vs_raw(store, url, label, raw, df, modes, sizes, workdir)


def _server_vs_raw(
    store: str,
    url: str,
    label: str,
    raw: Any,
    df: Any,
    modes: tuple[str, ...],
    sizes: dict[str, int],
    workdir: str,
) -> list[Case]:
    """Our rows for a server store, each after the raw client's row (``raw``: a baseline module
    with ``raw_per_call(url, n)`` and ``raw_batch(url, n)``) that it is compared with."""
    baselines = _raw_cases(
        store,
        label,
        modes,
        sizes,
        lambda: raw.raw_per_call(url, sizes["per-call"]),
        lambda: raw.raw_batch(url, sizes["batch"]),
    )
    ours = _our_cases(store, url, df, modes, sizes, workdir, {"per-call": label, "batch": label})
    return _interleave(baselines, ours)


def _server_cases(
    store: str, url: str, df: Any, modes: tuple[str, ...], sizes: dict[str, int], workdir: str
) -> list[Case]:
    if store.startswith("redis"):
        return _redis_cases(store, url, df, modes, sizes, workdir)
    return _sql_cases(store, url, df, modes, sizes, workdir)


def run_benchmarks(
    *,
    num_ops: int = 10_000,
    batch_ops: int = 100_000,
    rows: int = 100_000,
    repeat: int = 5,
    stores: tuple[str, ...] = STORES,
    modes: tuple[str, ...] = MODES,
    urls: Mapping[str, str] | None = None,
    notes: list[str] | None = None,
    progress: Progress | Callable[[str], None] | None = None,
    unavailable: dict[str, str] | None = None,
) -> list[CaseResult]:
    """Run every case ``repeat`` times (interleaved) and return the medians.

    A server store whose server cannot be had (or whose driver is missing) is
    left out; the reason is appended to ``notes``. So is the buffered mode
    when the wrappers cannot be imported; ``unavailable`` (when given) gets
    ``{mode: reason}`` for each mode left out.
    """
    import pandas as pd

    unknown = set(stores) - set(STORES)
    if unknown:
        raise ValueError(f"unknown store(s) {sorted(unknown)}; choose from {', '.join(STORES)}")
    bad_modes = set(modes) - set(MODES)
    if bad_modes:
        raise ValueError(f"unknown mode(s) {sorted(bad_modes)}; choose from {', '.join(MODES)}")
    report = Progress.coerce(progress)
    notes = notes if notes is not None else []
    if "buffered" in modes:
        reason = wrappers_unavailable()
        if reason:
            notes.append(f"buffered mode unavailable: {reason}")
            if unavailable is not None:
                unavailable["buffered"] = reason
            modes = tuple(m for m in modes if m != "buffered")
    sizes = {"per-call": num_ops, "buffered": num_ops, "batch": batch_ops}
    rows = max(rows, num_ops, batch_ops if "batch" in modes else 0)
    df = pd.DataFrame({"A": range(rows)})
    with tempfile.TemporaryDirectory(prefix="ctx-bench-") as workdir, ExitStack() as stack:
        cases: list[Case] = []
        if "memory" in stores:
            cases += _memory_cases(df, modes, sizes, workdir)
        if "sqlite" in stores:
            cases += _sqlite_cases(df, modes, sizes, workdir)
        for store in (s for s in SERVER_STORES if s in stores):
            if not (urls or {}).get(store):
                report.note(f"connecting to {store} (or starting a throwaway server)")
            try:
                url = server_url(store, urls or {}, stack)
                cases += _server_cases(store, url, df, modes, sizes, workdir)
            except Exception as exc:  # a missing server or driver must not hide the other rows
                notes.append(f"{store}: left out ({type(exc).__name__}: {exc})")
        timings: list[list[Timing]] = [[] for _ in cases]
        with report.task("spec table", repeat * len(cases)) as task:
            for r in range(repeat):
                for i, case in enumerate(cases):
                    task.step(f"run {r + 1}/{repeat}: {case.label} {case.mode}")
                    gc.collect()
                    timings[i].append(case.run())
    results: list[CaseResult] = []
    for case, runs in zip(cases, timings):
        median_total = statistics.median(a + g for a, g in runs)
        add, get = min(runs, key=lambda t: abs(t[0] + t[1] - median_total))
        base_label, base_mode = case.baseline or (None, None)
        results.append(
            CaseResult(
                case.label,
                case.mode,
                case.num_ops,
                add,
                get,
                baseline_of=base_label,
                runs=[a + g for a, g in runs],
                baseline_mode=base_mode,
                backend=case.backend,
                role=case.role,
            )
        )
    by_name = {(r.store, r.mode): r for r in results}
    for res in results:
        if res.baseline_of:
            base = by_name[(res.baseline_of, res.baseline_mode or res.mode)]
            res.ratio = res.ops_per_second / base.ops_per_second
    return results


def _ratio_text(r: CaseResult, by_name: Mapping[tuple[str, str], CaseResult]) -> str:
    if r.ratio is None or r.baseline_of is None:
        return "-"
    base_mode = r.baseline_mode or r.mode
    base = by_name[(r.baseline_of, base_mode)]
    add = base.add_seconds / r.add_seconds if r.add_seconds else float("inf")
    get = base.get_seconds / r.get_seconds if r.get_seconds else float("inf")
    of = r.baseline_of if base_mode == r.mode else f"{r.baseline_of} {base_mode}"
    return f"{r.ratio:.2f}x {of} ({add:.2f}x, {get:.2f}x)"


def _grid(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), sep, *(line(row) for row in rows[1:])])


def format_table(results: list[CaseResult]) -> str:
    """The spec's table, plus calls/s and the ratio to the baseline of the same run.

    The ratio is of add+get throughput; in brackets, of the add (write) half and
    of the get (read) half alone.
    """
    header = (
        "Store",
        "Mode",
        "Num Ops (Add+Get)",
        "Time (Seconds)",
        "Ops/Second",
        "Calls/Second",
        "vs. baseline (add, get)",
    )
    by_name = {(r.store, r.mode): r for r in results}
    rows = [header]
    for r in results:
        rows.append(
            (
                r.store,
                r.mode,
                f"{r.num_ops:,}",
                f"{r.seconds:.4f}",
                f"{r.ops_per_second:,.0f}",
                f"{r.calls_per_second:,.0f}",
                _ratio_text(r, by_name),
            )
        )
    return _grid(rows)


def format_summary(
    results: list[CaseResult], modes: tuple[str, ...] = MODES, unavailable: Mapping[str, str] | None = None
) -> str:
    """Calls/s of our stores, one row per store and one column per mode, with the ratio to the raw client."""
    ours = [r for r in results if r.role == "ours"]
    by_key = {(r.store, r.mode): r for r in ours}
    header = ("Store", *(f"{m} calls/s (vs. raw)" for m in modes))
    rows = [header]
    for label in dict.fromkeys(r.store for r in ours):
        cells = [label]
        for mode in modes:
            r = by_key.get((label, mode))
            if r is None:
                cells.append("unavailable" if unavailable and mode in unavailable else "-")
            elif r.ratio is None:
                cells.append(f"{r.calls_per_second:,.0f}")
            else:
                cells.append(f"{r.calls_per_second:,.0f} ({r.ratio:.2f}x)")
        rows.append(tuple(cells))
    return _grid(rows)
