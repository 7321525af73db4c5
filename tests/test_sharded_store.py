"""ShardedStore: conformance over 3 in-memory stores, 3 SQLite files and 3 real Redis servers,
routing (distribution, stability, minimal movement), batches split per shard, shard errors, URLs.

The Redis tests start three throwaway ``redis-server`` processes for this module (never the
servers of the environment, whose keys they could not tell apart); every test works under its
own key prefix and sweeps it from the three servers afterwards.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from context_framework import InMemoryContextStore, open_store
from context_framework.base_store import BaseContextStore
from context_framework.exceptions import (
    ContextConfigurationError,
    ContextSerializationError,
    ContextStoreClosedError,
    ContextStoreError,
    ContextValueTooLargeError,
    UnsupportedKeyError,
)
from context_framework.keys import encode_key, encode_keys
from context_framework.sqlite_store import SQLiteContextStore
from context_framework.testing import StoreTests, make_state_machine_test, run_state_machine, servers
from context_framework.wrappers import sharded as sharded_module
from context_framework.wrappers.sharded import Rendezvous, ShardedStore, key_hash, shard_seed

_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# --------------------------------------------------------------------------- helpers


def _memory_shards(n: int = 3, **options: Any) -> ShardedStore:
    return ShardedStore([InMemoryContextStore(**options) for _ in range(n)])


def _open_each(make: Any, count: int) -> list[Any]:
    """``[make(i) for i in range(count)]``, closing the ones made when one fails."""
    stores: list[Any] = []
    try:
        for i in range(count):
            stores.append(make(i))
    except BaseException:
        for store in stores:
            store.close()
        raise
    return stores


def _raw_redis(url: str) -> Any:
    import redis

    from context_framework.redis_store import RedisContextStore

    config = RedisContextStore._parse_url(url.partition("?")[0])
    return redis.Redis(host=config["host"], port=config["port"], db=config.get("db", 0))


def _sweep(urls: list[str], prefix: str) -> None:
    for url in urls:
        servers.sweep_redis_prefix(url, prefix)


def _host(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0]


@pytest.fixture(scope="module")
def redis_urls() -> Iterator[list[str]]:
    """Three throwaway Redis servers for this module."""
    pytest.importorskip("redis")
    with ExitStack() as stack:
        try:
            urls = [stack.enter_context(servers.redis_server(use_env=False)) for _ in range(3)]
        except servers.ServerUnavailable as exc:
            if _IN_CI:
                pytest.fail(f"CI=true but no Redis server could be had: {exc}", pytrace=False)
            pytest.skip(str(exc))
        yield urls


@pytest.fixture
def key_prefix(redis_urls: list[str]) -> Iterator[str]:
    """A key prefix of this test, swept from the three servers afterwards."""
    tag = f"cftest_{uuid.uuid4().hex[:12]}:"
    try:
        yield tag
    finally:
        _sweep(redis_urls, tag)


def _redis_sharded(urls: list[str], prefix: str, namespace: str = "", **options: Any) -> ShardedStore:
    from context_framework.redis_store import RedisContextStore

    stores = _open_each(
        lambda i: RedisContextStore.from_url(urls[i], prefix=prefix, namespace=namespace, **options),
        len(urls),
    )
    return ShardedStore(stores, names=[_host(u) for u in urls])


# --------------------------------------------------------------------------- conformance


class TestShardedMemoryStore(StoreTests):
    shares_data_when_pickled = False  # in-memory shards pickle as snapshots

    def make_store(self, **options: Any) -> BaseContextStore:
        return _memory_shards(3, **options)


class TestShardedSQLiteStore(StoreTests):
    shares_data_when_pickled = True

    @pytest.fixture(autouse=True)
    def _workdir(self, tmp_path: Path) -> None:
        self._dir = tmp_path

    def make_store(self, **options: Any) -> BaseContextStore:
        tag = uuid.uuid4().hex[:8]
        stores = _open_each(lambda i: SQLiteContextStore(self._dir / f"{tag}-{i}.db", **options), 3)
        return ShardedStore(stores)

    def reopen_store(self, store: BaseContextStore) -> BaseContextStore:
        assert isinstance(store, ShardedStore)
        return ShardedStore(
            [
                SQLiteContextStore(s.path, namespace=s.namespace, max_value_size=s.max_value_size)
                for s in store.shards
            ],
            names=store.names,
        )


class TestShardedRedisStore(StoreTests):
    shares_data_when_pickled = True

    @pytest.fixture(autouse=True)
    def _servers(self, redis_urls: list[str], key_prefix: str) -> None:
        self._urls = redis_urls
        self._prefix = key_prefix

    def make_store(self, **options: Any) -> BaseContextStore:
        return _redis_sharded(self._urls, self._prefix, f"s{uuid.uuid4().hex[:8]}", **options)

    def reopen_store(self, store: BaseContextStore) -> BaseContextStore:
        from context_framework.redis_store import RedisContextStore

        assert isinstance(store, ShardedStore)
        shards = [RedisContextStore(**{**s._config(), "namespace": s.namespace}) for s in store.shards]
        return ShardedStore(shards, names=store.names)


TestShardedMemoryStateMachine = make_state_machine_test(lambda: _memory_shards(3))


def test_redis_state_machine(redis_urls: list[str], key_prefix: str) -> None:
    run_state_machine(
        lambda: _redis_sharded(redis_urls, key_prefix, uuid.uuid4().hex[:8]),
        max_examples=20,
        stateful_step_count=20,
    )


# --------------------------------------------------------------------------- routing

_NAMES = ["shard-0", "shard-1", "shard-2"]


@pytest.fixture(scope="module")
def million_keys() -> list[bytes]:
    return encode_keys(("row", i) for i in range(1_000_000))


def test_a_million_keys_spread_evenly_over_three_shards(million_keys: list[bytes]) -> None:
    counts = Counter(Rendezvous(_NAMES).owners(million_keys))
    even = len(million_keys) / 3
    assert sorted(counts) == [0, 1, 2]
    for count in counts.values():
        assert abs(count - even) <= 0.10 * even, counts


def test_adding_a_shard_moves_about_a_quarter_of_the_keys_and_only_to_it(million_keys: list[bytes]) -> None:
    before = Rendezvous(_NAMES).owners(million_keys)
    after = Rendezvous([*_NAMES, "shard-3"]).owners(million_keys)
    moved = [(b, a) for b, a in zip(before, after) if b != a]
    assert all(a == 3 for _, a in moved)
    assert 0.20 <= len(moved) / len(million_keys) <= 0.30


def test_removing_a_shard_moves_only_its_keys(million_keys: list[bytes]) -> None:
    sample = million_keys[::10]
    before = Rendezvous(_NAMES).owners(sample)
    after = Rendezvous(["shard-0", "shard-2"]).owners(sample)  # indices 0 and 1 now
    survivors = {0: 0, 2: 1}
    for b, a in zip(before, after):
        if b in survivors:
            assert a == survivors[b]
    assert Counter(after)[0] > 0.4 * len(sample)


def test_routing_depends_on_names_not_order() -> None:
    keys = encode_keys([("row", i) for i in range(5000)] + [("col", str(i)) for i in range(500)])
    forward = Rendezvous(["a", "b", "c", "d"])
    backward = Rendezvous(["d", "c", "b", "a"])
    assert [forward.names[o] for o in forward.owners(keys)] == [
        backward.names[o] for o in backward.owners(keys)
    ]


def test_routing_is_pinned() -> None:
    """Golden values: changing the hash would move stored keys, so it must never change."""
    assert key_hash(encode_key(("row", 1))) == 4893119546970905232
    assert shard_seed("shard-0") == 8244401909475920758
    owners = [Rendezvous(["a", "b", "c"]).owner(encode_key(("row", i))) for i in range(24)]
    assert owners == [0, 0, 0, 0, 1, 0, 2, 1, 2, 1, 1, 1, 0, 2, 2, 2, 1, 1, 1, 2, 2, 2, 0, 0]


def test_numpy_and_pure_python_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numpy")
    keys = encode_keys([("row", i) for i in range(3000)] + [("t", "x" * i) for i in range(300)])
    router = Rendezvous(["x", "y", "z", "w", "v"])
    fast = router.owners(keys)
    monkeypatch.setattr(sharded_module, "_numpy", False)
    assert router.owners(keys) == fast == [router.owner(k) for k in keys]


_SUBPROCESS = """
import sys
from context_framework.keys import encode_keys
from context_framework.wrappers.sharded import Rendezvous
keys = [("row", i) for i in range(2000)] + [("col", str(i), 1.5, None, b"x") for i in range(200)]
print(",".join(map(str, Rendezvous(["h1:6379", "h2:6379", "h3:6379"]).owners(encode_keys(keys)))))
"""


def test_routing_is_the_same_in_another_process() -> None:
    keys = [("row", i) for i in range(2000)] + [("col", str(i), 1.5, None, b"x") for i in range(200)]
    here = Rendezvous(["h1:6379", "h2:6379", "h3:6379"]).owners(encode_keys(keys))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ",".join(map(str, here))


def test_shards_of_a_million_keys_over_four_shards() -> None:
    store = _memory_shards(4)
    owners = store.shards_of(("row", i) for i in range(1_000_000))
    assert len(owners) == 1_000_000
    assert set(owners) == {0, 1, 2, 3}
    assert owners[:100] == [store.shard_of(("row", i)) for i in range(100)]
    store.close()


def test_single_shard_takes_everything() -> None:
    store = ShardedStore([InMemoryContextStore()])
    store.set_many([(("row", i), {"i": i}) for i in range(10)])
    assert store.shards_of([("row", i) for i in range(300)]) == [0] * 300
    assert store.shards[0].count() == 10
    store.close()


# --------------------------------------------------------------------------- batches and shards


def test_keys_land_on_their_shard_and_namespaces_keep_routing() -> None:
    store = _memory_shards(3)
    keys = [("row", i) for i in range(300)] + [("col", "A"), "whole", ("row", 1, "column", "B")]
    store.set_many([(k, {"k": repr(k)}) for k in keys])
    view = store.with_namespace("ds")
    view.set_many([(k, {"ns": 1}) for k in keys])
    for key in keys:
        owner = store.shard_of(key)
        assert view.shard_of(key) == owner
        for i, shard in enumerate(store.shards):
            assert (shard.get(key) is not None) == (i == owner)
            assert (shard.with_namespace("ds").get(key) is not None) == (i == owner)
    store.close()


def test_get_many_keeps_the_callers_order() -> None:
    store = _memory_shards(3)
    store.set_many({("row", i): {"i": i} for i in range(0, 200, 2)})
    keys = [("row", i) for i in (199, 4, 3, 4, 0, 150, 151)]
    assert store.get_many(keys) == [None, {"i": 4}, None, {"i": 4}, {"i": 0}, {"i": 150}, None]
    assert store.get_many(iter(keys[:2])) == [None, {"i": 4}]
    assert store.get_many([]) == []
    store.close()


def test_batches_reach_the_right_redis_server(redis_urls: list[str], key_prefix: str) -> None:
    from context_framework.redis_store import RedisContextStore

    store = _redis_sharded(redis_urls, key_prefix, "batch")
    raw = [RedisContextStore.from_url(u, prefix=key_prefix, namespace="batch") for u in redis_urls]
    try:
        keys = [("row", i) for i in range(600)]
        store.set_many([(k, {"i": k[1]}) for k in keys])
        owners = store.shards_of(keys)
        assert [r.count() for r in raw] == [owners.count(i) for i in range(3)]
        for key, owner in zip(keys, owners):
            assert raw[owner].get(key) == {"i": key[1]}
        assert store.get_many(keys[::-1]) == [{"i": k[1]} for k in keys[::-1]]
        assert store.delete_many([*keys[:300], ("row", 10000)]) == 300
        assert [r.count() for r in raw] == [owners[300:].count(i) for i in range(3)]
        assert store.count() == 300
    finally:
        store.close()
        for r in raw:
            r.close()


def test_parallel_and_serial_batches_agree(redis_urls: list[str], key_prefix: str) -> None:
    from context_framework.redis_store import RedisContextStore

    def run(store: ShardedStore) -> tuple[Any, ...]:
        items = [(("row", i), {"i": i, "s": str(i)}) for i in range(500)]
        store.set_many(items)
        got = store.get_many([k for k, _ in items] + [("missing", 1)])
        deleted = store.delete_many([("row", i) for i in range(0, 500, 3)])
        per_shard = tuple(sorted(map(repr, s.list_keys())) for s in store.shards)
        return got, deleted, store.count(), per_shard

    results = []
    for parallel in (True, False):
        shards = [
            RedisContextStore.from_url(u, prefix=key_prefix, namespace=f"p{parallel}") for u in redis_urls
        ]
        store = ShardedStore(shards, names=[_host(u) for u in redis_urls], parallel=parallel)
        results.append(run(store))
        store.close()
    assert results[0] == results[1]


def test_a_bad_value_or_key_stores_nothing_on_any_shard(redis_urls: list[str], key_prefix: str) -> None:
    store = _redis_sharded(redis_urls, key_prefix, "bad")
    good = [(("row", i), {"i": i}) for i in range(100)]
    with pytest.raises(ContextSerializationError):
        store.set_many([*good, (("row", 100), {"bad": {1, 2}})])
    with pytest.raises(UnsupportedKeyError):
        store.set_many([*good, (["row", 100], {"ok": 1})])
    with pytest.raises(UnsupportedKeyError):
        store.get_many([("row", 1), ["row", 2]])
    with pytest.raises(UnsupportedKeyError):
        store.delete_many([("row", 1), {"row": 2}])
    assert [s.count() for s in store.shards] == [0, 0, 0]
    store.close()


def test_a_value_over_the_limit_stores_nothing() -> None:
    store = _memory_shards(3, max_value_size=50)
    with pytest.raises(ContextValueTooLargeError):
        store.set_many([*((("row", i), {"i": i}) for i in range(50)), ("big", {"s": "x" * 100})])
    assert store.count() == 0
    store.close()


def test_a_stopped_server_gives_a_store_error_naming_the_shard(
    redis_urls: list[str], key_prefix: str
) -> None:
    pytest.importorskip("redis")
    import redis

    from context_framework.redis_store import RedisContextStore

    with servers.restartable_redis() as dead:
        urls = [*redis_urls[:2], dead.url]
        shards = [
            RedisContextStore.from_url(u, prefix=key_prefix, retries=0, socket_timeout=5, namespace="down")
            for u in urls
        ]
        store = ShardedStore(shards, names=["one", "two", "dead"])
        keys = [("row", i) for i in range(90)]
        owners = store.shards_of(keys)
        dead.stop()
        try:
            for parallel in (True, False):
                store.parallel = parallel
                with pytest.raises(ContextStoreError) as info:
                    store.set_many([(k, {"i": k[1]}) for k in keys])
                message = str(info.value)
                assert "set_many failed on shard 'dead'" in message
                assert "not atomic across shards" in message
                assert isinstance(info.value.__cause__, redis.ConnectionError)
                with pytest.raises(ContextStoreError, match="shard 'dead'"):
                    store.get_many(keys)
                with pytest.raises(ContextStoreError, match="count failed on shard 'dead'"):
                    store.count()
            dead_key = keys[owners.index(2)]
            live_key = keys[owners.index(0)]
            with pytest.raises(ContextStoreError, match="get failed on shard 'dead'") as info:
                store.get(dead_key)
            assert isinstance(info.value.__cause__, redis.ConnectionError)
            assert store.get(live_key) == {"i": live_key[1]}  # the live shards took their part
        finally:
            store.close()


def test_passwords_never_show(redis_urls: list[str]) -> None:
    with ExitStack() as stack:
        urls = [stack.enter_context(servers.redis_server(use_env=False)) for _ in range(2)]
        for url in urls:
            client = _raw_redis(url)
            client.config_set("requirepass", "right-pw")
            client.close()
        hosts = ",".join(_host(u) for u in urls)
        with pytest.raises(ContextStoreError) as info:
            open_store(f"sharded+redis://:s3cr3t-pw@{hosts}/0?retries=0")
        assert "s3cr3t-pw" not in str(info.value)
        assert f"opening shard {_host(urls[0])!r} failed" in str(info.value)
        store = open_store(f"sharded+redis://:right-pw@{hosts}/0?prefix=pw:")
        try:
            store.set_many([(("row", i), {"i": i}) for i in range(20)])
            assert "right-pw" not in repr(store)
            clone = pickle.loads(pickle.dumps(store))  # shards pickle their password
            assert clone.count() == 20
            clone.close()
        finally:
            store.close()
        with pytest.raises(ContextConfigurationError) as config_info:
            open_store("sharded+redis://:s3cr3t-pw@onlyone:6379/0")
        assert "s3cr3t-pw" not in str(config_info.value)


# --------------------------------------------------------------------------- URLs


def test_open_store_with_a_host_list(redis_urls: list[str], key_prefix: str) -> None:
    hosts = [_host(u) for u in redis_urls]
    store = open_store(f"sharded+redis://{','.join(hosts)}/0?prefix={key_prefix}&namespace=url")
    try:
        assert isinstance(store, ShardedStore)
        assert store.names == tuple(hosts)
        assert store.namespace == "url"
        store.set_many([(("row", i), {"i": i}) for i in range(100)])
        assert sum(s.count() for s in store.shards) == 100
        clone = pickle.loads(pickle.dumps(store))
        assert clone.names == store.names and clone.get(("row", 7)) == {"i": 7}
        clone.close()
        again = open_store(f"sharded+redis://{','.join(reversed(hosts))}/0?prefix={key_prefix}&namespace=url")
        assert again.get_many([("row", i) for i in range(100)]) == [{"i": i} for i in range(100)]
        again.close()
        direct = ShardedStore.from_url(
            f"sharded+redis://{','.join(hosts)}/0?prefix={key_prefix}&namespace=url"
        )
        assert direct.get(("row", 9)) == {"i": 9}
        direct.close()
        named = open_store(f"sharded+redis://{','.join(hosts)}/0?prefix={key_prefix}&names=a,b,c&parallel=0")
        assert named.names == ("a", "b", "c") and named.parallel is False
        named.close()
        wrapped = open_store(
            f"sharded+redis://{','.join(hosts)}/0?prefix={key_prefix}&namespace=url&buffer=10"
        )
        assert type(wrapped).__name__ == "BufferedStore"
        assert wrapped.get(("row", 3)) == {"i": 3}
        wrapped.close()
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sharded+redis://h1:6379/0", "two or more hosts"),
        ("sharded+redis://h1:6379,,h2:6379/0", "empty host at position 2"),
        ("sharded+redis://h1:6379,h2:6379,/0", "empty host at position 3"),
        ("sharded+redis:///0", "no host"),
        ("sharded+sqlite:///ctx.db", "from_urls"),
        ("sharded+memory://", "from_urls"),
        ("sharded+redis+cluster://h1:7000,h2:7001", "Redis Cluster"),
        ("sharded+redis://h1,h2/0?cluster=1", "Redis Cluster"),
        ("sharded+redis://h1:6379,h1:6379/0", "unique"),
        ("sharded+redis://h1,h2/0?names=a", "2 shards"),
        ("sharded+redis://h1,h2/0?parallel=maybe", "parallel"),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(ContextConfigurationError, match=message):
        open_store(url)


def test_from_urls_with_sqlite_files(tmp_path: Path) -> None:
    urls = [f"sqlite:///{tmp_path}/{name}.db" for name in ("a", "b", "c")]
    store = ShardedStore.from_urls(urls, parallel=False)
    assert store.names == tuple(urls)
    store.set_many([(("row", i), {"i": i}) for i in range(60)])
    store.close()
    again = ShardedStore.from_urls(urls[::-1])
    assert again.count() == 60 and again.get(("row", 5)) == {"i": 5}
    again.close()
    with pytest.raises(ContextConfigurationError, match="names="):
        ShardedStore.from_urls(["memory://", "memory://"])
    named = ShardedStore.from_urls(["memory://", "memory://"], names=["m1", "m2"])
    assert named.names == ("m1", "m2")
    named.close()
    with pytest.raises(ContextConfigurationError, match="list of store URLs"):
        ShardedStore.from_urls("memory://")


# --------------------------------------------------------------------------- construction and lifecycle


def test_constructor_refuses_bad_shards() -> None:
    a, b = InMemoryContextStore(), InMemoryContextStore()
    cases: list[tuple[Any, dict[str, Any], str]] = [
        ([], {}, "empty"),
        (a, {}, "one store"),
        ("memory://", {}, "list of stores"),
        ([a, a], {}, "twice"),
        ([a, object()], {}, "must be a context store"),
        ([a, b], {"names": ["x", "x"]}, "unique"),
        ([a, b], {"names": ["x", ""]}, "non-empty"),
        ([a, b], {"names": ["x", 1]}, "non-empty string"),
        ([a, b], {"names": ["x"]}, "1 shard names for 2"),
        ([a, b], {"names": "xy"}, "list of strings"),
        ([a, b.with_namespace("other")], {}, "same namespace"),
        ([a, InMemoryContextStore(max_value_size=10)], {}, "same max_value_size"),
    ]
    for stores, kwargs, message in cases:
        with pytest.raises(ContextConfigurationError, match=message):
            ShardedStore(stores, **kwargs)
    closed = InMemoryContextStore()
    closed.close()
    with pytest.raises(ContextStoreClosedError):
        ShardedStore([a, closed])


def test_repr_names_the_shards() -> None:
    store = ShardedStore([InMemoryContextStore(), InMemoryContextStore()], names=["left", "right"])
    assert repr(store) == (
        "ShardedStore({'left': InMemoryContextStore(memory), 'right': InMemoryContextStore(memory)})"
    )
    assert "namespace='a'" in repr(store.with_namespace("a"))


def test_close_inner_false_leaves_the_shards_open() -> None:
    shards = [InMemoryContextStore(), InMemoryContextStore()]
    store = ShardedStore(shards, close_inner=False)
    view = store.with_namespace("v")
    store.set("k", {"a": 1})
    store.close()
    assert store.closed and view.closed
    assert not any(s.closed for s in shards)
    assert sum(s.count() for s in shards) == 1


def test_pool_is_made_on_first_batch_and_shut_down_on_close() -> None:
    store = _memory_shards(3)
    store.set("k", {"a": 1})
    assert store._workers._pool is None
    store.set_many([(("row", i), {"i": i}) for i in range(100)])
    pool = store._workers._pool
    assert pool is not None
    store.with_namespace("v").get_many([("row", i) for i in range(100)])
    assert store._workers._pool is pool  # views share it
    store.close()
    assert store._workers._pool is None
    assert not [t for t in threading.enumerate() if t.name.startswith("context-framework-shard")]


def test_flush_reaches_the_shards_that_buffer() -> None:
    class Flushing(InMemoryContextStore):
        flushed = 0

        def flush(self) -> None:
            type(self).flushed += 1

    store = ShardedStore([Flushing(), InMemoryContextStore(), Flushing()])
    store.flush()
    assert Flushing.flushed == 2
    store.close()


def _child_batch(store: ShardedStore, queue: Any) -> None:
    queue.put(store.get_many([("row", i) for i in range(300)])[299])


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_a_forked_child_gets_its_own_pool() -> None:
    store = _memory_shards(3)
    store.set_many([(("row", i), {"i": i}) for i in range(300)])  # makes the pool
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_batch, args=(store, queue))
    child.start()
    try:
        assert queue.get(timeout=30) == {"i": 299}
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    store.close()


def test_a_shard_closed_behind_its_back_is_named() -> None:
    store = _memory_shards(3)
    store.shards[1].close()
    keys = [("row", i) for i in range(60)]
    with pytest.raises(ContextStoreClosedError, match="set_many failed on shard 'shard-1'"):
        store.set_many([(k, {"a": 1}) for k in keys])
    with pytest.raises(ContextStoreClosedError, match="get failed on shard 'shard-1'"):
        store.get(keys[store.shards_of(keys).index(1)])
    store.close()


def test_sharding_bench_runs(redis_urls: list[str]) -> None:
    from context_framework.bench.sharding import format_report, run_sharding_bench

    report = run_sharding_bench(redis_urls, keys=2000, batch=500, repeat=1)
    for name in ("single", "sharded", "sharded_serial", "sharded/single"):
        assert set(report[name]) == {"write", "read", "overall"}
        assert all(rate > 0 for rate in report[name].values())
    assert report["routing"] > 0 and len(report["servers"]) == 3
    assert "sharded/single" in format_report(report)
    with pytest.raises(ValueError, match="two or more"):
        run_sharding_bench(redis_urls[:1])
