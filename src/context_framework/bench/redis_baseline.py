"""Raw redis-py baselines for :class:`~context_framework.redis_store.RedisContextStore`.

The same work written "the obvious way" with redis-py (and hiredis when
installed) against the same server, in the same run:

* :func:`raw_per_call`: ``n`` × ``r.set(repr(key), json.dumps(value))``, then
  ``n`` × ``json.loads(r.get(repr(key)))``.
* :func:`ours_per_call`: the spec's loop (``add_context`` then ``get_context``
  for ``("row", i)``) through a :class:`PandasContextAdapter` on the store.
* :func:`raw_batch`: ``MSET`` then ``MGET`` (+ ``json.loads``) in batches of
  1,000 (on a cluster: redis-py's ``mset_nonatomic``/``mget_nonatomic``,
  which split each batch by hash slot).
* :func:`ours_batch`: ``set_many`` then ``get_many`` of ``n`` entries.

Each run uses its own key prefix (``cfbench:<random>:``, also in front of the
raw keys) and deletes its keys afterwards. The URL is any store URL
(``redis://host:port/db``, ``redis+cluster://host:port``...); the raw client
is built from the same configuration.

Run ``python -m context_framework.bench.redis_baseline URL [n] [batch_n] [repeat]``
(defaults: 10,000, 100,000 and 3 interleaved repeats; medians are reported).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from typing import Any

from .targets import timed_batch

__all__ = ["main", "ours_batch", "ours_per_call", "raw_batch", "raw_per_call"]

_BATCH = 1000


def _tag() -> str:
    return f"cfbench:{uuid.uuid4().hex[:12]}:"


def _open_store(url: str, prefix: str) -> Any:
    from ..redis_store import RedisContextStore

    return RedisContextStore.from_url(url, prefix=prefix)


def _raw_client(url: str) -> Any:
    """A plain redis-py client (``Redis`` or ``RedisCluster``) for the server of ``url``."""
    import redis

    from ..redis_store import RedisContextStore

    config = RedisContextStore._parse_url(url.partition("?")[0])
    query = url.partition("?")[2]
    cluster = config.get("cluster", False) or "cluster=1" in query or "cluster=true" in query.lower()
    common: dict[str, Any] = {"username": config.get("username"), "password": config.get("password")}
    if cluster:
        from redis.cluster import RedisCluster

        return RedisCluster(host=config["host"], port=config["port"], ssl=config.get("ssl", False), **common)
    if "unix_socket_path" in config:
        return redis.Redis(unix_socket_path=config["unix_socket_path"], **common)
    return redis.Redis(
        host=config["host"],
        port=config["port"],
        db=config.get("db", 0),
        ssl=config.get("ssl", False),
        **common,
    )


def _delete(client: Any, keys: list[str]) -> None:
    for i in range(0, len(keys), _BATCH):
        client.delete(*keys[i : i + _BATCH])


def _is_cluster(client: Any) -> bool:
    return type(client).__name__ == "RedisCluster"


def raw_per_call(url: str, n: int) -> tuple[float, float]:
    """``n`` SETs then ``n`` GETs with plain redis-py; returns ``(set_seconds, get_seconds)``."""
    client = _raw_client(url)
    tag = _tag()
    try:
        start = time.perf_counter()
        for i in range(n):
            key = ("row", i)
            client.set(tag + repr(key), json.dumps({"meta": f"value_{i}"}))
        mid = time.perf_counter()
        value = None
        for i in range(n):
            value = json.loads(client.get(tag + repr(("row", i))))
        end = time.perf_counter()
        if n and value != {"meta": f"value_{n - 1}"}:
            raise AssertionError("raw redis-py baseline read back the wrong value")
        _delete(client, [tag + repr(("row", i)) for i in range(n)])
    finally:
        client.close()
    return mid - start, end - mid


def ours_per_call(url: str, n: int) -> tuple[float, float]:
    """The spec's per-call loop through ``PandasContextAdapter`` on the store."""
    import pandas as pd

    from ..adapters.pandas_adapter import PandasContextAdapter
    from .spec_benchmark import spec_loop

    store = _open_store(url, _tag())
    try:
        adapter = PandasContextAdapter(pd.DataFrame({"x": range(n)}), store)
        add_s, get_s = spec_loop(adapter, n)
        if n and adapter.get_context(("row", n - 1)) != {"meta": f"value_{n - 1}"}:
            raise AssertionError("RedisContextStore read back the wrong value")
        store.clear()
    finally:
        store.close()
    return add_s, get_s


def raw_batch(url: str, n: int) -> tuple[float, float]:
    """MSET then MGET (+ json.loads) in batches of 1,000; returns ``(write_s, read_s)``."""
    client = _raw_client(url)
    cluster = _is_cluster(client)
    mset = client.mset_nonatomic if cluster else client.mset
    mget = client.mget_nonatomic if cluster else client.mget
    tag = _tag()
    try:
        start = time.perf_counter()
        items = [(tag + repr(("row", i)), json.dumps({"meta": f"value_{i}"})) for i in range(n)]
        for i in range(0, n, _BATCH):
            mset(dict(items[i : i + _BATCH]))
        mid = time.perf_counter()
        keys = [tag + repr(("row", i)) for i in range(n)]
        values: list[Any] = []
        for i in range(0, n, _BATCH):
            values.extend(None if v is None else json.loads(v) for v in mget(keys[i : i + _BATCH]))
        end = time.perf_counter()
        if n and values[-1] != {"meta": f"value_{n - 1}"}:
            raise AssertionError("raw redis-py batch baseline read back the wrong value")
        _delete(client, keys)
    finally:
        client.close()
    return mid - start, end - mid


def ours_batch(url: str, n: int) -> tuple[float, float]:
    """``set_many`` then ``get_many`` of ``n`` entries; returns ``(write_s, read_s)``."""
    store = _open_store(url, _tag())
    try:
        timing = timed_batch(store, n)
        store.clear()
    finally:
        store.close()
    return timing


def measure(url: str, n: int = 10_000, batch_n: int = 100_000, repeat: int = 3) -> dict[str, Any]:
    """Medians of interleaved runs: rates per second and ours/raw ratios."""
    report: dict[str, Any] = {"url": url.split("@")[-1], "n": n, "batch_n": batch_n, "repeat": repeat}
    for label, count, raw, ours in (
        ("per_call", n, raw_per_call, ours_per_call),
        ("batch", batch_n, raw_batch, ours_batch),
    ):
        times: dict[str, list[tuple[float, float]]] = {"raw": [], "ours": []}
        for _ in range(repeat):
            for name, fn in (("raw", raw), ("ours", ours)):
                times[name].append(fn(url, count))
        rates: dict[str, dict[str, float]] = {}
        for name, runs in times.items():
            write = statistics.median(t[0] for t in runs)
            read = statistics.median(t[1] for t in runs)
            total = statistics.median(t[0] + t[1] for t in runs)
            rates[name] = {"write": count / write, "read": count / read, "overall": 2 * count / total}
        rates["ratio"] = {k: rates["ours"][k] / rates["raw"][k] for k in ("write", "read", "overall")}
        report[label] = rates
    return report


def main(argv: list[str] | None = None) -> None:
    """Print per-call (calls/s) and batch (entries/s) rates, ours vs raw redis-py."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return
    url = args[0]
    n = int(args[1]) if len(args) > 1 else 10_000
    batch_n = int(args[2]) if len(args) > 2 else 100_000
    repeat = int(args[3]) if len(args) > 3 else 3
    report = measure(url, n, batch_n, repeat)
    print(f"server {report['url']}: medians of {repeat} interleaved runs")
    for label, count, unit in (("per_call", n, "calls"), ("batch", batch_n, "entries")):
        rates = report[label]
        for name in ("raw", "ours"):
            r = rates[name]
            print(
                f"{label:8} {name:4} ({count:,}): write {r['write']:>10,.0f}/s  read {r['read']:>10,.0f}/s"
                f"  overall {r['overall']:>10,.0f} {unit}/s"
            )
        ratio = rates["ratio"]
        print(
            f"{label:8} ours/raw: write {ratio['write']:.2f}x  read {ratio['read']:.2f}x"
            f"  overall {ratio['overall']:.2f}x"
        )


if __name__ == "__main__":
    main()
