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
see the same machine load, and the median is reported. Each baseline is the
spec's API written by hand as a careful user would, with our guarantees
(:mod:`.baselines`; every row's ``note`` says what it is, and
:func:`footnote` prints them under the table):

* **dict baseline**: a ``dict`` with the adapter's key rules and our value
  rules, values copied in and out; the baseline of the in-memory store (its
  batch form is the loop over the same calls). A
  weaker reference row, **dict, membership only (weaker)**, has no ratio.
* **raw clients** (:mod:`.sqlite_baseline`, :mod:`.redis_baseline`,
  :mod:`.sql_baseline`): the same loop over ``sqlite3``, redis-py, psycopg
  or PyMySQL, same table layout and durability as ours; the baseline of the
  per-call and batch rows.
* **hand-written buffers**: the loop through a write buffer and read cache
  written by hand over the raw client's bulk path; the baseline of the
  buffered rows, which also show their ratio to the raw per-call loop
  (``raw_per_call_ratio``).
"""

from __future__ import annotations

import gc
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from .baselines import DICT_NOTE, MEMBERSHIP_NOTE, DictBaselineAdapter, MembershipDictAdapter
from .modes import MODES, batch_loop, run_mode, spec_loop, wrappers_unavailable
from .progress import Progress
from .targets import LABELS, SERVER_STORES, STORES, open_target, server_url

__all__ = [
    "CaseResult",
    "DictBaselineAdapter",
    "MembershipDictAdapter",
    "batch_loop",
    "footnote",
    "format_summary",
    "format_table",
    "ratios_below_one",
    "run_benchmarks",
    "spec_loop",
]

Timing = tuple[float, float]
Row = tuple[str, str]  # (label, mode) of a row of the table

DICT = "dict baseline"
MEMBERSHIP = "dict, membership only (weaker)"
#: The first line of the footnote; each baseline row's note follows.
FOOTNOTE_INTRO = (
    "Baselines, each measured interleaved with our rows in the same run: the spec's API written by hand "
    "as a careful user would, with our guarantees: the adapter's key rules (the key kinds; labels in the "
    "axis with their exact type; the RangeIndex and each axis's dtype cached), JSON values "
    "(json.dumps(allow_nan=False)); the raw clients store repr(key) as the key. A ratio is our "
    "throughput over the baseline's (add+get; in brackets add alone, get alone): below 1.00x, ours is "
    "slower."
)


@dataclass
class Case:
    """One thing to time: a store (ours or a baseline) in one mode."""

    label: str
    mode: str
    num_ops: int
    run: Callable[[], Timing]
    baseline: Row | None = None  # the row it is compared with
    backend: str | None = None  # the store of ``ctx bench --stores``
    role: str = "ours"  # "ours", "baseline" (a raw client, hand-written buffer or dict) or "reference"
    raw_per_call: Row | None = None  # a buffered row's second comparison: the raw client's per-call loop
    note: str | None = None  # what a baseline is (the footnote)


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
    raw_per_call_of: str | None = None
    raw_per_call_ratio: float | None = None
    note: str | None = None

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


def _our_cases(
    store: str,
    url: str | None,
    df: Any,
    modes: tuple[str, ...],
    sizes: dict[str, int],
    workdir: str,
    baselines: Mapping[str, Row],
    raw_per_call: Row | None = None,
) -> list[Case]:
    """Our store in every mode; ``baselines[mode]`` is the row it is compared with in that mode,
    ``raw_per_call`` the buffered row's second comparison."""

    def make(mode: str) -> Callable[[], Timing]:
        def run() -> Timing:
            with open_target(store, url, workdir) as target:
                return run_mode(mode, df, target, sizes[mode])

        return run

    return [
        Case(
            LABELS[store],
            mode,
            sizes[mode],
            make(mode),
            baselines.get(mode),
            store,
            raw_per_call=raw_per_call if mode == "buffered" else None,
        )
        for mode in modes
    ]


def _memory_cases(df: Any, modes: tuple[str, ...], sizes: dict[str, int], workdir: str) -> list[Case]:
    def case(label: str, mode: str, loop: Callable[[], Timing], role: str, note: str) -> Case:
        return Case(label, mode, sizes[mode], loop, backend="memory", role=role, note=note)

    n, batch = sizes["per-call"], sizes["batch"]
    cases = []
    if "per-call" in modes or "buffered" in modes:
        cases += [
            case(DICT, "per-call", lambda: spec_loop(DictBaselineAdapter(df), n), "baseline", DICT_NOTE),
            case(
                MEMBERSHIP,
                "per-call",
                lambda: spec_loop(MembershipDictAdapter(df), n),
                "reference",
                MEMBERSHIP_NOTE,
            ),
        ]
    dict_row = (DICT, "per-call")
    ours = _our_cases(
        "memory",
        None,
        df,
        modes,
        sizes,
        workdir,
        {"per-call": dict_row, "buffered": dict_row, "batch": (DICT, "batch")},
    )
    if "batch" in modes:
        batch_case = case(
            DICT, "batch", lambda: batch_loop(DictBaselineAdapter(df), batch), "baseline", DICT_NOTE
        )
        return _interleave([batch_case], cases + ours)
    return cases + ours


def _raw_cases(
    store: str,
    labels: tuple[str, str],
    notes: Mapping[str, str],
    modes: tuple[str, ...],
    sizes: dict[str, int],
    run: Callable[[str, int], Timing],
) -> list[Case]:
    """The rows of the raw client (``labels[0]``) and of its hand-written buffer (``labels[1]``)
    that the chosen modes compare with; ``run(mode, n)`` times one of them."""

    def case(label: str, mode: str, size: str, note: str) -> Case:
        n = sizes[size]
        return Case(label, mode, n, lambda: run(mode, n), backend=store, role="baseline", note=note)

    raw, hand = labels
    cases = []
    if "buffered" in modes:
        cases.append(case(hand, "buffered", "buffered", notes["buffered"]))
    if "per-call" in modes or "buffered" in modes:
        cases.append(case(raw, "per-call", "per-call", notes["raw"]))
    if "batch" in modes:
        cases.append(case(raw, "batch", "batch", notes["raw"]))
    return cases


def _interleave(baselines: list[Case], ours: list[Case]) -> list[Case]:
    """Each baseline right before the first of our rows compared with it (the table's order)."""
    out: list[Case] = []
    pending = list(baselines)
    for case in ours:
        for base in list(pending):
            if (base.label, base.mode) in (case.baseline, case.raw_per_call):
                out.append(base)
                pending.remove(base)
        out.append(case)
    return out + pending


def _vs_raw(
    store: str,
    url: str | None,
    labels: tuple[str, str],
    notes: Mapping[str, str],
    run: Callable[[str, int], Timing],
    df: Any,
    modes: tuple[str, ...],
    sizes: dict[str, int],
    workdir: str,
) -> list[Case]:
    """Our rows for ``store``, each after the baseline rows it is compared with: the raw client
    ``labels[0]`` (per-call, batch) and its hand-written buffer ``labels[1]`` (buffered)."""
    raw, hand = labels
    baselines = _raw_cases(store, labels, notes, modes, sizes, run)
    compare = {"per-call": (raw, "per-call"), "batch": (raw, "batch"), "buffered": (hand, "buffered")}
    ours = _our_cases(store, url, df, modes, sizes, workdir, compare, raw_per_call=(raw, "per-call"))
    return _interleave(baselines, ours)


def _sqlite_cases(df: Any, modes: tuple[str, ...], sizes: dict[str, int], workdir: str) -> list[Case]:
    import os

    from . import sqlite_baseline as raw

    fns = {
        "per-call": raw.raw_sqlite_per_call,
        "batch": raw.raw_sqlite_batch,
        "buffered": raw.raw_sqlite_buffered,
    }

    def run(mode: str, n: int) -> Timing:
        return fns[mode](os.path.join(workdir, "raw.db"), df, n)

    labels = ("raw sqlite3", "hand-written buffer (sqlite3)")
    return _vs_raw("sqlite", None, labels, raw.NOTES, run, df, modes, sizes, workdir)


def _server_runner(module: Any, url: str, df: Any) -> Callable[[str, int], Timing]:
    """``run(mode, n)`` for a baseline module with ``raw_per_call``/``raw_batch``/``raw_buffered``."""
    fns = {"per-call": module.raw_per_call, "batch": module.raw_batch, "buffered": module.raw_buffered}
    return lambda mode, n: fns[mode](url, df, n)  # type: ignore[no-any-return]


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
    cluster = store == "redis-cluster"
    labels = (
        "raw redis-py (cluster)" if cluster else "raw redis-py",
        "hand-written buffer (redis-py cluster)" if cluster else "hand-written buffer (redis-py)",
    )
    return _vs_raw(store, url, labels, raw.NOTES, _server_runner(raw, url, df), df, modes, sizes, workdir)


def _sql_cases(
    store: str, url: str, df: Any, modes: tuple[str, ...], sizes: dict[str, int], workdir: str
) -> list[Case]:
    from . import sql_baseline as raw

    postgres = url.split("://", 1)[0].lower().startswith("postgres")
    labels = (
        ("raw psycopg (jsonb)", "hand-written buffer (psycopg)")
        if postgres
        else ("raw PyMySQL", "hand-written buffer (PyMySQL)")
    )
    probe = (raw._pg_connect if postgres else raw._my_connect)(url)  # fail early if unreachable
    probe.close()
    notes = raw.NOTES["postgres" if postgres else "mysql"]
    return _vs_raw(store, url, labels, notes, _server_runner(raw, url, df), df, modes, sizes, workdir)


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
                raw_per_call_of=case.raw_per_call[0] if case.raw_per_call else None,
                note=case.note,
            )
        )
    by_name = {(r.store, r.mode): r for r in results}
    for res in results:
        if res.baseline_of:
            base = by_name[(res.baseline_of, res.baseline_mode or res.mode)]
            res.ratio = res.ops_per_second / base.ops_per_second
        if res.raw_per_call_of:
            raw = by_name[(res.raw_per_call_of, "per-call")]
            res.raw_per_call_ratio = res.ops_per_second / raw.ops_per_second
    return results


def _ratio_text(r: CaseResult, by_name: Mapping[Row, CaseResult]) -> str:
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
    of the get (read) half alone. When buffered rows are there, a last column
    gives their ratio to the raw client's per-call loop.
    """
    second = any(r.raw_per_call_of for r in results)
    header = (
        "Store",
        "Mode",
        "Num Ops (Add+Get)",
        "Time (Seconds)",
        "Ops/Second",
        "Calls/Second",
        "vs. baseline (add, get)",
        *(("vs. raw per-call loop",) if second else ()),
    )
    by_name = {(r.store, r.mode): r for r in results}
    rows = [header]
    for r in results:
        extra = (_per_call_text(r),) if second else ()
        rows.append(
            (
                r.store,
                r.mode,
                f"{r.num_ops:,}",
                f"{r.seconds:.4f}",
                f"{r.ops_per_second:,.0f}",
                f"{r.calls_per_second:,.0f}",
                _ratio_text(r, by_name),
                *extra,
            )
        )
    return _grid(rows)


def _per_call_text(r: CaseResult) -> str:
    if r.raw_per_call_ratio is None:
        return "-"
    return f"{r.raw_per_call_ratio:.2f}x {r.raw_per_call_of} per-call"


def format_summary(
    results: list[CaseResult], modes: tuple[str, ...] = MODES, unavailable: Mapping[str, str] | None = None
) -> str:
    """Calls/s of our stores, one row per store and one column per mode, with the ratio to the baseline
    (for buffered rows, then to the raw client's per-call loop)."""
    ours = [r for r in results if r.role == "ours"]
    by_key = {(r.store, r.mode): r for r in ours}
    header = ("Store", *(f"{m} calls/s (vs. baseline)" for m in modes))
    rows = [header]
    for label in dict.fromkeys(r.store for r in ours):
        cells = [label]
        for mode in modes:
            r = by_key.get((label, mode))
            if r is None:
                cells.append("unavailable" if unavailable and mode in unavailable else "-")
            elif r.ratio is None:
                cells.append(f"{r.calls_per_second:,.0f}")
            elif r.raw_per_call_ratio is not None:
                cells.append(
                    f"{r.calls_per_second:,.0f} ({r.ratio:.2f}x; {r.raw_per_call_ratio:.2f}x per-call)"
                )
            else:
                cells.append(f"{r.calls_per_second:,.0f} ({r.ratio:.2f}x)")
        rows.append(tuple(cells))
    return _grid(rows)


def ratios_below_one(results: list[CaseResult]) -> list[str]:
    """Each ratio below 1.00x (as printed, two decimals): ``"<store> <mode>: 0.70x <baseline>"``."""
    out = []
    for r in results:
        if r.ratio is not None and round(r.ratio, 2) < 1:
            of = (
                r.baseline_of
                if (r.baseline_mode or r.mode) == r.mode
                else f"{r.baseline_of} {r.baseline_mode}"
            )
            out.append(f"{r.store} {r.mode}: {r.ratio:.2f}x {of}")
        if r.raw_per_call_ratio is not None and round(r.raw_per_call_ratio, 2) < 1:
            out.append(f"{r.store} {r.mode}: {r.raw_per_call_ratio:.2f}x {r.raw_per_call_of} per-call")
    return out


def footnote(results: list[CaseResult]) -> str:
    """What each baseline row is: :data:`FOOTNOTE_INTRO`, then one ``* label: note`` line per label."""
    notes = {r.store: r.note for r in results if r.role != "ours" and r.note}
    if not notes:
        return ""
    return "\n".join([FOOTNOTE_INTRO, *(f"* {label}: {note}" for label, note in notes.items())])
