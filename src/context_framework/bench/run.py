"""Everything ``ctx bench`` runs, in one document: the spec table and the opt-in sections.

:func:`run_bench` connects to (or starts) each server once, leaves out the
stores it cannot reach (with a note), then runs the sections that were asked
for and returns one JSON-ready document; :func:`format_report` turns it into
text. Sections: the spec's table in every mode (:mod:`.spec_benchmark`),
N processes on one store (:mod:`.multiprocess`), the batch-size sweep
(:mod:`.sweep`), the large annotation and sharding runs (:mod:`.scale`), and
Spark, Dask and MPI writers on one shared store (:mod:`.engines`).
"""

from __future__ import annotations

import os
import platform
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .modes import BUFFER, CACHE, MODES
from .progress import Progress
from .targets import SERVER_STORES, STORES, probe, server_url

__all__ = ["BenchOptions", "format_report", "run_bench"]


@dataclass
class BenchOptions:
    """What ``ctx bench`` runs (its command-line options)."""

    ops: int = 10_000
    batch_ops: int = 100_000
    rows: int = 100_000
    repeat: int = 5
    stores: tuple[str, ...] = STORES
    modes: tuple[str, ...] = MODES
    urls: dict[str, str] = field(default_factory=dict)
    table: bool = True
    processes: int | None = None
    sweep: tuple[int, ...] | None = None
    annotate_rows: int | None = None
    shards: bool = False
    shard_urls: list[str] | None = None
    engines: tuple[str, ...] = ()
    engine_keys: int = 10_000
    engine_workers: int = 4
    quick: bool = False


def _reachable(
    options: BenchOptions, stack: ExitStack, notes: list[str], progress: Progress
) -> dict[str, str]:
    """URLs of the chosen server stores that answer; the others are left out with a note."""
    urls = {}
    for store in (s for s in SERVER_STORES if s in options.stores):
        progress.note(f"connecting to {store} (or starting a throwaway server)")
        try:
            url = server_url(store, options.urls, stack)
            probe(store, url)
        except Exception as exc:  # a missing server or driver must not hide the other rows
            notes.append(f"{store}: left out ({type(exc).__name__}: {exc})")
        else:
            urls[store] = url
    return urls


def _processes(
    options: BenchOptions,
    stores: tuple[str, ...],
    modes: tuple[str, ...],
    urls: dict[str, str],
    workdir: str,
    notes: list[str],
    progress: Progress,
) -> list[dict[str, Any]]:
    from .multiprocess import run_multiprocess_bench

    n = options.processes or 1
    results = []
    with progress.task(f"{n} processes", len(stores) * len(modes)) as task:
        for store in stores:
            for mode in modes:
                task.step(f"{store} {mode}")
                try:
                    results.append(
                        run_multiprocess_bench(
                            store,
                            urls.get(store),
                            processes=n,
                            mode=mode,
                            workdir=workdir,
                            rows=options.rows,
                            num_ops=options.batch_ops if mode == "batch" else options.ops,
                        )
                    )
                except Exception as exc:
                    notes.append(f"{n} processes on {store} ({mode}): failed ({type(exc).__name__}: {exc})")
    if "memory" in stores:
        notes.append(
            "processes on memory: an in-memory store cannot be shared, so each process has its own; "
            "that row is N independent stores, for reference"
        )
    return results


def _sweep(
    options: BenchOptions,
    stores: tuple[str, ...],
    urls: dict[str, str],
    workdir: str,
    notes: list[str],
    progress: Progress,
) -> list[dict[str, Any]]:
    from .sweep import run_batch_sweep

    sizes = options.sweep or ()
    results: list[dict[str, Any]] = []
    with progress.task("batch sweep", len(stores) * len(sizes) * options.repeat) as task:
        for store in stores:
            try:
                results += run_batch_sweep(
                    store,
                    urls.get(store),
                    sizes=sizes,
                    num_ops=options.ops,
                    repeat=options.repeat,
                    workdir=workdir,
                    step=task.step,
                )
            except Exception as exc:
                notes.append(f"batch sweep on {store}: failed ({type(exc).__name__}: {exc})")
    return results


def run_bench(options: BenchOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Run what ``options`` asks for; return the document ``ctx bench --json`` prints."""
    from .spec_benchmark import footnote, ratios_below_one, run_benchmarks

    progress = progress or Progress.silent()
    notes: list[str] = []
    unavailable: dict[str, str] = {}
    doc: dict[str, Any] = {
        "benchmark": "spec single-process (add_context then get_context on ('row', i))",
        "context_framework": _version(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "repeat": options.repeat,
        "quick": options.quick,
        "ops": options.ops,
        "batch_ops": options.batch_ops,
        "rows": options.rows,
        "modes": list(options.modes),
        "buffered_options": {"buffer": BUFFER, "cache": CACHE},
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="ctx-bench-") as workdir, ExitStack() as stack:
        urls = _reachable(options, stack, notes, progress)
        stores = tuple(s for s in options.stores if s not in SERVER_STORES or s in urls)
        if options.table:
            results = run_benchmarks(
                num_ops=options.ops,
                batch_ops=options.batch_ops,
                rows=options.rows,
                repeat=options.repeat,
                stores=stores,
                modes=options.modes,
                urls=urls,
                notes=notes,
                progress=progress,
                unavailable=unavailable,
            )
            doc["results"] = [r.as_dict() for r in results]
            doc["footnote"] = footnote(results)
            doc["ratios_below_one"] = ratios_below_one(results)
        elif "buffered" in options.modes:
            from .modes import wrappers_unavailable

            reason = wrappers_unavailable()
            if reason:
                unavailable["buffered"] = reason
                notes.append(f"buffered mode unavailable: {reason}")
        modes = tuple(m for m in options.modes if m not in unavailable)
        if options.processes:
            doc["processes"] = _processes(options, stores, modes, urls, workdir, notes, progress)
        if options.sweep:
            doc["sweep"] = _sweep(options, stores, urls, workdir, notes, progress)
        if options.annotate_rows:
            from .scale import annotation_cases, run_annotations

            with progress.task("annotation", len(annotation_cases(stores, urls))) as task:
                doc["annotations"] = run_annotations(
                    stores, urls, options.annotate_rows, workdir=workdir, notes=notes, step=task.step
                )
            from .scale import gets_cases, run_annotated_gets

            rows = options.annotate_rows
            with progress.task("annotated gets", len(gets_cases(stores, rows))) as task:
                doc["annotated_gets"] = run_annotated_gets(
                    stores, rows, workdir=workdir, notes=notes, repeat=options.repeat, step=task.step
                )
        if options.shards:
            from .scale import run_shards

            progress.note("sharding: 3 Redis servers against 1")
            doc["sharding"] = run_shards(
                options.shard_urls, notes=notes, stack=stack, keys=options.batch_ops, repeat=options.repeat
            )
        if options.engines:
            from .engines import engine_cases, run_engines

            with progress.task("engines", len(engine_cases(options.engines, stores, urls))) as task:
                doc["engines"] = run_engines(
                    options.engines,
                    stores,
                    urls,
                    keys=options.engine_keys,
                    workers=options.engine_workers,
                    workdir=workdir,
                    notes=notes,
                    step=task.step,
                )
    doc["unavailable"] = unavailable
    doc["notes"] = notes
    return doc


def _version() -> str:
    from .. import __version__

    return __version__


def format_report(doc: dict[str, Any]) -> str:
    """The text ``ctx bench`` prints: each section that ran, then the notes."""
    from .spec_benchmark import CaseResult, footnote, format_summary, format_table, ratios_below_one

    out: list[str] = []
    modes = tuple(doc.get("modes", MODES))
    if doc.get("results"):
        fields = set(CaseResult.__dataclass_fields__)
        results = [CaseResult(**{k: v for k, v in r.items() if k in fields}) for r in doc["results"]]
        out += [
            f"\ncontext-framework {doc['context_framework']}: the spec's benchmark, median of "
            f"{doc['repeat']} runs ({doc['ops']:,} add+get pairs per-call and buffered, "
            f"{doc['batch_ops']:,} in batch mode)\n",
            format_table(results),
            "\nOps/Second counts an add+get pair as one op, as the spec's table does; Calls/Second "
            "counts each call (in batch mode, each entry). Each store's ratio is to the baseline named "
            "next to it, measured in the same run (see below for what each baseline is).",
        ]
        if "batch" in modes:
            out.append(
                "batch: the same entries through add_context_many/get_context_many, each given a "
                "generator (the adapter consumes it with the cyclic GC paused); the baselines take the "
                "same input."
            )
        if "buffered" in modes and "buffered" not in doc.get("unavailable", {}):
            out.append(
                "buffered: the spec's loop, unchanged, through PandasContextAdapter(df, store, "
                f"buffer={BUFFER}, cache={CACHE}), i.e. CachedStore(BufferedStore(store)). Its add time "
                "includes the final "
                "flush(): every write is in the store when the clock stops. Gets go through the cache, which "
                "the writes filled (write-through). "
                "Its ratio is to a buffer written by hand over the same client (in memory: to the dict "
                "baseline); the last column gives its ratio to the raw client's per-call loop."
            )
        notes = footnote(results)
        if notes:
            out += ["", notes]
        below = ratios_below_one(results)
        out += [
            "\nCalls/s per store and mode (ratio to the baseline):\n",
            format_summary(results, modes, doc.get("unavailable")),
            "\nRatios below 1.00x (ours slower than the baseline): "
            + ("; ".join(below) if below else "none"),
        ]
    if doc.get("processes"):
        from .multiprocess import format_processes

        first = doc["processes"][0]
        out += [
            f"\n{first['processes']} processes on one shared store, each on its own rows "
            f"({doc['ops']:,} add+get per-call and buffered, {doc['batch_ops']:,} in batch), "
            "started together:\n",
            format_processes(doc["processes"]),
            "\nLatency per call in µs: pooled over all processes [range of the per-process values]. "
            "Calls/s counts entries in batch mode.",
        ]
    if doc.get("sweep"):
        from .sweep import format_sweep

        out += [f"\nBatch-size sweep (median of {doc['repeat']} runs):\n", format_sweep(doc["sweep"])]
    if doc.get("annotations"):
        from .scale import format_annotations

        out += [
            "\nAnnotation runs (time and peak memory, measured in a subprocess):\n",
            format_annotations(doc["annotations"]),
        ]
    if doc.get("annotated_gets"):
        from .annotations import format_gets

        out += [
            f"\nPoint reads with an annotation present (the spec's loop, median of {doc['repeat']} runs "
            "interleaved with the same loop on a store without it):\n",
            format_gets(doc["annotated_gets"]),
            "\nRatio: gets/s with the annotation over gets/s without; loop ratio: the same for the "
            "whole add+get loop. Rows without entries: the same rows read before the loop wrote them "
            "(the annotation's covered rows return it). Each adapter has read one row first (its first "
            "row read loads the annotations; that time is first_read_seconds in the JSON).",
        ]
    if doc.get("sharding"):
        from .scale import format_sharding

        out += ["\nSharding (3 Redis servers against 1):\n", format_sharding(doc["sharding"])]
    if doc.get("engines"):
        from .engines import format_engines

        out += [
            "\nDistributed engines: each partition (Spark, Dask) or rank (MPI) writes its own keys to one "
            "shared store, one run each:\n",
            format_engines(doc["engines"]),
            "\nKeys/s: all writers' keys over Write s (first write to last commit). vs 1 process: against "
            "one process sending the same keys with set_many in the same run (MPI: rank 0 alone). "
            "Job s: the driver's time for the job (Spark, Dask). Wall s: the whole run, engine start-up, "
            "warm-up and baseline included (MPI: one mpiexec for both modes).",
        ]
    out += [f"Note: {note}" for note in doc.get("notes", [])]
    return "\n".join(out)
