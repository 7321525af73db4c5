"""Bulk row context at scale: time and peak memory of ``add_row_context`` on millions of rows.

Each case runs in a fresh Python process so that its peak memory is its own:
the child builds the DataFrame (and the selection and per-row metadata, which
are inputs), records its peak RSS as the baseline, then times
``add_row_context`` (plus ``flush``) and a sample of ``get_context`` reads,
which it checks. Reported memory is the growth of the peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) over the current RSS at that point
(an upper bound: it also counts whatever building the inputs peaked above
it, kept small) and, for
annotations, the ``tracemalloc`` peak (skipped for per-row writes, where
tracing a million small dicts would distort the time).

Cases (``mask``): ``"random"`` selects a random half of the rows with a
boolean mask; ``"slice"`` selects every row with ``slice(None)``
(``df.loc[:]``). With ``per_row=False`` one metadata dict is stored once as a
row annotation; with ``per_row=True`` every selected row gets its own dict
(``{"i": <row>, "src": "bench"}``, from a DataFrame aligned with the frame)
in one batch.

Point reads with an annotation present (:func:`run_annotated_gets`): gets
of rows without entries of their own, then the spec's loop (``add_context``
then ``get_context`` of ``("row", i)``), on one adapter with an annotation
present and on one without, interleaved in the same process, medians of
``repeat`` runs: on the in-memory store with one 10-row annotation among the
rows read, and on SQLite with a random-half mask annotation over a
10,000,000-row frame.

Run ``python -m context_framework.bench.annotations`` for memory and a
temporary SQLite file (10,000,000 rows), and per-row metadata for
1,000,000 rows on Redis / PostgreSQL with ``--redis-url`` / ``--postgres-url``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "GETS_CASES",
    "describe_annotation",
    "format_gets",
    "format_result",
    "run_annotated_gets",
    "run_annotation_bench",
]

_MASKS = ("random", "slice")
_SAMPLE = 1_000
_GETS_META = {"source": "bench", "batch": 1}

#: The point-read cases: (store, frame rows, rows the loop writes and reads, annotation). Frame
#: rows ``None``: those of the annotation run (``--annotate-rows``, 10,000,000 by default).
GETS_CASES: tuple[tuple[str, int | None, int, str], ...] = (
    ("memory", 100_000, 100_000, "rows10"),
    ("sqlite", None, 1_000, "mask"),
    ("sqlite", None, 100_000, "mask"),
)


def describe_annotation(annotation: str, frame_rows: int) -> str:
    """How a table names the annotation of a point-read case."""
    return (
        "one 10-row annotation" if annotation == "rows10" else f"a random-half mask over {frame_rows:,} rows"
    )


def run_annotation_bench(
    url: str,
    *,
    rows: int = 10_000_000,
    per_row: bool = False,
    mask: str = "random",
    sample: int = _SAMPLE,
    timeout: float | None = 1800,
) -> dict[str, Any]:
    """Run one case in a fresh subprocess against the store at ``url``; return its figures.

    Keys: ``store`` (URL scheme), ``rows``, ``selected`` (rows given context),
    ``per_row``, ``mask``, ``add_seconds``, ``read_seconds`` and ``reads``
    (the sample of ``get_context`` calls), ``peak_rss_mib`` (peak RSS growth
    over the baseline taken after building the data), ``baseline_rss_mib``,
    ``tracemalloc_peak_mib`` (``None`` for per-row writes).
    """
    if mask not in _MASKS:
        raise ValueError(f"mask must be one of {_MASKS}, got {mask!r}")
    if not isinstance(rows, int) or rows <= 0:
        raise ValueError(f"rows must be a positive int, got {rows!r}")
    args = {"url": url, "rows": rows, "per_row": per_row, "mask": mask, "sample": sample}
    proc = subprocess.run(
        [sys.executable, "-m", "context_framework.bench.annotations", "--child", json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"annotation benchmark failed for {_scheme(url)}:\n{tail}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _scheme(url: str) -> str:
    return urlsplit(url).scheme or url.split(":", 1)[0]


def _current_rss_kib() -> int | None:
    """The current resident set size (Linux), else None."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return None


def _child(url: str, rows: int, per_row: bool, mask: str, sample: int) -> dict[str, Any]:
    import resource
    import tracemalloc

    import numpy as np
    import pandas as pd

    from ..adapters.pandas_adapter import PandasContextAdapter

    rng = np.random.default_rng(0)
    # Inputs built without large temporaries, so that the baseline peak is close to the current RSS.
    df = pd.DataFrame({"A": np.arange(rows, dtype=np.int64)}, copy=False)
    if mask == "random":
        bits = rng.integers(0, 256, size=(rows + 7) // 8, dtype=np.uint8)
        selection: Any = np.unpackbits(bits, count=rows).view(bool)
    else:
        selection = slice(None)
    selected = np.asarray(selection) if mask == "random" else np.ones(rows, dtype=bool)
    metadata: Any = {"source": "bench", "batch": 1}
    if per_row:
        metadata = pd.DataFrame({"i": np.arange(rows, dtype=np.int64), "src": "bench"}, index=df.index)
    probe = rng.integers(0, rows, size=min(sample, rows)).tolist()
    adapter = PandasContextAdapter(df, context_store=url, name=f"bench-annotations-{uuid.uuid4().hex}")
    try:
        gc.collect()
        baseline = _current_rss_kib() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        trace = not per_row
        if trace:
            tracemalloc.start()
        start = time.perf_counter()
        count = adapter.add_row_context(selection, metadata, per_row=per_row)
        adapter.flush()
        added = time.perf_counter()
        traced = tracemalloc.get_traced_memory()[1] if trace else None
        if trace:
            tracemalloc.stop()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start_read = time.perf_counter()
        got = [adapter.get_context(("row", i)) for i in probe]
        read = time.perf_counter() - start_read
        for i, value in zip(probe, got):
            expected = (
                None
                if not selected[i]
                else ({"i": i, "src": "bench"} if per_row else {"source": "bench", "batch": 1})
            )
            if value != expected:
                raise AssertionError(f"row {i}: read {value!r}, expected {expected!r}")
    finally:
        adapter.clear_context()
        adapter.close()
    return {
        "store": _scheme(url),
        "rows": rows,
        "selected": count,
        "per_row": per_row,
        "mask": mask,
        "add_seconds": round(added - start, 4),
        "reads": len(probe),
        "read_seconds": round(read, 4),
        "baseline_rss_mib": round(baseline / 1024, 1),
        "peak_rss_mib": round(max(0, peak - baseline) / 1024, 1),
        "tracemalloc_peak_mib": None if traced is None else round(traced / 2**20, 1),
    }


def run_annotated_gets(
    open_url: Callable[[], tuple[str, Callable[[], None]]],
    *,
    frame_rows: int,
    annotation: str,
    num_ops: int = 100_000,
    repeat: int = 3,
) -> dict[str, Any]:
    """Point reads without and with an annotation present, interleaved; medians of ``repeat`` runs.

    Each run opens a fresh store with ``open_url()`` (a URL and how to remove
    it), wraps a ``frame_rows``-row frame, makes the annotation when the run is
    the annotated one (``"rows10"``: 10 rows among those read; ``"mask"``: a
    random half of the frame) and reads one row (an adapter loads the
    annotations at its first row read: ``first_read_seconds``). Then it times
    ``num_ops`` gets of rows that have no entry of their own (``bare_*``:
    what annotations are for), then the spec's loop: ``num_ops`` adds and gets
    of ``("row", i)``, and checks a covered and an uncovered row.
    """
    import numpy as np
    import pandas as pd

    from ..adapters.pandas_adapter import PandasContextAdapter
    from .modes import spec_loop

    num_ops = min(num_ops, frame_rows)
    df = pd.DataFrame({"A": np.arange(frame_rows, dtype=np.int64)}, copy=False)
    if annotation == "rows10":
        selection: Any = slice(num_ops // 2, num_ops // 2 + 9)
        covered = np.zeros(frame_rows, dtype=bool)
        covered[num_ops // 2 : num_ops // 2 + 10] = True
    elif annotation == "mask":
        bits = np.random.default_rng(0).integers(0, 256, size=(frame_rows + 7) // 8, dtype=np.uint8)
        selection = covered = np.unpackbits(bits, count=frame_rows).view(bool)
    else:
        raise ValueError(f"annotation must be 'rows10' or 'mask', got {annotation!r}")
    runs: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    for _ in range(repeat):
        for name in runs:
            url, cleanup = open_url()
            adapter = PandasContextAdapter(df, context_store=url)
            try:
                if name == "with":
                    adapter.add_row_context(selection, _GETS_META)
                runs[name].append(_timed_gets(adapter, num_ops, spec_loop))
                _check_gets(adapter, covered[:num_ops], name == "with")
            finally:
                adapter.clear_context()
                adapter.close()
                cleanup()
    out: dict[str, Any] = {"frame_rows": frame_rows, "annotation": annotation, "num_ops": num_ops}
    for name, timings in runs.items():
        out[name] = {k: statistics.median(t[k] for t in timings) for k in timings[0]}
        out[name]["gets_per_second"] = num_ops / out[name]["get_seconds"]
        out[name]["bare_gets_per_second"] = num_ops / out[name]["bare_get_seconds"]
    out["get_ratio"] = out["with"]["gets_per_second"] / out["without"]["gets_per_second"]
    out["bare_get_ratio"] = out["with"]["bare_gets_per_second"] / out["without"]["bare_gets_per_second"]
    loop = {n: out[n]["add_seconds"] + out[n]["get_seconds"] for n in runs}
    out["loop_ratio"] = loop["without"] / loop["with"]
    return out


def _timed_gets(
    adapter: Any, num_ops: int, spec_loop: Callable[..., tuple[float, float]]
) -> dict[str, float]:
    """The first row read, ``num_ops`` gets of rows without entries, then the spec's loop."""
    gc.collect()
    start = time.perf_counter()
    adapter.get_context(("row", 0))
    first = time.perf_counter()
    for i in range(num_ops):
        adapter.get_context(("row", i))
    bare = time.perf_counter()
    add, get = spec_loop(adapter, num_ops)
    return {
        "first_read_seconds": first - start,
        "bare_get_seconds": bare - first,
        "add_seconds": add,
        "get_seconds": get,
    }


def _check_gets(adapter: Any, covered: Any, annotated: bool) -> None:
    """A covered row reads the annotation merged under its own entry; an uncovered one its own entry."""
    for i in (int(covered.argmax()), int(covered.argmin())):
        own = {"meta": f"value_{i}"}
        expected = {**_GETS_META, **own} if annotated and covered[i] else own
        got = adapter.get_context(("row", i))
        if got != expected:
            raise AssertionError(f"row {i}: read {got!r}, expected {expected!r}")


def format_gets(results: list[dict[str, Any]]) -> str:
    """The point-read cases as a table: gets/s without and with the annotation, and the ratios."""
    from .spec_benchmark import _grid

    rows = [
        (
            "Store",
            "Annotation present",
            "Rows read",
            "Spec loop gets/s: without",
            "with",
            "ratio",
            "Loop ratio",
            "Rows without entries, gets/s: without",
            "with",
            "ratio",
        )
    ]
    for r in results:
        if "result" not in r:
            why = "unavailable" if "unavailable" in r else "failed"
            rows.append((r["label"], r["what"], f"{r['num_ops']:,}", "-", "-", why, "-", "-", "-", "-"))
            continue
        g = r["result"]
        rows.append(
            (
                r["label"],
                r["what"],
                f"{g['num_ops']:,}",
                f"{g['without']['gets_per_second']:,.0f}",
                f"{g['with']['gets_per_second']:,.0f}",
                f"{g['get_ratio']:.2f}x",
                f"{g['loop_ratio']:.2f}x",
                f"{g['without']['bare_gets_per_second']:,.0f}",
                f"{g['with']['bare_gets_per_second']:,.0f}",
                f"{g['bare_get_ratio']:.2f}x",
            )
        )
    return _grid(rows)


def format_result(r: dict[str, Any]) -> str:
    """One line per case."""
    kind = "per-row" if r["per_row"] else "annotation"
    traced = (
        "" if r["tracemalloc_peak_mib"] is None else f", tracemalloc peak {r['tracemalloc_peak_mib']} MiB"
    )
    return (
        f"{r['store']:<11} {kind:<10} {r['mask']:<6} {r['rows']:>11,} rows ({r['selected']:>10,} selected): "
        f"add {r['add_seconds']:.2f} s, peak RSS +{r['peak_rss_mib']} MiB{traced}; "
        f"{r['reads']} reads {r['read_seconds']:.3f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows for annotations")
    parser.add_argument("--per-row-rows", type=int, default=1_000_000, help="rows for per-row writes")
    parser.add_argument("--redis-url", help="also run per-row writes on this Redis")
    parser.add_argument("--postgres-url", help="also run per-row writes on this PostgreSQL")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each point-read case (median)")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(**json.loads(args.child))))
        return 0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        targets = ["memory://", f"sqlite:///{os.path.join(tmp, 'bench.db')}"]
        cases: list[tuple[str, int, bool, str]] = [
            (url, args.rows, False, mask) for url in targets for mask in _MASKS
        ]
        for url in [u for u in (args.redis_url, args.postgres_url) if u]:
            cases.append((url, args.per_row_rows, True, "slice"))
        for url, rows, per_row, mask in cases:
            result = run_annotation_bench(url, rows=rows, per_row=per_row, mask=mask)
            results.append(result)
            print(json.dumps(result) if args.json else format_result(result), flush=True)
        from .scale import run_annotated_gets as run_gets

        notes: list[str] = []
        gets = run_gets(("memory", "sqlite"), args.rows, workdir=tmp, notes=notes, repeat=args.repeat)
        print("\n".join(map(json.dumps, gets)) if args.json else format_gets(gets), flush=True)
        for note in notes:
            print(f"Note: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
