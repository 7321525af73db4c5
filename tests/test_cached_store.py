"""CachedStore: conformance over real stores, the cache itself, and Redis invalidation tracking.

The cache's own rules (hits, misses, TTL, size bound, no aliasing, own
writes, errors of the store below), what a foreign write does without
tracking (SQLite: seen after ``ttl`` or ``invalidate()``), and with Redis
tracking: another *process* writing a key evicts it here, our own writes'
echoes keep their entries, a lost tracking connection empties the cache and
is re-established, ``close()`` stops the listener thread, and a forked child
subscribes anew. Redis tests work under their own key prefix, swept after.
"""

from __future__ import annotations

import json
import multiprocessing
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from context_framework import (
    ContextConfigurationError,
    ContextStoreError,
    InMemoryContextStore,
    SQLiteContextStore,
    open_store,
)
from context_framework.base_store import BaseContextStore
from context_framework.testing import StoreTests, make_state_machine_test, run_state_machine, servers
from context_framework.wrappers import BufferedStore, CachedStore, unwrap, wrap_store

redis = pytest.importorskip("redis")

from context_framework.redis_store import RedisContextStore  # noqa: E402

_LISTENER_THREAD = "context-framework-invalidations"


def _wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> float | None:
    """Poll ``predicate`` every millisecond; the seconds it took, or None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.001)
    return None


def _listener_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(_LISTENER_THREAD)]


def _raw_client(url: str) -> Any:
    config = RedisContextStore._parse_url(url.partition("?")[0])
    return redis.Redis(
        host=config["host"],
        port=config["port"],
        db=config.get("db", 0),
        username=config.get("username"),
        password=config.get("password"),
    )


def _sweep(url: str, prefix: str) -> None:
    servers.sweep_redis_prefix(url, prefix)


def _settled(store: CachedStore, timeout: float = 10.0) -> None:
    """Wait until no verification of an own write is pending."""
    state = store._state
    assert _wait_for(lambda: not state.verifying, timeout) is not None, "verifications never finished"


# --------------------------------------------------------------------------- conformance


class TestCachedMemoryStore(StoreTests):
    shares_data_when_pickled = False  # the in-memory store pickles as a snapshot

    def make_store(self, **options: Any) -> BaseContextStore:
        return CachedStore(InMemoryContextStore(**options))


class TestTinyCachedMemoryStore(TestCachedMemoryStore):
    """The suite again with a cache of 3 entries and a TTL: eviction on almost every step."""

    def make_store(self, **options: Any) -> BaseContextStore:
        return CachedStore(InMemoryContextStore(**options), max_size=3, ttl=60)


class TestCachedSQLiteStore(StoreTests):
    @pytest.fixture(autouse=True)
    def _workdir(self, tmp_path: Path) -> None:
        self._dir = tmp_path

    def make_store(self, **options: Any) -> BaseContextStore:
        return CachedStore(SQLiteContextStore(self._dir / f"{uuid.uuid4().hex}.db", **options))

    def reopen_store(self, store: BaseContextStore) -> BaseContextStore:
        inner = unwrap(store)
        return CachedStore(
            SQLiteContextStore(inner.path, namespace=store.namespace, max_value_size=store.max_value_size)
        )


class TestCachedRedisStore(StoreTests):
    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, unique_name: str) -> Iterator[None]:
        self._url = redis_url
        self._prefix = f"{unique_name}:"
        yield
        _sweep(redis_url, self._prefix)

    def make_store(self, **options: Any) -> BaseContextStore:
        inner = RedisContextStore.from_url(
            self._url, prefix=self._prefix, namespace=f"s{uuid.uuid4().hex[:8]}", **options
        )
        store = CachedStore(inner)
        assert store.cache_info().tracking == "up"
        return store

    def reopen_store(self, store: BaseContextStore) -> BaseContextStore:
        inner = unwrap(store)
        return CachedStore(RedisContextStore(**{**inner._config(), "namespace": store.namespace}))


def _memory_cache() -> BaseContextStore:
    return CachedStore(InMemoryContextStore(), max_size=4)


TestTinyCachedMemoryStateMachine = make_state_machine_test(
    _memory_cache, max_examples=30, stateful_step_count=30
)


def test_state_machine_over_redis(redis_url: str, unique_name: str) -> None:
    prefix = f"{unique_name}:"

    def make_store() -> BaseContextStore:
        inner = RedisContextStore.from_url(redis_url, prefix=prefix, namespace=uuid.uuid4().hex[:8])
        return CachedStore(inner, max_size=5)

    try:
        run_state_machine(make_store, max_examples=15, stateful_step_count=20)
    finally:
        _sweep(redis_url, prefix)


# --------------------------------------------------------------------------- the cache itself


class _CountingStore(InMemoryContextStore):
    """An in-memory store that counts reads and can fail writes (before or after applying them)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reads = 0
        self.fail: str | None = None  # None, "before" or "after"

    def get(self, key: Any, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)

    def _get_normalized(self, ckey: Any, default: Any = None) -> Any:
        self.reads += 1
        return super()._get_normalized(ckey, default)

    def _maybe_fail(self, when: str) -> None:
        if self.fail == when:
            raise ContextStoreError(f"injected failure {when} the write")

    def _set_normalized(self, ckey: Any, value: Any) -> None:  # set() goes through here too
        self._maybe_fail("before")
        super()._set_normalized(ckey, value)
        self._maybe_fail("after")

    def set_many(self, items: Any) -> None:
        self._maybe_fail("before")
        super().set_many(items)
        self._maybe_fail("after")

    def update(self, key: Any, patch: Any) -> Any:
        self._maybe_fail("before")
        merged = super().update(key, patch)
        self._maybe_fail("after")
        return merged


@pytest.fixture
def counted() -> Iterator[tuple[CachedStore, _CountingStore]]:
    inner = _CountingStore()
    store = CachedStore(inner, max_size=100)
    yield store, inner
    store.close()


def test_write_through_then_reads_hit(counted: tuple[CachedStore, _CountingStore]) -> None:
    store, inner = counted
    for i in range(50):
        store.set(("row", i), {"meta": f"value_{i}"})
    for i in range(50):
        assert store.get(("row", i)) == {"meta": f"value_{i}"}
    assert inner.reads == 0
    info = store.cache_info()
    assert (info.hits, info.misses, info.size, info.tracking) == (50, 0, 50, "off")


def test_misses_are_cached_too(counted: tuple[CachedStore, _CountingStore]) -> None:
    store, inner = counted
    assert store.get(("row", 1)) is None
    assert store.get(("row", 1), "dflt") == "dflt"
    assert not store.exists(("row", 1))
    assert inner.reads == 1
    assert store.cache_info().misses == 1


def test_pandas_style_fast_paths(counted: tuple[CachedStore, _CountingStore]) -> None:
    store, inner = counted
    store._set_normalized(("row", 3), {"a": 1})
    assert inner.get(("row", 3)) == {"a": 1}
    inner.reads = 0
    assert store._get_normalized(("row", 3)) == {"a": 1}
    assert store._get_normalized(("row", 4), "none") == "none"
    assert store.get(("row", 3)) == {"a": 1}
    assert inner.reads == 1  # only the miss of ("row", 4)


def test_no_aliasing_of_nested_values(counted: tuple[CachedStore, _CountingStore]) -> None:
    store, _ = counted
    value = {"list": [1, {"x": 2}], "d": {"k": "v"}}
    store.set("k", value)
    value["list"].append(3)
    value["d"]["k"] = "changed"
    got = store.get("k")
    assert got == {"list": [1, {"x": 2}], "d": {"k": "v"}}
    got["list"][1]["x"] = 99
    got["new"] = 1
    assert store.get("k") == {"list": [1, {"x": 2}], "d": {"k": "v"}}
    first, second = store.get_many(["k", "k"])
    assert first == second and first is not second and first["list"] is not second["list"]


def test_ttl_expires_entries(counted: tuple[CachedStore, _CountingStore]) -> None:
    _, inner = counted
    store = CachedStore(inner, ttl=0.05, close_inner=False)
    store.set("k", {"v": 1})
    inner.set("k", {"v": 2})  # behind the cache's back
    assert store.get("k") == {"v": 1}
    assert _wait_for(lambda: store.get("k") == {"v": 2}, 5) is not None
    assert store.cache_info().ttl == 0.05
    store.close()
    assert not inner.closed


def test_size_bound_and_clock_eviction() -> None:
    store = CachedStore(InMemoryContextStore(), max_size=4)
    for i in range(4):
        store.set(("row", i), {"i": i})
    store.get(("row", 0))  # referenced: gets a second chance
    store.set(("row", 4), {"i": 4})
    cached = store._data
    assert len(cached) == 4 and store.cache_info().size == 4
    assert ("row", 0) in cached and ("row", 1) not in cached
    for i in range(100, 300):
        store.set(("row", i), {"i": i})
        store.get(("row", i - 1))
        assert store.cache_info().size <= 4
    assert store.cache_info().evictions >= 197
    assert all(store.get(("row", i)) == {"i": i} for i in range(300) if i < 5 or i >= 100)
    store.close()


def test_own_writes_keep_the_cache_exact(counted: tuple[CachedStore, _CountingStore]) -> None:
    store, inner = counted
    keys = [("row", i) for i in range(10)]
    store.set_many([(k, {"n": 0}) for k in keys])
    assert store.update(keys[0], {"u": True}) == {"n": 0, "u": True}
    assert store.increment(keys[1], "n", 5) == 5
    assert store.delete(keys[2])
    assert store.delete_many(keys[3:5]) == 2
    with_ns = store.with_namespace("a")
    with_ns.set(keys[0], {"other": "namespace"})
    for key in keys:
        assert store.get(key) == inner.get(key)
    assert with_ns.get(keys[0]) == {"other": "namespace"}
    assert store.get_many(keys) == inner.get_many(keys)
    assert store.clear(("row",)) == 7
    assert all(store.get(k) is None for k in keys)
    assert with_ns.get(keys[0]) == {"other": "namespace"}  # another namespace: untouched


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_inner_write_error_drops_the_entry(counted: tuple[CachedStore, _CountingStore], when: str) -> None:
    store, inner = counted
    store.set("k", {"v": 1})
    store.get("k")
    inner.fail = when
    with pytest.raises(ContextStoreError):
        store.set("k", {"v": 2})
    with pytest.raises(ContextStoreError):
        store.update("k", {"v": 3})
    inner.fail = None
    reads = inner.reads
    # whatever the store holds now, the cache serves it, not a value the store may not hold
    assert store.get("k") == inner.get("k")
    assert inner.reads == reads + 2  # one miss through the cache, one direct read
    assert store.get("k") == {"v": 1 if when == "before" else 3}


def test_bad_input_changes_nothing(counted: tuple[CachedStore, _CountingStore]) -> None:
    store, inner = counted
    store.set("k", {"v": 1})
    with pytest.raises(ContextStoreError.__mro__[1]):  # ContextError
        store.set("k", {"bad": {1, 2}})
    with pytest.raises(ContextStoreError.__mro__[1]):
        store.set_many([("k", {"v": 9}), ("j", {"bad": object()})])
    assert store.get("k") == {"v": 1} == inner.get("k")
    assert store.get("j") is None


def test_invalidate_one_or_all(counted: tuple[CachedStore, _CountingStore]) -> None:
    store, inner = counted
    store.set("a", {"v": 1})
    store.set("b", {"v": 1})
    inner.set("a", {"v": 2})
    inner.set("b", {"v": 2})
    store.invalidate("a")
    assert store.get("a") == {"v": 2} and store.get("b") == {"v": 1}
    store.invalidate()
    assert store.get("b") == {"v": 2}
    assert store.cache_info().size == 1


def test_configuration_errors() -> None:
    inner = InMemoryContextStore()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ContextConfigurationError):
            CachedStore(inner, max_size=bad)
    for bad_ttl in (0, -1, float("inf"), float("nan"), "5"):
        with pytest.raises(ContextConfigurationError):
            CachedStore(inner, ttl=bad_ttl)
    with pytest.raises(ContextConfigurationError, match="invalidation=True"):
        CachedStore(inner, invalidation=True)
    with pytest.raises(ContextConfigurationError):
        CachedStore(inner, invalidation="yes")  # type: ignore[arg-type]


def test_pickles_with_its_options(tmp_path: Path) -> None:
    store = CachedStore(SQLiteContextStore(tmp_path / "c.db"), max_size=7, ttl=3.5)
    store.set("k", {"v": 1})
    clone = pickle.loads(pickle.dumps(store))
    assert (clone.max_size, clone.ttl, clone.cache_info().size) == (7, 3.5, 0)
    assert clone.get("k") == {"v": 1}
    clone.close()
    store.close()


def test_without_tracking_a_foreign_write_is_seen_after_ttl_or_invalidate(tmp_path: Path) -> None:
    """SQLite has no invalidation messages: staleness is bounded by ``ttl`` (or ``invalidate()``)."""
    path = tmp_path / "shared.db"
    forever = CachedStore(SQLiteContextStore(path))
    short = CachedStore(SQLiteContextStore(path), ttl=0.2)
    other = SQLiteContextStore(path)  # stands for another process
    try:
        forever.set("k", {"v": 1})
        assert short.get("k") == {"v": 1}
        other.set("k", {"v": 2})
        assert forever.get("k") == {"v": 1}  # stale: nothing tells this process
        assert short.get("k") == {"v": 1}
        assert _wait_for(lambda: short.get("k") == {"v": 2}, 5) is not None
        assert forever.get("k") == {"v": 1}
        forever.invalidate("k")
        assert forever.get("k") == {"v": 2}
        assert forever.cache_info().tracking == "off"
    finally:
        for s in (forever, short, other):
            s.close()


@pytest.mark.parametrize("buffered", [False, True], ids=["direct", "over-a-buffer"])
def test_threads_never_leave_a_stale_entry(buffered: bool) -> None:
    """Writers and readers race on few keys; afterwards the cache agrees with the store.

    Over a buffer, ``set`` takes the one-step write-through (the buffer's non-blocking put
    under the cache's lock) and falls back to the two-step path when the buffer is full
    (``max_pending``), while ``update``/``delete`` always take the two-step path.
    """
    inner = InMemoryContextStore()
    below = BufferedStore(inner, max_items=3, max_pending=3, flush_interval=0.001) if buffered else inner
    store = CachedStore(below, max_size=8)
    keys = [("row", i) for i in range(4)]
    stop = time.monotonic() + 0.5

    def writer(n: int) -> None:
        i = 0
        while time.monotonic() < stop:
            key = keys[i % len(keys)]
            store.set(key, {"w": n, "i": i})
            if i % 7 == 0:
                store.update(key, {"u": i})
            if i % 11 == 0:
                store.delete(key)
            i += 1

    def reader() -> None:
        while time.monotonic() < stop:
            store.get_many(keys)
            for key in keys:
                store.get(key)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.flush()
    for key in keys:
        assert store.get(key) == inner.get(key)


# --------------------------------------------------------------------------- URLs and adapters


def test_url_and_wrap_store_plumbing(redis_url: str, unique_name: str) -> None:
    prefix = f"{unique_name}:"
    base = redis_url.partition("?")[0]
    try:
        with open_store(f"cached+{base}?prefix={prefix}") as store:
            assert type(store) is CachedStore and store.max_size == 10_000
            assert store.cache_info().tracking == "up"
        with open_store(f"{base}?prefix={prefix}&cache=100&cache_ttl=5") as store:
            assert (store.max_size, store.ttl) == (100, 5.0)
        with open_store(f"{base}?prefix={prefix}&cache=100&buffer=10") as store:
            assert type(store) is CachedStore and type(store.inner) is BufferedStore
            assert store.cache_info().tracking == "up"  # through the buffer
        inner = InMemoryContextStore()
        wrapped = wrap_store(inner, cache=5, close_inner=False)
        assert type(wrapped) is CachedStore and wrapped.max_size == 5
        wrapped.close()
        assert not inner.closed
    finally:
        _sweep(redis_url, prefix)


def test_pandas_adapter_spec_loop_hits(redis_url: str, unique_name: str) -> None:
    pd = pytest.importorskip("pandas")
    from context_framework.adapters.pandas_adapter import PandasContextAdapter

    prefix = f"{unique_name}:"
    df = pd.DataFrame({"A": range(1000)})
    # a cache exactly as large as the loop: the adapter's probes must not push values out
    adapter = PandasContextAdapter(df, f"{redis_url.partition('?')[0]}?prefix={prefix}", cache=300)
    try:
        store = adapter.context_store
        assert type(store) is CachedStore
        for i in range(300):
            adapter.add_context(("row", i), {"meta": f"value_{i}"})
        _settled(store)
        for i in range(300):
            assert adapter.get_context(("row", i)) == {"meta": f"value_{i}"}
        info = store.cache_info()
        assert info.hits == 300 and info.misses <= 1, info  # the adapter may probe one absent key
    finally:
        adapter.close()
        _sweep(redis_url, prefix)


# --------------------------------------------------------------------------- Redis tracking

_WRITER = textwrap.dedent(
    """
    import json, sys, time
    from context_framework.redis_store import RedisContextStore
    url, prefix, namespace, key, value = sys.argv[1:6]
    store = RedisContextStore.from_url(url, prefix=prefix, namespace=namespace)
    store.set(tuple(json.loads(key)), json.loads(value))
    print(time.time())
    store.close()
    """
)


def _write_from_another_process(url: str, prefix: str, namespace: str, key: Any, value: Any) -> float:
    """Write ``key`` from a separate Python process; return the wall-clock time of the write."""
    done = subprocess.run(
        [sys.executable, "-c", _WRITER, url, prefix, namespace, json.dumps(key), json.dumps(value)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def tracked(redis_url: str, unique_name: str) -> Iterator[tuple[CachedStore, str, str]]:
    prefix = f"{unique_name}:"
    url = redis_url.partition("?")[0]
    store = CachedStore(RedisContextStore.from_url(url, prefix=prefix, namespace="ns"))
    assert store.cache_info().tracking == "up"
    yield store, url, prefix
    store.close()
    _sweep(redis_url, prefix)


def test_another_process_write_evicts_the_entry(
    tracked: tuple[CachedStore, str, str], record_property: Any
) -> None:
    store, url, prefix = tracked
    key = ["row", 1]
    _write_from_another_process(url, prefix, "ns", key, {"v": "first"})
    assert store.get(("row", 1)) == {"v": "first"}  # read: now cached
    assert store.get(("row", 1)) == {"v": "first"} and store.cache_info().hits == 1
    written = _write_from_another_process(url, prefix, "ns", key, {"v": "second"})
    assert _wait_for(lambda: store.get(("row", 1)) == {"v": "second"}) is not None
    delay = time.time() - written
    record_property("invalidation_delay_s", delay)
    print(f"foreign write seen {delay * 1000:.1f} ms after it was made (includes process exit)")
    assert store.cache_info().invalidations >= 1


def test_own_write_then_foreign_write_is_refreshed(tracked: tuple[CachedStore, str, str]) -> None:
    store, url, prefix = tracked
    store.set(("row", 2), {"v": "mine"})
    _settled(store)
    assert store._data.get(("row", 2)) is not None  # the echo of our write kept the entry
    _write_from_another_process(url, prefix, "ns", ["row", 2], {"v": "theirs"})
    assert _wait_for(lambda: store.get(("row", 2)) == {"v": "theirs"}) is not None
    # deletes from elsewhere evict too
    other = RedisContextStore.from_url(url, prefix=prefix, namespace="ns")
    other.delete(("row", 2))
    other.close()
    assert _wait_for(lambda: store.get(("row", 2)) is None) is not None


def test_echoes_of_own_writes_keep_entries(tracked: tuple[CachedStore, str, str]) -> None:
    store, _, _ = tracked
    inner = unwrap(store)
    n = 2000
    for i in range(n):
        store.set(("row", i), {"meta": f"value_{i}"})
    store.set_many([(("batch", i), {"i": i}) for i in range(n)])
    store.update(("row", 0), {"extra": 1})
    _settled(store)
    before = store.cache_info()
    for i in range(n):
        assert store.get(("row", i)) == inner.get(("row", i))
    assert store.get_many([("batch", i) for i in range(n)]) == [{"i": i} for i in range(n)]
    after = store.cache_info()
    assert after.misses == before.misses, (before, after)
    assert after.size == 2 * n


def test_namespaces_and_flushes_are_tracked(tracked: tuple[CachedStore, str, str]) -> None:
    store, url, prefix = tracked
    view = store.with_namespace("sub")
    view.get("k")
    store.get("k")
    other = RedisContextStore.from_url(url, prefix=prefix, namespace="ns/sub")
    other.set("k", {"in": "sub"})
    assert _wait_for(lambda: view.get("k") == {"in": "sub"}) is not None
    assert store.get("k") is None
    other.close()


def _tracking_client_address(store: CachedStore) -> str:
    host, port = store._state.listener._conn._sock.getsockname()[:2]
    return f"{host}:{port}"


def test_lost_tracking_connection_empties_the_cache_and_recovers(
    tracked: tuple[CachedStore, str, str], redis_url: str
) -> None:
    store, url, prefix = tracked
    store.set("k", {"v": 1})
    assert store.cache_info().size == 1
    client = _raw_client(redis_url)
    try:
        client.execute_command("CLIENT", "KILL", "ADDR", _tracking_client_address(store))
    finally:
        client.close()
    # Down: the cache was emptied; it comes back by itself and caches again.
    assert _wait_for(lambda: store.cache_info().size == 0 or store.cache_info().tracking == "down")
    assert _wait_for(lambda: store.cache_info().tracking == "up") is not None
    assert store.get("k") == {"v": 1}
    other = RedisContextStore.from_url(url, prefix=prefix, namespace="ns")
    other.set("k", {"v": 2})
    other.close()
    assert _wait_for(lambda: store.get("k") == {"v": 2}) is not None


class _PrivateRedis:
    """A redis-server of this test alone, on a fixed port, that can be killed and restarted."""

    def __init__(self, workdir: Path) -> None:
        from context_framework.testing import servers

        try:
            self.binary = servers._redis_binaries()[0]
        except servers.ServerUnavailable as exc:
            pytest.skip(str(exc))
        self.port = servers._free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [self.binary, *args, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def ready() -> bool:
            try:
                client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
                try:
                    return bool(client.ping())
                finally:
                    client.close()
            except redis.RedisError:
                return False

        assert _wait_for(ready, 20) is not None, "the private redis-server did not start"

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.mark.servers
def test_server_down_means_no_caching_until_back(tmp_path: Path) -> None:
    server = _PrivateRedis(tmp_path)
    server.start()
    store: CachedStore | None = None
    try:
        store = CachedStore(RedisContextStore.from_url(server.url, retries=0, socket_timeout=2))
        store.set("k", {"v": 1})
        assert store.get("k") == {"v": 1} and store.cache_info().size == 1
        server.kill()
        assert _wait_for(lambda: store.cache_info().tracking == "down", 10) is not None
        assert store.cache_info().size == 0
        with pytest.raises(ContextStoreError):
            store.get("k")  # never a stale hit while blind
        server.start()  # empty: the old value is gone, the cache must not pretend otherwise
        assert _wait_for(lambda: store.cache_info().tracking == "up", 20) is not None
        assert store.get("k") is None
        store.set("k", {"v": 2})
        assert store.get("k") == {"v": 2} and store.cache_info().size == 1
    finally:
        if store is not None:
            store.close()
        server.kill()


def test_close_stops_the_listener_thread(redis_url: str, unique_name: str) -> None:
    before = len(_listener_threads())
    stores = [CachedStore(RedisContextStore.from_url(redis_url, prefix=f"{unique_name}:")) for _ in range(3)]
    assert len(_listener_threads()) == before + 3
    views = [s.with_namespace("v") for s in stores]
    views[0].close()  # a view: the listener stays
    assert len(_listener_threads()) == before + 3
    for s in stores:
        s.close()
    assert _wait_for(lambda: len(_listener_threads()) == before, 5) is not None
    assert all(v.closed for v in views)


@pytest.mark.servers
def test_cluster_falls_back_to_ttl_only(redis_cluster_url: str, unique_name: str) -> None:
    inner = RedisContextStore.from_url(redis_cluster_url, cluster=True, prefix=f"{unique_name}:")
    try:
        store = CachedStore(inner, ttl=1, close_inner=False)
        assert store.cache_info().tracking == "off"
        store.close()
        with pytest.raises(ContextConfigurationError):
            CachedStore(inner, invalidation=True)
    finally:
        inner.clear()
        inner.close()


def _forked_child(store: CachedStore, queue: Any) -> None:
    try:
        first = store.get(("row", 9))  # re-subscribes in this process
        ok = _wait_for(lambda: store.cache_info().tracking == "up", 10) is not None
        queue.put(("ready", first, ok, [t.name for t in _listener_threads()]))
        seen = _wait_for(lambda: store.get(("row", 9)) == {"v": "parent-2"}, 20)
        queue.put(("seen", seen))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        queue.put(("error", repr(exc)))


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_forked_child_subscribes_anew(tracked: tuple[CachedStore, str, str]) -> None:
    store, _, _ = tracked
    store.set(("row", 9), {"v": "parent-1"})
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_forked_child, args=(store, queue))
    child.start()
    try:
        kind, first, ok, threads = queue.get(timeout=30)
        assert kind == "ready", first
        assert first == {"v": "parent-1"} and ok and len(threads) == 1
        store.set(("row", 9), {"v": "parent-2"})
        kind, seen = queue.get(timeout=30)
        assert kind == "seen" and seen is not None
        # the parent's listener was never disturbed by the child
        assert store.cache_info().tracking == "up"
        assert store.get(("row", 9)) == {"v": "parent-2"}
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()


def test_buffered_then_cached_over_redis(redis_url: str, unique_name: str) -> None:
    prefix = f"{unique_name}:"
    url = redis_url.partition("?")[0]
    store = wrap_store(RedisContextStore.from_url(url, prefix=prefix), buffer=100, cache=1000)
    other = RedisContextStore.from_url(url, prefix=prefix)
    try:
        for i in range(250):
            store.set(("row", i), {"i": i})
        for i in range(250):
            assert store.get(("row", i)) == {"i": i}  # read-your-writes, buffered or not
        store.flush()
        _settled(store)
        misses = store.cache_info().misses
        assert all(store.get(("row", i)) == {"i": i} for i in range(250))
        assert store.cache_info().misses == misses  # the flush's echoes kept the entries
        other.set(("row", 1), {"i": "foreign"})
        assert _wait_for(lambda: store.get(("row", 1)) == {"i": "foreign"}) is not None
    finally:
        store.close()
        other.close()
        _sweep(redis_url, prefix)


_HAMMER = textwrap.dedent(
    """
    import random, sys, time
    from context_framework.redis_store import RedisContextStore
    url, prefix, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    store = RedisContextStore.from_url(url, prefix=prefix, namespace="ns")
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        k = ("row", random.randrange(20))
        op = random.random()
        if op < 0.6:
            store.set(k, {"b": n})
        elif op < 0.8:
            store.update(k, {"u": n})
        else:
            store.delete(k)
        n += 1
    store.close()
    """
)


def test_converges_with_a_concurrent_foreign_writer(tracked: tuple[CachedStore, str, str]) -> None:
    """Another process hammers 20 keys while this one reads and writes them; afterwards they agree."""
    store, url, prefix = tracked
    keys = [("row", i) for i in range(20)]
    writer = subprocess.Popen([sys.executable, "-c", _HAMMER, url, prefix, "1.5"])
    try:
        end = time.monotonic() + 1.5
        i = 0
        while time.monotonic() < end:
            key = keys[i % 20]
            if i % 5 == 0:
                store.set(key, {"a": i})
            elif i % 13 == 0:
                store.update(key, {"au": i})
            else:
                store.get(key)
            if i % 50 == 0:
                store.get_many(keys)
            i += 1
    finally:
        assert writer.wait(60) == 0
    truth = unwrap(store)
    _settled(store)
    assert _wait_for(lambda: all(store.get(k) == truth.get(k) for k in keys), 5) is not None


def test_a_cached_miss_never_evicts_a_value() -> None:
    """A full cache scanned in order keeps hitting although absent keys are probed on the way."""
    store = CachedStore(InMemoryContextStore(), max_size=100)
    for i in range(100):
        store.set(("row", i), {"i": i})
    assert store.get(("absent", 1)) is None  # not cached: no room, and it would evict ("row", 0)
    for i in range(100):
        assert store.get(("row", i)) == {"i": i}
    info = store.cache_info()
    assert (info.hits, info.misses, info.evictions, info.size) == (100, 1, 0, 100)
    store.delete(("row", 5))  # an own delete on a full cache: the entry becomes a cached miss
    assert store.get(("row", 5)) is None and store.cache_info().misses == 1
    store.close()


def test_a_scan_of_a_full_cache_does_not_cascade() -> None:
    """Keys read once into a full cache do not evict the rest (admitted on a second miss)."""
    inner = InMemoryContextStore()
    store = CachedStore(inner, max_size=100)
    for i in range(100):
        store.set(("row", i), {"i": i})
    inner.set(("other", 1), {"x": 1})
    assert store.get(("other", 1)) == {"x": 1}  # first miss on a full cache: not admitted
    for i in range(100):
        assert store.get(("row", i)) == {"i": i}
    assert store.cache_info().hits == 100
    assert store.get(("other", 1)) == {"x": 1}  # second miss: admitted, one value evicted
    assert store.get(("other", 1)) == {"x": 1}
    info = store.cache_info()
    assert (info.misses, info.evictions, info.size) == (2, 1, 100)
    store.close()


@pytest.mark.slow
def test_invalidation_delay_distribution(tracked: tuple[CachedStore, str, str], record_property: Any) -> None:
    """How stale a read can be: 100 writes by another process, the reader polling every 0.2 ms.

    Prints the distribution (run with ``-s``); asserts only that every write was seen.
    """
    store, url, prefix = tracked
    ctx = multiprocessing.get_context("spawn")
    requests, done = ctx.Queue(), ctx.Queue()
    writer = ctx.Process(target=_delay_writer, args=(url, prefix, requests, done))
    writer.start()
    delays = []
    try:
        for value in range(100):
            store.get(("row", 1))
            requests.put(value)
            want = {"v": value}
            assert _wait_for_fast(lambda want=want: store.get(("row", 1)) == want, 20), value
            seen = time.time()
            delays.append((seen - done.get(timeout=20)) * 1000)
            time.sleep(0.005)
    finally:
        requests.put(None)
        writer.join(20)
    delays.sort()
    record_property("invalidation_delay_ms_median", delays[50])
    print(
        f"invalidation delay after the writer's SET returned: median {delays[50]:.2f} ms, "
        f"p90 {delays[89]:.2f} ms, max {delays[-1]:.2f} ms"
    )


def _delay_writer(url: str, prefix: str, requests: Any, done: Any) -> None:
    store = RedisContextStore.from_url(url, prefix=prefix, namespace="ns")
    while (value := requests.get()) is not None:
        store.set(("row", 1), {"v": value})
        done.put(time.time())
    store.close()


def _wait_for_fast(predicate: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.0002)
    return False
