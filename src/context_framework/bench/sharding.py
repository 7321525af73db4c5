"""Sharding benchmark: batched throughput of a :class:`ShardedStore` over several Redis servers
against one :class:`RedisContextStore` on the first of them, in the same run.

Each repeat runs, one after the other (interleaved, so drift hits every row alike):

* ``single``: one ``RedisContextStore`` on ``urls[0]``;
* ``sharded``: a ``ShardedStore`` over every URL, batches split per shard in parallel;
* ``sharded_serial``: the same with ``parallel=False`` (the shards' parts in turn).

Each writes ``keys`` entries ``("row", i) -> {"meta": "value_i"}`` with ``set_many`` in
batches of ``batch``, reads them back with ``get_many`` in the same batches, checks the
last value and deletes them. Rates are medians of the repeats, in keys per second;
``overall`` counts writes and reads (``2 * keys / (write + read seconds)``). Every run
works under its own key prefix (``cfbench:<random>:``).

``routing`` is what the client spends routing alone: ``shards_of`` of ``keys`` keys
(key encoding, BLAKE2b and the rendezvous scores), in keys per second.

Run ``python -m context_framework.bench.sharding [URL ...] [--keys N] [--batch B] [--repeat R]``;
without URLs it starts three throwaway Redis servers
(:func:`context_framework.testing.servers.redis_server`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

__all__ = ["main", "run_sharding_bench"]

Opener = Callable[[str], Any]


def _tag() -> str:
    return f"cfbench:{uuid.uuid4().hex[:12]}:"


def _single(urls: list[str]) -> Opener:
    from ..redis_store import RedisContextStore

    return lambda prefix: RedisContextStore.from_url(urls[0], prefix=prefix)


def _sharded(urls: list[str], parallel: bool) -> Opener:
    from ..wrappers.sharded import ShardedStore

    return lambda prefix: ShardedStore.from_urls(urls, parallel=parallel, prefix=prefix)


def _one_run(open_store: Opener, keys: int, batch: int) -> tuple[float, float]:
    """``(write_seconds, read_seconds)`` of one batched write-then-read pass on a fresh prefix."""
    store = open_store(_tag())
    try:
        items = [(("row", i), {"meta": f"value_{i}"}) for i in range(keys)]
        wanted = [("row", i) for i in range(keys)]
        start = time.perf_counter()
        for i in range(0, keys, batch):
            store.set_many(items[i : i + batch])
        mid = time.perf_counter()
        last: Any = None
        for i in range(0, keys, batch):
            last = store.get_many(wanted[i : i + batch])[-1]
        end = time.perf_counter()
        if keys and last != {"meta": f"value_{keys - 1}"}:
            raise AssertionError(f"{store!r} read back the wrong value: {last!r}")
        store.delete_many(wanted)
    finally:
        store.close()
    return mid - start, end - mid


def _routing_rate(shards: int, keys: int) -> float:
    from ..in_memory_context_store import InMemoryContextStore
    from ..wrappers.sharded import ShardedStore

    store = ShardedStore([InMemoryContextStore() for _ in range(shards)])
    try:
        start = time.perf_counter()
        store.shards_of(("row", i) for i in range(keys))
        return keys / (time.perf_counter() - start)
    finally:
        store.close()


def run_sharding_bench(
    urls: list[str], *, keys: int = 100_000, batch: int = 1000, repeat: int = 3
) -> dict[str, Any]:
    """Medians of ``repeat`` interleaved runs (see the module docstring); keys per second."""
    if len(urls) < 2:
        raise ValueError(f"run_sharding_bench needs two or more Redis URLs, got {len(urls)}")
    if keys < 1 or batch < 1 or repeat < 1:
        raise ValueError("keys, batch and repeat must be positive")
    cases = {
        "single": _single(urls),
        "sharded": _sharded(urls, parallel=True),
        "sharded_serial": _sharded(urls, parallel=False),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, opener in cases.items():
            times[name].append(_one_run(opener, keys, batch))
    report: dict[str, Any] = {
        "servers": [url.partition("?")[0].rpartition("@")[2] for url in urls],
        "keys": keys,
        "batch": batch,
        "repeat": repeat,
        "cpus": os.cpu_count(),
    }
    for name, runs in times.items():
        write = statistics.median(t[0] for t in runs)
        read = statistics.median(t[1] for t in runs)
        total = statistics.median(t[0] + t[1] for t in runs)
        report[name] = {"write": keys / write, "read": keys / read, "overall": 2 * keys / total}
    for name in ("sharded", "sharded_serial"):
        report[f"{name}/single"] = {
            k: report[name][k] / report["single"][k] for k in ("write", "read", "overall")
        }
    report["routing"] = _routing_rate(len(urls), keys)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a small table."""
    lines = [
        f"{len(report['servers'])} Redis servers ({', '.join(report['servers'])}), {report['cpus']} CPUs; "
        f"{report['keys']:,} keys in batches of {report['batch']:,}, medians of {report['repeat']} runs",
        f"{'':16}{'write/s':>12}{'read/s':>12}{'overall/s':>12}",
    ]
    for name in ("single", "sharded", "sharded_serial"):
        r = report[name]
        lines.append(f"{name:16}{r['write']:>12,.0f}{r['read']:>12,.0f}{r['overall']:>12,.0f}")
    for name in ("sharded/single", "sharded_serial/single"):
        r = report[name]
        lines.append(f"{name:22}{r['write']:>6.2f}x{r['read']:>11.2f}x{r['overall']:>11.2f}x")
    lines.append(f"routing alone (shards_of): {report['routing']:,.0f} keys/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the sharding benchmark (starting three throwaway Redis servers if no URL is given)."""
    parser = argparse.ArgumentParser(prog="python -m context_framework.bench.sharding", description=__doc__)
    parser.add_argument("urls", nargs="*", help="Redis URLs, one per shard (default: 3 throwaway servers)")
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        urls = list(args.urls)
        if not urls:
            from ..testing.servers import redis_server

            urls = [stack.enter_context(redis_server(use_env=False)) for _ in range(3)]
        report = run_sharding_bench(urls, keys=args.keys, batch=args.batch, repeat=args.repeat)
    print(format_report(report))


if __name__ == "__main__":
    main()
