"""BufferedStore: conformance over real stores, read-your-writes, flushing, failures and crashes."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from context_framework import (
    ContextConfigurationError,
    ContextSerializationError,
    ContextStoreError,
    InMemoryContextStore,
    SQLiteContextStore,
    UnsupportedKeyError,
    open_store,
)
from context_framework.base_store import BaseContextStore
from context_framework.testing import StoreTests, make_state_machine_test, servers
from context_framework.wrappers import BufferedStore, unwrap


def _wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


# --------------------------------------------------------------------------- conformance


class TestBufferedMemoryStore(StoreTests):
    """Tiny batches and a short interval, so the suite runs through every flush path."""

    shares_data_when_pickled = False

    def make_store(self, **options: Any) -> BaseContextStore:
        return BufferedStore(InMemoryContextStore(**options), max_items=3, flush_interval=0.01)


class TestBufferedSQLiteStore(StoreTests):
    @pytest.fixture(autouse=True)
    def _workdir(self, tmp_path: Path) -> None:
        self._dir = tmp_path

    def make_store(self, **options: Any) -> BaseContextStore:
        inner = SQLiteContextStore(self._dir / f"{uuid.uuid4().hex}.db", **options)
        return BufferedStore(inner, max_items=50, flush_interval=None)

    def reopen_store(self, store: BaseContextStore) -> BaseContextStore:
        assert isinstance(store, BufferedStore)
        inner = store.inner
        raw = SQLiteContextStore(inner.path, namespace=inner.namespace, max_value_size=inner.max_value_size)
        return BufferedStore(raw, max_items=50, flush_interval=None)


class TestBufferedRedisStore(StoreTests):
    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, unique_name: str) -> Iterator[None]:
        self._url = redis_url
        self._prefix = f"{unique_name}:"
        yield
        servers.sweep_redis_prefix(self._url, self._prefix)  # every namespace the test used

    def make_store(self, **options: Any) -> BaseContextStore:
        return open_store(
            self._url, prefix=self._prefix, namespace=f"s{uuid.uuid4().hex[:8]}", buffer=10, **options
        )

    def reopen_store(self, store: BaseContextStore) -> BaseContextStore:
        assert isinstance(store, BufferedStore)
        return open_store(self._url, prefix=self._prefix, namespace=store.namespace, buffer=10)


TestBufferedStoreStateMachine = make_state_machine_test(
    lambda: BufferedStore(InMemoryContextStore(), max_items=2, flush_interval=None)
)


# --------------------------------------------------------------------------- behaviour


@pytest.fixture
def inner() -> InMemoryContextStore:
    return InMemoryContextStore()


def test_writes_wait_in_the_buffer_and_reads_see_them(inner: InMemoryContextStore) -> None:
    with BufferedStore(inner, max_items=100, flush_interval=None) as store:
        store.set(("row", 1), {"a": 1})
        store.set(("row", 2), {"nested": {"x": [1, 2]}})
        assert inner.count() == 0 and store.pending_count == 2
        assert store.get(("row", 1)) == {"a": 1}
        assert store.get_many([("row", 2), ("row", 3)]) == [{"nested": {"x": [1, 2]}}, None]
        assert store.exists(("row", 1)) and not store.exists(("row", 3))
        got = store.get(("row", 2))
        got["nested"]["x"].append(3)  # no aliasing of the buffered value
        assert store.get(("row", 2)) == {"nested": {"x": [1, 2]}}
        store.flush()
        assert inner.count() == 2 and store.pending_count == 0
        assert inner.get(("row", 2)) == {"nested": {"x": [1, 2]}}


def test_a_later_write_to_a_key_replaces_the_buffered_one(inner: InMemoryContextStore) -> None:
    inner.set(("k",), {"old": True})
    with BufferedStore(inner, max_items=100, flush_interval=None) as store:
        store.set(("k",), {"v": 1})
        assert store.delete(("k",)) is True
        assert store.get(("k",)) is None and inner.get(("k",)) == {"old": True}
        assert store.delete(("k",)) is False
        store.set(("k",), {"v": 2})
        assert store.pending_count == 1
        store.flush()
        assert inner.get(("k",)) == {"v": 2}
        store.delete(("k",))
        store.flush()
        assert inner.get(("k",)) is None


def test_update_and_increment_keep_their_order(inner: InMemoryContextStore) -> None:
    inner.set(("k",), {"n": 10, "a": 1})
    with BufferedStore(inner, max_items=100, flush_interval=None) as store:
        assert store.increment(("k",), "n") == 11  # not buffered: runs on the inner store
        store.set(("k",), {"n": 1})
        assert store.increment(("k",), "n", 5) == 6  # merges into the buffered value
        assert store.update(("k",), {"b": 2}) == {"n": 6, "b": 2}
        assert inner.get(("k",)) == {"n": 11, "a": 1}
        store.delete(("k",))
        assert store.update(("k",), {"c": 3}) == {"c": 3}
        store.flush()
        assert inner.get(("k",)) == {"c": 3}


def test_scans_and_counts_see_buffered_writes(inner: InMemoryContextStore) -> None:
    with BufferedStore(inner, max_items=100, flush_interval=None) as store:
        store.set_many([(("row", i), {"i": i}) for i in range(5)])
        assert store.count() == 5
        assert sorted(store.list_keys()) == [("row", i) for i in range(5)]
        store.delete(("row", 0))
        assert dict(store.items()) == {("row", i): {"i": i} for i in range(1, 5)}
        store.set(("row", 9), {})
        assert store.clear() == 5 and inner.count() == 0


def test_flushes_by_size_in_the_background(inner: InMemoryContextStore) -> None:
    with BufferedStore(inner, max_items=10, flush_interval=None) as store:
        for i in range(35):
            store.set(("row", i), {"i": i})
        # full batches go in the background; fewer than max_items stay (no interval)
        assert _wait_for(lambda: store._buf.n_inflight == 0 and store.pending_count < 10)
        assert inner.count() == 35 - store.pending_count >= 26


def test_flushes_by_time(inner: InMemoryContextStore) -> None:
    with BufferedStore(inner, max_items=1000, flush_interval=0.05) as store:
        store.set(("k",), {"v": 1})
        assert _wait_for(lambda: inner.get(("k",)) == {"v": 1})
        store.set(("k",), {"v": 2})
        assert _wait_for(lambda: inner.get(("k",)) == {"v": 2})


def test_bad_input_raises_at_once_and_buffers_nothing(inner: InMemoryContextStore) -> None:
    with BufferedStore(inner, max_items=100, flush_interval=None) as store:
        store.set(("ok",), {"v": 1})
        with pytest.raises(ContextSerializationError):
            store.set(("bad",), {"v": {1, 2}})
        with pytest.raises(ContextSerializationError):
            store.set_many([(("x",), {"v": 1}), (("y",), {"v": float("nan")})])
        with pytest.raises(UnsupportedKeyError):
            store.set(("k", object()), {"v": 1})
        assert store.pending_count == 1
        store.flush()
        assert inner.list_keys() == [("ok",)]


@pytest.mark.parametrize(
    "options",
    [
        {"max_items": 0},
        {"max_items": True},
        {"flush_interval": -1},
        {"retry_timeout": 0},
        {"max_items": 10, "max_pending": 5},
    ],
)
def test_bad_options(inner: InMemoryContextStore, options: dict[str, Any]) -> None:
    with pytest.raises(ContextConfigurationError):
        BufferedStore(inner, **options)


def test_namespaces_share_the_buffer(inner: InMemoryContextStore) -> None:
    with BufferedStore(inner, max_items=100, flush_interval=None) as store:
        a = store.with_namespace("a")
        a.set(("k",), {"in": "a"})
        store.set(("k",), {"in": "root"})
        assert a.get(("k",)) == {"in": "a"} and store.get(("k",)) == {"in": "root"}
        a.close()  # closing a view flushes; the owner stays usable
        assert inner.with_namespace("a").get(("k",)) == {"in": "a"}
        store.flush()
        assert inner.get(("k",)) == {"in": "root"}


def test_close_flushes_and_closes_the_inner_store(tmp_path: Path) -> None:
    inner = SQLiteContextStore(tmp_path / "c.db")
    store = BufferedStore(inner, max_items=100, flush_interval=None)
    store.set(("k",), {"v": 1})
    store.close()
    assert inner.closed and store.closed
    with SQLiteContextStore(tmp_path / "c.db") as raw:
        assert raw.get(("k",)) == {"v": 1}
    kept = InMemoryContextStore()
    store = BufferedStore(kept, max_items=100, flush_interval=None, close_inner=False)
    store.set(("k",), {"v": 1})
    store.close()
    assert not kept.closed and kept.get(("k",)) == {"v": 1}


def test_pickling_flushes_and_reopens(tmp_path: Path) -> None:
    store = open_store(f"buffered+sqlite:///{tmp_path / 'ctx.db'}")
    assert isinstance(store, BufferedStore)
    store.set(("k",), {"v": 1})
    copy = pickle.loads(pickle.dumps(store))
    assert isinstance(copy, BufferedStore) and copy.max_items == store.max_items
    assert copy.get(("k",)) == {"v": 1}
    copy.close()
    store.close()


def test_url_and_adapter_options(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    from context_framework import PandasContextAdapter

    store = open_store(f"sqlite:///{tmp_path / 'a.db'}?buffer=7&flush_interval=2.5")
    assert isinstance(store, BufferedStore) and store.max_items == 7 and store.flush_interval == 2.5
    store.close()
    df = pd.DataFrame({"a": range(100)})
    path = tmp_path / "b.db"
    with PandasContextAdapter(df, f"sqlite:///{path}", buffer=50) as adapter:
        for i in range(100):
            adapter.add_context(("row", i), {"i": i})
        assert adapter.get_context(("row", 99)) == {"i": 99}
    with SQLiteContextStore(path) as raw:
        assert raw.count() == 100


def test_a_forked_child_does_not_resend_the_parents_buffer(tmp_path: Path) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("needs fork")
    path = tmp_path / "f.db"
    store = BufferedStore(SQLiteContextStore(path), max_items=100, flush_interval=None)
    store.set(("parent",), {"v": 1})
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            code = 0 if store.pending_count == 0 and store.get(("parent",)) is None else 1
            store.set(("child",), {"v": 2})
            store.flush()
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    store.flush()
    with SQLiteContextStore(path) as raw:
        assert sorted(raw.list_keys()) == [("child",), ("parent",)]
    store.close()


# --------------------------------------------------------------------------- failures, real servers


def test_loses_nothing_when_the_server_restarts_during_a_run(restartable: servers.RestartableRedis) -> None:
    """A writer keeps going while the server is down for a few seconds, then everything is there."""
    store = open_store(restartable.url, buffer=200, flush_interval=0.05)
    assert isinstance(store, BufferedStore)
    n = 20_000
    written = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(n):
                store.set(("row", i), {"i": i, "tag": "x" * (i % 7)})
                if i == n // 4:
                    written.set()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            written.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert written.wait(30)
    restartable.stop()
    time.sleep(3)
    restartable.start()
    thread.join(120)
    assert not errors, errors
    store.flush()
    assert store.pending_count == 0
    store.close()
    with open_store(restartable.url) as raw:
        assert raw.count() == n
        got = raw.get_many([("row", i) for i in range(n)])
        assert got == [{"i": i, "tag": "x" * (i % 7)} for i in range(n)]
        assert unwrap(store) is not raw


def test_reports_the_failure_when_the_server_never_comes_back(restartable: servers.RestartableRedis) -> None:
    store = BufferedStore(open_store(restartable.url), max_items=10, flush_interval=0.01, retry_timeout=1.0)
    store.set(("before",), {"v": 0})
    store.flush()
    restartable.stop()
    for i in range(5):
        store.set(("row", i), {"i": i})
    # the background flush gives up after retry_timeout and the next operation says so
    with pytest.raises(ContextStoreError, match="could not be sent") as info:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            store.get(("row", 0))
            time.sleep(0.05)
    assert info.value.__cause__ is not None
    assert store.pending_count == 5  # kept, not dropped
    assert store.get(("row", 4)) == {"i": 4}
    with pytest.raises(ContextStoreError, match="still buffered"):
        store.flush()
    with pytest.raises(ContextStoreError):
        store.close()  # a close that cannot flush keeps the store open, with its writes
    assert not store.closed and store.pending_count == 5
    restartable.start()
    store.close()
    with open_store(restartable.url) as raw:
        assert raw.count() == 6


_CHILD = textwrap.dedent(
    """
    import sys, time
    from context_framework import open_store
    from context_framework.wrappers import BufferedStore
    url, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    store = BufferedStore(open_store(url), max_items=100, max_pending=400, flush_interval=None)
    for i in range(n):
        store.set(("row", i), {"i": i})
    print("written", store.pending_count, flush=True)
    if mode == "kill":
        time.sleep(60)  # killed by the parent
    # mode "exit": leave without close(); the atexit hook flushes
    """
)


def _run_child(url: str, n: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, str(n), mode], stdout=subprocess.PIPE, text=True
    )


def test_sigkill_loses_at_most_max_pending_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    n = 5_000
    child = _run_child(url, n, "kill")
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("written")
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    with open_store(url) as raw:
        stored = dict(raw.items())
    assert n - len(stored) <= 400  # max_pending
    assert all(value == {"i": key[1]} for key, value in stored.items())


def test_a_normal_exit_without_close_flushes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'exit.db'}"
    child = _run_child(url, 1234, "exit")
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and out.startswith("written")
    with open_store(url) as raw:
        assert raw.count() == 1234


_READER = textwrap.dedent(
    """
    import json, sys
    from context_framework import open_store
    url, n = sys.argv[1], int(sys.argv[2])
    with open_store(url) as store:
        got = store.get_many([("row", i) for i in range(n)])
    print(json.dumps(sum(1 for i, v in enumerate(got) if v == {"source": "sensor", "i": i})))
    """
)


@pytest.mark.parametrize("server", ["redis_url", "postgres_url"])
def test_another_process_reads_every_write_after_flush(
    request: pytest.FixtureRequest, server: str, unique_name: str
) -> None:
    """The spec's loop, unchanged, through buffer + cache; then a second process reads it all."""
    pd = pytest.importorskip("pandas")
    from context_framework import PandasContextAdapter

    base = request.getfixturevalue(server)
    url = f"{base}{'&' if '?' in base else '?'}namespace={unique_name}"
    n = 10_000
    df = pd.DataFrame({"A": range(100_000)})
    adapter = PandasContextAdapter(df, url, buffer=1000, cache=10_000)
    try:
        for i in range(n):
            adapter.add_context(("row", i), {"source": "sensor", "i": i})
        for i in range(n):
            assert adapter.get_context(("row", i)) == {"source": "sensor", "i": i}
        adapter.flush()
        out = subprocess.run(
            [sys.executable, "-c", _READER, url, str(n)], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) == n
    finally:
        adapter.context_store.clear()
        adapter.close()
