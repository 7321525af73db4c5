"""``ctx bench --annotate-rows`` and ``--shards``: the large runs, wired to their benchmarks.

* Annotation (:func:`run_annotations`): one metadata dict over ``rows``
  rows on the in-memory and SQLite stores, for all rows
  (``add_row_context(slice(None), ...)``) and for a random half (a boolean
  mask), and per-row metadata for up to 1,000,000 rows on Redis and
  PostgreSQL, each measured by
  :func:`context_framework.bench.annotations.run_annotation_bench` in a fresh
  subprocess: the add time (``flush()`` included) and the growth of the peak
  RSS over the RSS once the inputs are built.
* Point reads with an annotation present (:func:`run_annotated_gets`): the
  spec's loop with and without an annotation, in memory (10 rows annotated)
  and on SQLite (a random-half mask over 10,000,000 rows), same run
  (:func:`context_framework.bench.annotations.run_annotated_gets`).
* Sharding (:func:`run_shards`): :func:`context_framework.bench.sharding.run_sharding_bench`,
  three Redis servers against one.

When those modules cannot be imported, the section says "unavailable" with
the reason instead of failing the whole run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from typing import Any

from .targets import LABELS, tag

__all__ = [
    "ANNOTATION_CASES",
    "ANNOTATION_ROWS",
    "PER_ROW_LIMIT",
    "annotation_cases",
    "format_annotations",
    "format_sharding",
    "gets_cases",
    "run_annotated_gets",
    "run_annotations",
    "run_shards",
]

#: Rows of the annotation run when ``--annotate-rows`` is given without a number.
ANNOTATION_ROWS = 10_000_000
#: Per-row metadata on server stores stops at this many rows.
PER_ROW_LIMIT = 1_000_000
#: The annotation cases: (store, per-row metadata?, selection, what it is).
ANNOTATION_CASES = (
    ("memory", False, "slice", "one dict, all rows (slice)"),
    ("memory", False, "random", "one dict, random half (mask)"),
    ("sqlite", False, "slice", "one dict, all rows (slice)"),
    ("sqlite", False, "random", "one dict, random half (mask)"),
    ("redis", True, "slice", "one dict per row"),
    ("postgres", True, "slice", "one dict per row"),
)


def annotation_cases(stores: tuple[str, ...], urls: Mapping[str, str]) -> list[tuple[str, bool, str, str]]:
    """The cases that run for these stores (server stores only when their server answered)."""
    return [c for c in ANNOTATION_CASES if c[0] in stores and (c[0] in ("memory", "sqlite") or c[0] in urls)]


def _annotation_url(store: str, urls: Mapping[str, str], workdir: str) -> tuple[str, Callable[[], None]]:
    """The URL the annotation run opens, and how to remove what it wrote."""
    name = tag()
    if store == "memory":
        return "memory://", lambda: None
    if store == "sqlite":
        path = os.path.join(workdir, f"{name}.db")

        def remove_file() -> None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)

        return f"sqlite:///{path}", remove_file
    url = urls[store]
    sep = "&" if "?" in url else "?"
    if store == "redis":

        def clear_namespace() -> None:
            from ..redis_store import RedisContextStore

            store_ = RedisContextStore.from_url(url, namespace=name)
            try:
                store_.clear()
            finally:
                store_.close()

        return f"{url}{sep}namespace={name}", clear_namespace
    from .sql_baseline import _drop_store_table

    return f"{url}{sep}table={name}", lambda: _drop_store_table(url, name)


def run_annotations(
    stores: tuple[str, ...],
    urls: Mapping[str, str],
    rows: int,
    *,
    workdir: str,
    notes: list[str],
    step: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Annotation runs for the chosen stores that have one; failures and absences go to ``notes``."""
    cases = annotation_cases(stores, urls)
    if not cases:
        return []
    bench: Callable[..., dict[str, Any]] | None = None
    try:
        from .annotations import run_annotation_bench as bench
    except ImportError as exc:
        notes.append(f"annotation run unavailable: {exc}")
        reason = str(exc)
    results = []
    for store, per_row, mask, what in cases:
        n = min(rows, PER_ROW_LIMIT) if per_row else rows
        entry: dict[str, Any] = {
            "label": LABELS[store],
            "backend": store,
            "rows": n,
            "what": what,
            "mask": mask,
        }
        if bench is None:
            results.append({**entry, "unavailable": reason})
            continue
        if step:
            step(f"{LABELS[store]}: {what}, {n:,} rows")
        url, cleanup = _annotation_url(store, urls, workdir)
        try:
            raw = bench(url, rows=n, per_row=per_row, mask=mask)
        except Exception as exc:
            notes.append(f"annotation run on {store} ({what}): failed ({type(exc).__name__}: {exc})")
            entry["error"] = f"{type(exc).__name__}: {exc}"
        else:
            entry["seconds"] = raw.get("add_seconds")
            entry["peak_mib"] = raw.get("peak_rss_mib")
            entry["tracemalloc_mib"] = raw.get("tracemalloc_peak_mib")
            entry["result"] = raw
        finally:
            cleanup()
        results.append(entry)
    return results


def gets_cases(stores: tuple[str, ...], rows: int) -> list[tuple[str, int, int, str]]:
    """The point-read cases that run for these stores: (store, frame rows, rows read, annotation)."""
    from .annotations import GETS_CASES

    return [(c[0], c[1] or rows, min(c[2], c[1] or rows), c[3]) for c in GETS_CASES if c[0] in stores]


def run_annotated_gets(
    stores: tuple[str, ...],
    rows: int,
    *,
    workdir: str,
    notes: list[str],
    repeat: int = 3,
    step: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Point reads with and without an annotation present, for the chosen local stores.

    ``rows``: the frame of the SQLite cases (the annotation run's rows). A case
    that fails is reported in ``notes`` and its entry has ``error``.
    """
    from .annotations import describe_annotation
    from .annotations import run_annotated_gets as bench

    results = []
    for store, frame_rows, num_ops, annotation in gets_cases(stores, rows):
        what = describe_annotation(annotation, frame_rows)
        entry: dict[str, Any] = {"label": LABELS[store], "backend": store, "what": what, "num_ops": num_ops}
        if step:
            step(f"{LABELS[store]}: {num_ops:,} gets with {what}")
        try:
            entry["result"] = bench(
                lambda: _annotation_url(store, {}, workdir),  # noqa: B023 - called within the iteration
                frame_rows=frame_rows,
                annotation=annotation,
                num_ops=num_ops,
                repeat=repeat,
            )
        except Exception as exc:
            notes.append(f"point reads with {what} on {store}: failed ({type(exc).__name__}: {exc})")
            entry["error"] = f"{type(exc).__name__}: {exc}"
        results.append(entry)
    return results


def format_annotations(results: list[dict[str, Any]]) -> str:
    from .spec_benchmark import _grid

    def number(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rows = [("Store", "Rows", "Metadata", "Seconds", "Peak RSS MiB", "tracemalloc peak MiB")]
    for r in results:
        if "unavailable" in r or "error" in r:
            why = "unavailable" if "unavailable" in r else "failed"
            rows.append((r["label"], f"{r.get('rows', 0):,}", r.get("what", "-"), why, "-", "-"))
            continue
        rows.append(
            (
                r["label"],
                f"{r['rows']:,}",
                r["what"],
                number(r.get("seconds"), ",.2f" if (r.get("seconds") or 0) >= 1 else ".4f"),
                number(r.get("peak_mib"), ",.1f"),
                number(r.get("tracemalloc_mib"), ",.1f"),
            )
        )
    return _grid(rows)


def run_shards(
    shard_urls: list[str] | None,
    *,
    notes: list[str],
    stack: ExitStack,
    keys: int = 100_000,
    batch: int = 1000,
    repeat: int = 3,
) -> dict[str, Any]:
    """Three Redis servers (given, else throwaway) against one: the sharding benchmark's report.

    The result has ``unavailable`` or ``error`` (with the reason) when it could not run.
    """
    try:
        from .sharding import run_sharding_bench
    except ImportError as exc:
        notes.append(f"sharding run unavailable: {exc}")
        return {"unavailable": str(exc)}
    if not shard_urls:
        from ..testing import servers

        try:
            shard_urls = [stack.enter_context(servers.redis_server(use_env=False)) for _ in range(3)]
        except servers.ServerUnavailable as exc:
            notes.append(f"sharding run left out: {exc}")
            return {"unavailable": str(exc)}
    try:
        return dict(run_sharding_bench(shard_urls, keys=keys, batch=batch, repeat=repeat))
    except Exception as exc:
        notes.append(f"sharding run failed ({type(exc).__name__}: {exc})")
        return {"error": f"{type(exc).__name__}: {exc}"}


def format_sharding(result: Mapping[str, Any]) -> str:
    if "unavailable" in result:
        return f"unavailable ({result['unavailable']})"
    if "error" in result:
        return f"failed ({result['error']})"
    from .sharding import format_report

    return format_report(dict(result))
