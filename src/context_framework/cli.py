"""The ``ctx`` command line: ``ctx bench`` runs the spec's benchmark.

Also available as ``python -m context_framework``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import __version__
from .bench.modes import MODES
from .bench.targets import STORES

__all__ = ["build_parser", "main"]

_SERVER_ENV = (
    ("redis", "CONTEXT_FRAMEWORK_REDIS_URL"),
    ("redis-cluster", "CONTEXT_FRAMEWORK_REDIS_CLUSTER_URL"),
    ("postgres", "CONTEXT_FRAMEWORK_POSTGRES_URL"),
    ("mysql", "CONTEXT_FRAMEWORK_MYSQL_URL"),
)


#: ``ctx bench --quick``: what it changes (flags given explicitly still win).
QUICK = {"ops": 5_000, "batch_ops": 50_000, "repeat": 2, "stores": "memory,sqlite"}
_DEFAULTS = {"ops": 10_000, "batch_ops": 100_000, "repeat": 5, "stores": ",".join(STORES)}


class UsageError(ValueError):
    """A bad option value; ``ctx`` prints it and exits with status 2."""


def _options(args: argparse.Namespace) -> Any:
    """Check the options and turn them into :class:`~.bench.run.BenchOptions`."""
    from .bench.engines import ENGINE_KEYS, ENGINE_WORKERS, parse_engines
    from .bench.modes import parse_modes
    from .bench.run import BenchOptions
    from .bench.sweep import parse_sizes
    from .bench.targets import parse_stores

    for name, default in _DEFAULTS.items():  # --quick's values, or the defaults, for flags not given
        if getattr(args, name) is None:
            setattr(args, name, QUICK[name] if args.quick else default)
    for name in (
        "ops",
        "batch_ops",
        "rows",
        "repeat",
        "processes",
        "annotate_rows",
        "engine_keys",
        "engine_workers",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    try:
        stores, modes = parse_stores(args.stores), parse_modes(args.modes)
        sweep = parse_sizes(args.sweep) if args.sweep is not None else None
        engines = parse_engines(args.engine) if args.engine is not None else ()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for flag in ("engine_keys", "engine_workers"):
        if getattr(args, flag) is not None and not engines:
            raise UsageError(f"--{flag.replace('_', '-')} goes with --engine")
    shard_urls = [u.strip() for u in args.shard_urls.split(",") if u.strip()] if args.shard_urls else None
    if args.shard_urls is not None and not args.shards:
        raise UsageError("--shard-urls goes with --shards")
    if args.plot:
        _check_plot_target(args.plot)
    if not args.table and not (args.processes or sweep or args.annotate_rows or args.shards or engines):
        raise UsageError(
            "--no-table leaves nothing to run: "
            "add --processes, --sweep, --annotate-rows, --shards or --engine"
        )
    urls = {store: getattr(args, f"{store.replace('-', '_')}_url") for store, _ in _SERVER_ENV}
    return BenchOptions(
        ops=args.ops,
        batch_ops=args.batch_ops,
        rows=args.rows,
        repeat=args.repeat,
        stores=stores,
        modes=modes,
        urls={k: v for k, v in urls.items() if v},
        table=args.table,
        processes=args.processes,
        sweep=sweep,
        annotate_rows=args.annotate_rows,
        shards=args.shards,
        shard_urls=shard_urls,
        engines=engines,
        engine_keys=args.engine_keys or ENGINE_KEYS,
        engine_workers=args.engine_workers or ENGINE_WORKERS,
        quick=args.quick,
    )


def _check_plot_target(path: str) -> None:
    """Fail before a long run, not after it: matplotlib present, directory there, a known format."""
    import importlib.util

    from .exceptions import MissingDependencyError

    if importlib.util.find_spec("matplotlib") is None:
        raise MissingDependencyError.for_extra("bench", "matplotlib")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"--plot: directory {directory!r} does not exist")
    if os.path.splitext(path)[1].lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"--plot writes a .png (or .svg, .pdf) file, got {path!r}")


def _bench_urls(args: argparse.Namespace) -> list[str]:
    """Every server URL the benchmark may use: its passwords never appear in what it prints."""
    urls = [getattr(args, f"{s.replace('-', '_')}_url") or os.environ.get(env, "") for s, env in _SERVER_ENV]
    return [u for u in [*urls, *(args.shard_urls or "").split(",")] if u]


def _hide_passwords(value: Any, urls: list[str]) -> Any:
    """``value`` (the benchmark's document) with every password hidden from its strings."""
    from .urls import mask_secrets

    if isinstance(value, str):
        return mask_secrets(value, urls)
    if isinstance(value, list):
        return [_hide_passwords(v, urls) for v in value]
    if isinstance(value, dict):
        return {k: _hide_passwords(v, urls) for k, v in value.items()}
    return value


def _bench(args: argparse.Namespace) -> int:
    from .bench.progress import Progress
    from .bench.run import format_report, run_bench
    from .exceptions import MissingDependencyError

    urls = _bench_urls(args)
    try:
        options = _options(args)
    except (UsageError, MissingDependencyError) as exc:
        print(f"ctx bench: {_hide_passwords(str(exc), urls)}", file=sys.stderr)
        return 2
    if args.output:
        args.json = True
    show = not args.quiet and (not args.json or args.progress)
    progress = Progress(enabled=show, bar=True if args.progress else None)
    doc = _hide_passwords(run_bench(options, progress), urls)
    if args.plot:
        from .bench.plot import plot_results

        try:
            plot_results(doc, args.plot)
        except ValueError as exc:  # e.g. every engine unavailable: the report still prints
            print(f"ctx bench: no plot written ({exc})", file=sys.stderr)
            args.plot = None
    if args.json:
        text = json.dumps(doc, indent=2)
        if args.output:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        else:
            print(text)
        if args.plot and not args.quiet:
            print(f"ctx bench: plot written to {args.plot}", file=sys.stderr)
    else:
        print(format_report(doc))
        if args.plot:
            print(f"\nPlot written to {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctx", description="context-framework command line")
    parser.add_argument("--version", action="version", version=f"context-framework {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser(
        "bench",
        help="run the spec's benchmark for every store and mode",
        description="The spec's benchmark (10,000 add_context then get_context on ('row', i)) for every "
        "store, per-call, buffered and batch, next to hand-written baselines (a footnote says what each "
        "is); opt-in: N processes, a batch-size sweep, a large annotation run, sharding, Spark/Dask/MPI "
        "writers, a plot. Start with --quick.",
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help=f"a short first run: --ops {QUICK['ops']:,} --batch-ops {QUICK['batch_ops']:,} --repeat "
        f"{QUICK['repeat']} --stores {QUICK['stores']} (no server needed; flags given explicitly win). "
        "About 10 s (7-11 s measured on a busy 2-core machine, where the full default run with every "
        "server took 4-11 minutes)",
    )
    bench.add_argument(
        "--ops",
        type=int,
        help="add+get pairs per-call and buffered (default 10,000, as the spec)",
    )
    bench.add_argument("--batch-ops", type=int, help="entries in batch mode (default 100,000)")
    bench.add_argument(
        "--rows", type=int, default=100_000, help="rows of the DataFrame (default 100,000, as the spec)"
    )
    bench.add_argument("--repeat", type=int, help="runs per case; the median is shown (default 5)")
    bench.add_argument("--stores", help=f"comma-separated stores to run (default: all of {','.join(STORES)})")
    bench.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated modes (default: all of {','.join(MODES)})"
    )
    for store, env in _SERVER_ENV:
        bench.add_argument(
            f"--{store}-url",
            metavar="URL",
            help=f"{store} server to use (default: ${env}, else a throwaway server)",
        )
    extra = bench.add_argument_group("opt-in sections (longer runs)")
    extra.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="also run N processes on one shared store per store and mode: total calls/s "
        "and per-call latency percentiles",
    )
    extra.add_argument(
        "--sweep",
        nargs="?",
        const="1,10,100,1000,10000",
        metavar="SIZES",
        help="also sweep batch sizes (default 1,10,100,1000,10000)",
    )
    extra.add_argument(
        "--annotate-rows",
        nargs="?",
        type=int,
        const=10_000_000,
        metavar="N",
        help="also annotate N rows (default 10,000,000): time and peak memory; and point reads "
        "with an annotation present",
    )
    extra.add_argument("--shards", action="store_true", help="also compare 3 Redis servers with 1")
    extra.add_argument(
        "--shard-urls",
        metavar="URL,URL,URL",
        help="with --shards: the Redis servers to use (default: throwaway servers)",
    )
    extra.add_argument(
        "--engine",
        metavar="ENGINES",
        help="also run the multi-process benchmark on these engines (comma-separated spark,dask,mpi, "
        "or all): every partition or rank writes its keys to one shared store; total keys/s per engine "
        "and store",
    )
    extra.add_argument(
        "--engine-keys",
        type=int,
        metavar="N",
        help="with --engine: keys each partition or rank writes (default 10,000, as the spec)",
    )
    extra.add_argument(
        "--engine-workers",
        type=int,
        metavar="N",
        help="with --engine: partitions (Spark, Dask) or ranks (MPI) (default 4); "
        "Dask runs them on a LocalCluster of 2 worker processes",
    )
    extra.add_argument(
        "--no-table",
        dest="table",
        action="store_false",
        help="skip the spec table (run only the opt-in sections)",
    )
    out = bench.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print machine-readable JSON")
    out.add_argument(
        "--output", "-o", metavar="FILE", help="write the JSON document to FILE (implies --json)"
    )
    out.add_argument(
        "--plot", metavar="FILE.png", help="draw the results into this PNG file (needs matplotlib)"
    )
    out.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar even when stderr is not a terminal (or with --json)",
    )
    out.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    bench.set_defaults(func=_bench)
    from .cli_checkpoint import add_checkpoint_commands

    add_checkpoint_commands(sub)  # ctx export / import / copy
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse already printed
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
