"""The ``ctx`` command line: ``ctx bench`` runs the spec's benchmark.

Also available as ``python -m context_framework``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from typing import Any

from . import __version__
from .bench.spec_benchmark import STORES

__all__ = ["main"]


def _bench(args: argparse.Namespace) -> int:
    from .bench.spec_benchmark import STORES, format_table, run_benchmarks

    stores = tuple(s.strip() for s in args.stores.split(",") if s.strip())
    bad = [s for s in stores if s not in STORES]
    if bad:
        print(f"ctx bench: unknown store(s) {', '.join(bad)}; choose from {', '.join(STORES)}",
              file=sys.stderr)
        return 2

    def progress(msg: str) -> None:
        if not args.json and not args.quiet:
            print(f"  {msg}", file=sys.stderr, flush=True)

    urls = {
        "redis": args.redis_url,
        "redis-cluster": args.redis_cluster_url,
        "postgres": args.postgres_url,
        "mysql": args.mysql_url,
    }
    notes: list[str] = []
    results = run_benchmarks(num_ops=args.ops, batch_ops=args.batch_ops, rows=args.rows,
                             repeat=args.repeat, stores=stores, progress=progress,
                             urls={k: v for k, v in urls.items() if v}, notes=notes)
    if args.json:
        doc: dict[str, Any] = {
            "benchmark": "spec single-process (add_context then get_context on ('row', i))",
            "context_framework": __version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": __import__("os").cpu_count(),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "repeat": args.repeat,
            "results": [r.as_dict() for r in results],
            "notes": notes,
        }
        text = json.dumps(doc, indent=2)
        if args.output:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        else:
            print(text)
    else:
        print(f"\ncontext-framework {__version__}: the spec's benchmark, median of {args.repeat} "
              f"runs ({args.ops:,} add+get pairs per-call, {args.batch_ops:,} in batch mode)\n")
        print(format_table(results))
        print("\nOps/Second counts an add+get pair as one op, as the spec's table does; "
              "Calls/Second counts each call. Each store's ratio is to the raw client "
              "(or plain dict) measured in the same run.")
        for note in notes:
            print(f"Note: {note}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctx", description="context-framework command line")
    parser.add_argument("--version", action="version", version=f"context-framework {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="run the spec's single-process benchmark for every store")
    bench.add_argument("--ops", type=int, default=10_000,
                       help="add+get pairs in per-call mode (default 10,000, as the spec)")
    bench.add_argument("--batch-ops", type=int, default=100_000,
                       help="entries in batch mode (default 100,000)")
    bench.add_argument("--rows", type=int, default=100_000,
                       help="rows of the DataFrame (default 100,000, as the spec)")
    bench.add_argument("--repeat", type=int, default=5, help="runs per case; the median is shown")
    bench.add_argument("--stores", default=",".join(STORES),
                       help=f"comma-separated stores to run (default: all of {','.join(STORES)})")
    for store, env in (("redis", "CONTEXT_FRAMEWORK_REDIS_URL"),
                       ("redis-cluster", "CONTEXT_FRAMEWORK_REDIS_CLUSTER_URL"),
                       ("postgres", "CONTEXT_FRAMEWORK_POSTGRES_URL"),
                       ("mysql", "CONTEXT_FRAMEWORK_MYSQL_URL")):
        bench.add_argument(f"--{store}-url", metavar="URL",
                           help=f"{store} server to use (default: ${env}, else a throwaway server)")
    bench.add_argument("--json", action="store_true", help="print machine-readable JSON")
    bench.add_argument("--output", "-o", help="with --json: write the JSON to this file")
    bench.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("ops", "batch_ops", "rows", "repeat"):
        if getattr(args, name, 1) < 1:
            print(f"ctx {args.command}: --{name.replace('_', '-')} must be at least 1",
                  file=sys.stderr)
            return 2
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
