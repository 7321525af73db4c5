"""Raw redis-py baselines for :class:`~context_framework.redis_store.RedisContextStore`.

The spec's work written by hand with redis-py (and hiredis when installed)
against the same server, in the same run, with the key checks of
:mod:`.baselines`, ``repr(key)`` keys and compact JSON values:

* :func:`raw_per_call`: the spec's loop through :class:`RawRedis`: one
  ``SET`` per add, one ``GET`` per get.
* :func:`raw_batch`: ``MSET`` then ``MGET`` (+ ``json.loads``) in batches of
  1,000 (on a cluster: redis-py's ``mset_nonatomic``/``mget_nonatomic``,
  which split each batch by hash slot).
* :func:`raw_buffered`: the spec's loop through a
  :class:`~.baselines.HandBuffer` over :class:`RawRedis` (one ``MSET`` every
  1,000 writes), final flush timed.
* :func:`ours_per_call` / :func:`ours_batch`: the same work through
  ``PandasContextAdapter`` on the store (used by :func:`measure`).

Each run uses its own key prefix (``cfbench:<random>:``, also in front of the
raw keys), reads back what it wrote and deletes its keys afterwards. The URL
is any store URL (``redis://host:port/db``, ``redis+cluster://host:port``...);
the raw client is built from the same configuration.

Run ``python -m context_framework.bench.redis_baseline URL [n] [batch_n] [repeat]``
(defaults: 10,000, 100,000 and 3 interleaved repeats; medians are reported).
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from typing import Any

from .baselines import HandBuffer, KeyCheck, RawClient, check_read_back, dumps, hand_buffer_note, loads
from .modes import batch_loop, spec_loop

__all__ = [
    "NOTES",
    "RawRedis",
    "main",
    "ours_batch",
    "ours_per_call",
    "raw_batch",
    "raw_buffered",
    "raw_per_call",
]

Timing = tuple[float, float]
_BATCH = 1000

#: What ``ctx bench``'s footnote says of each row: per-call (and batch), buffered.
NOTES = {
    "raw": (
        "redis-py (with hiredis when installed) on the same server, one connection kept "
        "(single_connection_client; a cluster: RedisCluster): one SET per add, one GET per get. "
        "Batch: MSET then MGET of 1,000 keys at a time (cluster: mset_nonatomic/mget_nonatomic)."
    ),
    "buffered": hand_buffer_note("raw redis-py", "one MSET (cluster: mset_nonatomic, one per hash slot)"),
}


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
        return redis.Redis(
            unix_socket_path=config["unix_socket_path"], single_connection_client=True, **common
        )
    return redis.Redis(
        host=config["host"],
        port=config["port"],
        db=config.get("db", 0),
        ssl=config.get("ssl", False),
        single_connection_client=True,  # one connection kept, no pool checkout per command
        **common,
    )


def _delete(client: Any, keys: list[str]) -> None:
    for i in range(0, len(keys), _BATCH):
        client.delete(*keys[i : i + _BATCH])


def _is_cluster(client: Any) -> bool:
    return type(client).__name__ == "RedisCluster"


class RawRedis(RawClient):
    """The spec's API over one redis-py client, keys under ``tag``."""

    def __init__(self, df: Any, client: Any, tag: str) -> None:
        super().__init__(df)
        self._tag = tag
        self._set = client.set
        self._get = client.get
        self._mset = client.mset_nonatomic if _is_cluster(client) else client.mset

    def add_context(self, key: Any, metadata: dict[str, Any]) -> None:
        self._check(key)
        self._set(self._tag + repr(key), dumps(metadata))

    def get_context(self, key: Any) -> dict[str, Any] | None:
        self._check(key)
        raw = self._get(self._tag + repr(key))
        return None if raw is None else loads(raw)  # type: ignore[no-any-return]

    def write_many(self, pairs: list[tuple[str, str]]) -> None:
        """One ``MSET`` (on a cluster, one per hash slot)."""
        tag = self._tag
        self._mset({tag + k: v for k, v in pairs})


def _run_raw(url: str, df: Any, n: int, what: str, buffered: bool) -> Timing:
    client = _raw_client(url)
    tag = _tag()
    try:
        raw = RawRedis(df, client, tag)
        timing = spec_loop(HandBuffer(df, raw) if buffered else raw, n, flush=buffered)
        check_read_back(raw, n, what)
        _delete(client, [tag + repr(("row", i)) for i in range(n)])
    finally:
        client.close()
    return timing


def raw_per_call(url: str, df: Any, n: int) -> Timing:
    """The spec's loop on :class:`RawRedis`; returns ``(set_seconds, get_seconds)``."""
    return _run_raw(url, df, n, "raw redis-py", buffered=False)


def raw_buffered(url: str, df: Any, n: int) -> Timing:
    """The spec's loop through a :class:`~.baselines.HandBuffer` over :class:`RawRedis`."""
    return _run_raw(url, df, n, "hand-written buffer (redis-py)", buffered=True)


def _ours(url: str, df: Any, n: int, batch: bool) -> Timing:
    from ..adapters.pandas_adapter import PandasContextAdapter

    store = _open_store(url, _tag())
    try:
        adapter = PandasContextAdapter(df, store)
        timing = batch_loop(adapter, n) if batch else spec_loop(adapter, n)
        check_read_back(adapter, n, "RedisContextStore")
        store.clear()
    finally:
        store.close()
    return timing


def ours_per_call(url: str, df: Any, n: int) -> Timing:
    """The spec's per-call loop through ``PandasContextAdapter`` on the store."""
    return _ours(url, df, n, batch=False)


def raw_batch(url: str, df: Any, n: int) -> Timing:
    """MSET then MGET (+ json.loads) in batches of 1,000; returns ``(write_s, read_s)``."""
    client = _raw_client(url)
    check = KeyCheck(df).check
    cluster = _is_cluster(client)
    mset = client.mset_nonatomic if cluster else client.mset
    mget = client.mget_nonatomic if cluster else client.mget
    tag = _tag()
    try:
        start = time.perf_counter()
        items = []
        for i in range(n):
            key = ("row", i)
            check(key)
            items.append((tag + repr(key), dumps({"meta": f"value_{i}"})))
        for i in range(0, n, _BATCH):
            mset(dict(items[i : i + _BATCH]))
        mid = time.perf_counter()
        keys = []
        for i in range(n):
            key = ("row", i)
            check(key)
            keys.append(tag + repr(key))
        values: list[Any] = []
        for i in range(0, n, _BATCH):
            values.extend(None if v is None else loads(v) for v in mget(keys[i : i + _BATCH]))
        end = time.perf_counter()
        if values != [{"meta": f"value_{i}"} for i in range(n)]:
            raise AssertionError("raw redis-py batch baseline read back the wrong value")
        _delete(client, keys)
    finally:
        client.close()
    return mid - start, end - mid


def ours_batch(url: str, df: Any, n: int) -> Timing:
    """``add_context_many`` then ``get_context_many`` of ``n`` entries; returns ``(write_s, read_s)``."""
    return _ours(url, df, n, batch=True)


def measure(url: str, n: int = 10_000, batch_n: int = 100_000, repeat: int = 3) -> dict[str, Any]:
    """Medians of interleaved runs: rates per second and ours/raw ratios."""
    import pandas as pd

    df = pd.DataFrame({"A": range(max(n, batch_n))})
    report: dict[str, Any] = {"url": url.split("@")[-1], "n": n, "batch_n": batch_n, "repeat": repeat}
    for label, count, raw, ours in (
        ("per_call", n, raw_per_call, ours_per_call),
        ("batch", batch_n, raw_batch, ours_batch),
    ):
        times: dict[str, list[tuple[float, float]]] = {"raw": [], "ours": []}
        for _ in range(repeat):
            for name, fn in (("raw", raw), ("ours", ours)):
                times[name].append(fn(url, df, count))
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
