"""``ctx bench --plot FILE.png``: the results as a chart rather than a table.

:func:`plot_results` draws from the same document ``ctx bench --json``
writes, so a saved JSON file can be drawn again later. Panels:

1. calls/s per store (x) and mode (bars), the raw client's per-call loop in
   grey next to them, log scale;
2. with ``--sweep``: entries/s against the batch size, one line per store;
3. with ``--processes``: total calls/s of N processes per store and mode;
4. with ``--annotate-rows``: seconds (and peak memory) per run;
5. with ``--shards``: keys/s of one Redis server and of the sharded stores;
6. with ``--engine``: total keys/s of Spark, Dask and MPI writers per store,
   next to one process writing the same keys.

matplotlib is imported here only, with the non-interactive Agg backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .modes import MODES

__all__ = ["plot_results", "si"]

_MODE_COLORS = {"per-call": "#4C72B0", "buffered": "#55A868", "batch": "#DD8452"}
_RAW_COLOR = "#9A9A9A"


def si(value: float) -> str:
    """A short human number: 1234567 -> '1.23M', 45600 -> '45.6k', 12.5 -> '12.5'."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            return f"{scaled:.3g}{suffix}"
    return f"{value:.3g}"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        from ..exceptions import MissingDependencyError

        raise MissingDependencyError.for_extra("bench", "matplotlib") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _bars(
    ax: Any, groups: Sequence[str], series: Mapping[str, Sequence[float | None]], colors: Mapping[str, str]
) -> None:
    """Grouped bars (log scale) with a value label on each bar; ``None`` leaves a gap."""
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        xs = [g + (k - (len(series) - 1) / 2) * width for g in range(len(groups))]
        shown = [(x, v) for x, v in zip(xs, values) if v]
        if not shown:
            continue
        bars = ax.bar(
            [x for x, _ in shown],
            [v for _, v in shown],
            width * 0.92,
            label=name,
            color=colors.get(name),
            edgecolor="white",
            linewidth=0.5,
        )
        for rect, (_, v) in zip(bars, shown):
            ax.annotate(
                si(v),
                (rect.get_x() + rect.get_width() / 2, v),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7.5,
            )
    _log_axis(ax, "y")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([_wrap(g) for g in groups], fontsize=8.5)
    _headroom(ax)
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(4, len(series)), loc="upper right", framealpha=0.9)


def _log_axis(ax: Any, which: str) -> None:
    """A log scale whose tick labels read 10k, 100k, 1M rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_formatter(FuncFormatter(lambda v, _: si(v)))
    axis.set_minor_formatter(NullFormatter())


def _wrap(label: str) -> str:
    return label.replace(" (", "\n(")


def _headroom(ax: Any) -> None:
    """Room above the tallest bar for its label and the legend; at least two decades (log axis)."""
    low, high = ax.get_ylim()
    if low > 0 and high > 0:
        low = min(low, high / 100)
        ax.set_ylim(low, 10 ** (math.log10(high) + 0.35 * (math.log10(high) - math.log10(low))))


def _span(ax: Any, decades: float = 1.5) -> None:
    """Widen a log y axis to ``decades`` around its data, so that it has labelled ticks."""
    low, high = ax.get_ylim()
    if low > 0 and high > 0:
        center, half = math.sqrt(low * high), 10 ** (decades / 2)
        ax.set_ylim(min(low, center / half), max(high, center * half))


def _modes_panel(ax: Any, doc: Mapping[str, Any]) -> None:
    results = doc["results"]
    ours = [r for r in results if r.get("role", "ours") == "ours"]
    stores = list(dict.fromkeys(r["store"] for r in ours))
    by_key = {(r["store"], r["mode"]): r for r in results}
    modes = [m for m in doc.get("modes", MODES) if any(r["mode"] == m for r in ours)]
    series: dict[str, list[float | None]] = {}
    raw_label = "raw client / dict (per-call)"
    raw = []
    for store in stores:
        base = None
        r = by_key.get((store, "per-call"))
        if r and r.get("baseline_of"):
            base = by_key.get((r["baseline_of"], r.get("baseline_mode") or r["mode"]))
        elif (store, "buffered") in by_key:  # only buffered ran: its second baseline, the per-call loop
            b = by_key[(store, "buffered")]
            of = b.get("raw_per_call_of") or b.get("baseline_of")
            base = by_key.get((of, "per-call")) if of else None
        raw.append(base["calls_per_second"] if base else None)
    if any(raw):
        series[raw_label] = raw
    for mode in modes:
        series[mode] = [
            by_key[(s, mode)]["calls_per_second"] if (s, mode) in by_key else None for s in stores
        ]
    _bars(ax, stores, series, {**_MODE_COLORS, raw_label: _RAW_COLOR})
    ax.set_ylabel("calls per second (log scale)")
    ops, batch = doc.get("ops"), doc.get("batch_ops")
    detail = f"{ops:,} add+get per-call/buffered, {batch:,} in batch" if ops and batch else ""
    ax.set_title(
        f"Spec loop: calls/s per store and mode ({detail}; median of {doc.get('repeat', '?')} runs)",
        fontsize=10,
    )


def _sweep_panel(ax: Any, sweep: Sequence[Mapping[str, Any]]) -> None:
    for store in dict.fromkeys(r["store"] for r in sweep):
        points = [r for r in sweep if r["store"] == store]
        xs = [r["batch_size"] for r in points]
        ys = [r["entries_per_second"] for r in points]
        ax.plot(xs, ys, marker="o", label=f"{store} ({si(ys[-1])}/s at batch size {si(xs[-1])})")
    _log_axis(ax, "x")
    _log_axis(ax, "y")
    _span(ax)
    ax.set_xlabel("batch size (entries per add_context_many / get_context_many call, log scale)")
    ax.set_ylabel("add+get entries per second (log scale)")
    ax.set_title("Batch-size sweep", fontsize=10)
    ax.grid(which="major", alpha=0.3)
    ax.legend(fontsize=8)


def _processes_panel(ax: Any, processes: Sequence[Mapping[str, Any]]) -> None:
    stores = list(
        dict.fromkeys(r["store"] if r["shared"] else f"{r['store']} (per process)" for r in processes)
    )
    modes = list(dict.fromkeys(r["mode"] for r in processes))
    by_key = {(r["store"] if r["shared"] else f"{r['store']} (per process)", r["mode"]): r for r in processes}
    series = {
        m: [by_key[(s, m)]["calls_per_second"] if (s, m) in by_key else None for s in stores] for m in modes
    }
    _bars(ax, stores, series, _MODE_COLORS)
    n = processes[0]["processes"]
    sizes = {r["mode"]: r["ops_per_process"] for r in processes}
    each = ", ".join(f"{size:,} {mode}" for mode, size in sizes.items())
    ax.set_ylabel("total calls per second (log scale)")
    ax.set_title(
        f"{n} processes on one shared store, add+get per process ({each}): total throughput", fontsize=10
    )


def _seconds_panel(ax: Any, runs: Sequence[tuple[str, float, str]], title: str) -> None:
    labels = [label for label, _, _ in runs]
    bars = ax.barh(range(len(runs)), [s for _, s, _ in runs], height=0.55, color="#8172B3")
    for rect, (_, seconds, extra) in zip(bars, runs):
        ax.annotate(
            f"{_duration(seconds)}{extra}" if seconds else extra.lstrip(", "),
            (rect.get_width(), rect.get_y() + rect.get_height() / 2),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(range(len(runs)))
    ax.set_yticklabels(labels, fontsize=8.5)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (lower is better)")
    ax.set_xlim(0, max((s for _, s, _ in runs), default=1) * 1.35)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)


def _duration(seconds: float) -> str:
    return f"{seconds:,.2f} s" if seconds >= 1 else f"{seconds * 1000:.3g} ms"


def _annotation_runs(doc: Mapping[str, Any]) -> list[tuple[str, float, str]]:
    runs = []
    for r in doc.get("annotations") or []:
        if r.get("seconds") is None:
            why = "unavailable" if "unavailable" in r else "failed"
            runs.append((f"{r['label']}\n{r.get('rows', 0):,} rows, {r.get('what', '')}", 0.0, f", {why}"))
            continue
        mib = r.get("peak_mib")
        extra = f", peak RSS +{mib:,.1f} MiB" if mib is not None else ""
        runs.append((f"{r['label']}\n{r['rows']:,} rows, {r['what']}", float(r["seconds"]), extra))
    return runs


def _sharding_panel(ax: Any, report: Mapping[str, Any]) -> None:
    cases = [
        ("single", "1 server"),
        ("sharded", f"{len(report['servers'])} shards, in parallel"),
        ("sharded_serial", f"{len(report['servers'])} shards, one after the other"),
    ]
    groups = [label for _, label in cases]
    series = {phase: [report[name][phase] for name, _ in cases] for phase in ("write", "read", "overall")}
    _bars(ax, groups, series, {"write": "#4C72B0", "read": "#DD8452", "overall": "#55A868"})
    ax.set_ylabel("keys per second (log scale)")
    cpus = f", {report['cpus']} CPUs for servers and client" if report.get("cpus") else ""
    ax.set_title(
        f"Sharding over Redis servers: {report['keys']:,} keys in batches of {report['batch']:,}{cpus}",
        fontsize=10,
    )


_ENGINE_COLORS = {
    "spark": "#DD8452",
    "dask": "#4C72B0",
    "mpi direct": "#55A868",
    "mpi aggregate": "#8172B3",
}
_ONE_PROCESS = "one process, set_many (median of the runs)"


def _engines_panel(ax: Any, runs: Sequence[Mapping[str, Any]]) -> None:
    done = [r for r in runs if r.get("keys_per_s")]
    stores = list(dict.fromkeys(r["label"] for r in done))
    names = list(dict.fromkeys(f"{r['engine']} {r['mode']}" if r.get("mode") else r["engine"] for r in done))
    by_key = {(r["label"], f"{r['engine']} {r['mode']}" if r.get("mode") else r["engine"]): r for r in done}
    series: dict[str, list[float | None]] = {}
    baselines = [
        sorted(r["baseline_keys_per_s"] for r in done if r["label"] == s and r.get("baseline_keys_per_s"))
        for s in stores
    ]
    if any(baselines):
        series[_ONE_PROCESS] = [b[len(b) // 2] if b else None for b in baselines]
    for name in names:
        series[name] = [by_key[(s, name)]["keys_per_s"] if (s, name) in by_key else None for s in stores]
    _bars(ax, stores, series, {**_ENGINE_COLORS, _ONE_PROCESS: _RAW_COLOR})
    ax.legend(fontsize=8, ncols=len(series), loc="upper right", framealpha=0.9)  # one row
    ax.set_xlabel("shared store")
    ax.set_ylabel("keys written per second, all writers (log scale)")
    first = done[0]
    missing = sorted({r["engine"] for r in runs if "unavailable" in r or "error" in r})
    absent = f"; not shown (unavailable or failed): {', '.join(missing)}" if missing else ""
    ax.set_title(
        f"Distributed engines: {first['partitions']} partitions/ranks x {first['keys_per_writer']:,} keys "
        f"into one shared store, total throughput{absent}",
        fontsize=10,
    )


def plot_results(doc: Mapping[str, Any], path: str) -> str:
    """Draw ``doc`` (what ``ctx bench --json`` prints) into the PNG file ``path``; returns ``path``."""
    plt = _pyplot()
    panels: list[tuple[float, Any]] = []  # (relative height, draw)
    if doc.get("results"):
        panels.append((1.0, lambda ax: _modes_panel(ax, doc)))
    if doc.get("sweep"):
        panels.append((1.0, lambda ax: _sweep_panel(ax, doc["sweep"])))
    if doc.get("processes"):
        panels.append((1.0, lambda ax: _processes_panel(ax, doc["processes"])))
    annotations = _annotation_runs(doc)
    if annotations:
        title = "Annotation runs: add_row_context time (flush included) and peak RSS growth, in a subprocess"
        panels.append((0.3 + 0.15 * len(annotations), lambda ax: _seconds_panel(ax, annotations, title)))
    sharding = doc.get("sharding") or {}
    if "single" in sharding:
        panels.append((0.8, lambda ax: _sharding_panel(ax, sharding)))
    if any(r.get("keys_per_s") for r in doc.get("engines") or []):
        panels.append((1.0, lambda ax: _engines_panel(ax, doc["engines"])))
    if not panels:
        raise ValueError("nothing to plot: the benchmark produced no results")
    heights = [h for h, _ in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(13, 5.2 * sum(heights) + 0.6),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
        layout="constrained",
    )
    try:
        for (_, draw), ax in zip(panels, axes[:, 0]):
            draw(ax)
        machine = f"{doc.get('machine', '')}, {doc.get('cpus', '?')} CPUs, Python {doc.get('python', '')}"
        fig.suptitle(
            f"ctx bench — context-framework {doc.get('context_framework', '')} ({machine})", fontsize=12
        )
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path
