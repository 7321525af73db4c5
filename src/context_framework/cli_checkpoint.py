"""``ctx export``, ``ctx import`` and ``ctx copy``: checkpoints from the command line.

::

    ctx export redis://host:6379/0 backup.jsonl.gz [--namespace NS ...] [--prefix '["row"]']
    ctx import backup.jsonl.gz postgresql://user@host/db [--into NS] [--mode skip-existing] [--clear]
    ctx import backup.jsonl.gz --check          # read and check the file, write nothing
    ctx copy memory:// redis://host:6379/0 [--namespace NS ...] [--into NS]

``-`` as FILE is standard output (export) or input (import). A summary goes
to stderr (``-q`` silences it and the progress bar), so stdout stays the
data when exporting to ``-``. Exit status: 0 done, 1 the file or a store
failed (the message says what and where), 2 a bad option or URL, 130
interrupted. Messages never show a password.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from .exceptions import ContextConfigurationError, ContextError, MissingDependencyError
from .urls import mask_secrets

__all__ = ["add_checkpoint_commands", "redact"]

#: ``redact(text, urls)``: ``text`` with every URL's password (and the passwords of ``urls``) hidden.
redact = mask_secrets


class _Usage(ValueError):
    """A bad option value: printed, exit status 2."""


def _prefix(raw: str | None) -> tuple[Any, ...] | None:
    if raw is None:
        return None
    from .checkpoint import key_from_json

    try:
        prefix = key_from_json(json.loads(raw))
    except ValueError as exc:
        raise _Usage(
            f"--prefix takes a key prefix as a JSON array, e.g. '[\"row\"]'; got {raw!r} ({exc})"
        ) from None
    if type(prefix) is not tuple:
        raise _Usage(f"--prefix takes a JSON array (a tuple prefix), e.g. '[\"row\"]'; got {raw!r}")
    return prefix


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.quiet else (True if args.progress else None)


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(f"ctx {args.command}: {message}", file=sys.stderr, flush=True)


def _rate(count: int, seconds: float) -> str:
    return f"{count:,} entries in {seconds:.1f} s ({count / max(seconds, 1e-9):,.0f} entries/s)"


def _run(args: argparse.Namespace, urls: tuple[str, ...], work: Callable[[], str]) -> int:
    """Run one command; turn its errors into a message on stderr and an exit status."""
    try:
        message = work()
    except KeyboardInterrupt:
        print(f"ctx {args.command}: interrupted", file=sys.stderr)
        return 130
    except (_Usage, ContextConfigurationError, MissingDependencyError) as exc:
        print(f"ctx {args.command}: {redact(str(exc), urls)}", file=sys.stderr)
        return 2
    except (ContextError, OSError) as exc:
        print(f"ctx {args.command}: {redact(str(exc), urls)}", file=sys.stderr)
        return 1
    _say(args, redact(message, urls))
    return 0


def _file(path: str, mode: str) -> Any:
    """The path itself, or the binary standard stream for ``-``."""
    if path != "-":
        return path
    return sys.stdout.buffer if mode == "w" else sys.stdin.buffer


def _export(args: argparse.Namespace) -> int:
    from .checkpoint import export_store

    def work() -> str:
        start = time.perf_counter()
        count = export_store(
            args.url,
            _file(args.file, "w"),
            format=args.format,
            prefix=_prefix(args.prefix),
            namespaces=args.namespaces,
            compress=True if args.gzip else None,
            progress=_progress(args),
        )
        if args.file == "-":
            sys.stdout.flush()
        return f"{_rate(count, time.perf_counter() - start)} from {args.url} to {args.file}"

    return _run(args, (args.url,), work)


def _import(args: argparse.Namespace) -> int:
    from .checkpoint import import_store, verify_checkpoint

    def work() -> str:
        start = time.perf_counter()
        if args.check:
            if args.url is not None:
                raise _Usage("--check reads the file only: give no URL")
            reader = verify_checkpoint(_file(args.file, "r"), format=args.format)
            return f"{args.file} is a valid {reader.format} checkpoint of {reader.count:,} entries"
        if args.url is None:
            raise _Usage("give the URL of the store to import into (or --check)")
        count = import_store(
            _file(args.file, "r"),
            args.url,
            format=args.format,
            batch_size=args.batch_size,
            namespace=args.into,
            mode=args.mode,
            clear=args.clear,
            verify=True if args.verify else None,
            progress=_progress(args),
        )
        return f"{_rate(count, time.perf_counter() - start)} from {args.file} written to {args.url}"

    return _run(args, (args.url or "",), work)


def _copy(args: argparse.Namespace) -> int:
    from .checkpoint import copy_store

    def work() -> str:
        start = time.perf_counter()
        count = copy_store(
            args.source,
            args.target,
            prefix=_prefix(args.prefix),
            namespaces=args.namespaces,
            namespace=args.into,
            mode=args.mode,
            clear=args.clear,
            batch_size=args.batch_size,
            progress=_progress(args),
        )
        return f"{_rate(count, time.perf_counter() - start)} copied from {args.source} to {args.target}"

    return _run(args, (args.source, args.target), work)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress", action="store_true", help="always show a progress bar (default: on a terminal)"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        dest="namespaces",
        action="append",
        metavar="NS",
        help="a namespace to take, relative to the URL's (repeat for several; '' is the URL's own, "
        "the default)",
    )
    parser.add_argument("--prefix", metavar="JSON", help="only keys under this prefix, e.g. '[\"row\"]'")


def _writing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--into", metavar="NS", help="put the entries under this namespace of the target")
    parser.add_argument(
        "--mode",
        choices=("replace", "skip-existing"),
        default="replace",
        help="replace keys that exist (default) or keep them",
    )
    parser.add_argument(
        "--clear",
        action="store_true",
        help="first delete the target's keys in the namespaces (and prefix) being written",
    )
    parser.add_argument(
        "--batch-size", type=_positive, default=10_000, help="entries per write (default 10,000)"
    )


def add_checkpoint_commands(sub: Any) -> None:
    """Add ``export``, ``import`` and ``copy`` to the ``ctx`` subcommands ``sub``."""
    export = sub.add_parser(
        "export",
        help="dump a store to a checkpoint file (JSON Lines, .gz, or Parquet)",
        description="Dump a store (its namespace, or the namespaces named) to FILE: JSON Lines, gzip when "
        "FILE ends in .gz, Parquet when it ends in .parquet. '-' is standard output.",
    )
    export.add_argument("url", metavar="URL", help="the store, e.g. redis://host:6379/0")
    export.add_argument("file", metavar="FILE", help="the checkpoint file to write ('-': stdout)")
    _selection(export)
    export.add_argument("--format", choices=("jsonl", "parquet"), help="default: from FILE's suffix")
    export.add_argument("--gzip", action="store_true", help="gzip the JSON Lines whatever FILE's name")
    _common(export)
    export.set_defaults(func=_export)

    imp = sub.add_parser(
        "import",
        help="load a checkpoint file into a store",
        description="Load FILE (JSON Lines, .gz or Parquet, sniffed) into the store at URL, in batches. "
        "'-' is standard input.",
    )
    imp.add_argument("file", metavar="FILE", help="the checkpoint file ('-': stdin)")
    imp.add_argument("url", metavar="URL", nargs="?", help="the store to write into")
    _writing(imp)
    imp.add_argument("--format", choices=("jsonl", "parquet"), help="default: sniffed from the content")
    imp.add_argument(
        "--verify", action="store_true", help="read the whole file once before writing (implied by --clear)"
    )
    imp.add_argument("--check", action="store_true", help="only read and check FILE; write nothing")
    _common(imp)
    imp.set_defaults(func=_import)

    copy = sub.add_parser(
        "copy",
        help="copy entries from one store to another by URL",
        description="Stream entries from SOURCE into TARGET in batches, without a file.",
    )
    copy.add_argument("source", metavar="SOURCE", help="the store to read")
    copy.add_argument("target", metavar="TARGET", help="the store to write")
    _selection(copy)
    _writing(copy)
    _common(copy)
    copy.set_defaults(func=_copy)
