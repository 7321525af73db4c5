"""BufferedStore refuses at once what the store below would refuse, and one bad write blocks nothing.

Against the real PostgreSQL and MariaDB (the 2,048-byte SQL key limit), plus
the flush-time safety net: a write the inner store refuses only when the batch
reaches it is split off (by bisection), reported by key and dropped, and the
other writes are sent. Also the honesty of the failure and exit messages.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from context_framework import (
    ContextStoreError,
    ContextValueTooLargeError,
    ContextWritesRefusedError,
    DBContextStore,
    InMemoryContextStore,
    SQLiteContextStore,
    UnsupportedKeyError,
    open_store,
)
from context_framework.testing import servers
from context_framework.wrappers import BufferedStore, CachedStore, ShardedStore, buffered

LONG_KEY = ("k", "x" * 3000)  # 3,000+ bytes encoded: over the SQL primary-key limit


@pytest.fixture(params=["postgres_url", "mysql_url"])
def sql_url(request: pytest.FixtureRequest, unique_name: str) -> Iterator[str]:
    base = str(request.getfixturevalue(request.param))
    url = f"{base}{'&' if '?' in base else '?'}namespace={unique_name}"
    yield url
    with DBContextStore(url) as raw:
        raw.clear()


def _raised(call: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def _wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.01)
    return bool(predicate())


def _rows(n: int) -> list[tuple[tuple[str, int], dict[str, int]]]:
    return [(("row", i), {"i": i}) for i in range(n)]


# --------------------------------------------------------------------------- refused at once


def test_a_key_the_sql_store_refuses_is_refused_at_once_and_blocks_nothing(sql_url: str) -> None:
    """The issue's scenario: a 3,000-byte key, then 400 valid writes; after flush the 400 are there."""
    store = BufferedStore(DBContextStore(sql_url), max_items=1000, flush_interval=None)
    try:
        expected = _raised(lambda: store.inner.set(LONG_KEY, {"v": 1}))
        error = _raised(lambda: store.set(LONG_KEY, {"v": 1}))
        assert type(error) is type(expected) is UnsupportedKeyError
        assert str(error) == str(expected)
        assert store.pending_count == 0  # nothing buffered
        for key, value in _rows(400):
            store.set(key, value)
        store.flush()
        assert store.pending_count == 0
    finally:
        store.close()
    with DBContextStore(sql_url) as raw:
        assert raw.count() == 400
        assert raw.get_many([k for k, _ in _rows(400)]) == [v for _, v in _rows(400)]


def test_the_adapter_stack_refuses_the_key_too(sql_url: str) -> None:
    """CachedStore(BufferedStore(sql)): the cache hands its entry down without a second value check."""
    store = open_store(sql_url, buffer=1000, cache=1000, flush_interval=None)
    assert isinstance(store, CachedStore) and isinstance(store.inner, BufferedStore)
    try:
        with pytest.raises(UnsupportedKeyError, match="2,048-byte limit"):
            store.set(LONG_KEY, {"v": 1})
        assert store.get(LONG_KEY) is None  # not cached either
        for key, value in _rows(400):
            store.set(key, value)
        store.flush()
    finally:
        store.close()
    with DBContextStore(sql_url) as raw:
        assert raw.count() == 400


def test_set_many_with_one_refused_key_buffers_nothing(sql_url: str) -> None:
    store = BufferedStore(DBContextStore(sql_url), flush_interval=None)
    try:
        with pytest.raises(UnsupportedKeyError):
            store.set_many([*_rows(10), (LONG_KEY, {"v": 1}), *_rows(20)[10:]])
        assert store.pending_count == 0
        store.set_many(_rows(20))
        store.flush()
    finally:
        store.close()
    with DBContextStore(sql_url) as raw:
        assert raw.count() == 20


def test_update_and_increment_over_a_buffered_delete_check_the_key(sql_url: str) -> None:
    """A buffered delete of a key the store cannot hold must not become a write of it."""
    store = BufferedStore(DBContextStore(sql_url), flush_interval=None)
    try:
        assert store.delete(LONG_KEY) is False
        with pytest.raises(UnsupportedKeyError):
            store.update(LONG_KEY, {"v": 1})
        with pytest.raises(UnsupportedKeyError):
            store.increment(LONG_KEY, "n")
        store.set(("ok",), {"v": 1})
        store.flush()  # the buffered delete and the set go through
    finally:
        store.close()
    with DBContextStore(sql_url) as raw:
        assert dict(raw.items()) == {("ok",): {"v": 1}}


def test_check_write_and_every_wrapper_raise_what_the_sql_store_raises(sql_url: str) -> None:
    with DBContextStore(sql_url, max_value_size=100) as store:
        wrapped = [
            BufferedStore(store, close_inner=False, flush_interval=None),
            CachedStore(store, close_inner=False),
            CachedStore(BufferedStore(store, close_inner=False, flush_interval=None), close_inner=False),
            BufferedStore(CachedStore(store, close_inner=False), close_inner=False, flush_interval=None),
        ]
        for key, value in [
            (LONG_KEY, {"v": 1}),
            (("ok",), {"v": "x" * 200}),
            (("ok",), {"v": {1, 2}}),
            (LONG_KEY, {"v": {1, 2}}),  # the key is checked first, as set does
        ]:
            expected = _raised(partial(store.set, key, value))
            for checker in (store, *wrapped):
                for call in (checker.check_write, checker.set):
                    error = _raised(partial(call, key, value))
                    assert (type(error), str(error)) == (type(expected), str(expected)), (checker, call)
        store.check_write(("ok",), {"v": 1})
        for checker in wrapped:
            checker.check_write(("ok",), {"v": 1})
            assert checker.pending_count == 0 if isinstance(checker, BufferedStore) else True
        assert store.count() == 0  # checking writes nothing
        for checker in wrapped:
            checker.close()


def test_a_sharded_batch_checks_every_shard_before_writing_any(sql_url: str, tmp_path: Path) -> None:
    """One shard refuses a key: no other shard may have applied its part."""
    sql = DBContextStore(sql_url)
    lite = SQLiteContextStore(tmp_path / "shard.db", namespace=sql.namespace)
    sharded = ShardedStore([sql, lite], names=["sql", "lite"])
    try:
        long_key = next(k for k in (("k", "x" * 3000, i) for i in range(100)) if sharded.shard_of(k) == 0)
        rows = _rows(50)
        assert {sharded.shard_of(k) for k, _ in rows} == {0, 1}
        with pytest.raises(UnsupportedKeyError):
            sharded.set_many([*rows, (long_key, {"v": 1})])
        assert lite.count() == 0 and sql.count() == 0
        with pytest.raises(UnsupportedKeyError):
            sharded.check_write(long_key, {"v": 1})
        buffered = BufferedStore(sharded, close_inner=False, flush_interval=None)
        with pytest.raises(UnsupportedKeyError):
            buffered.set(long_key, {"v": 1})
        buffered.set_many(rows)
        buffered.close()
        assert sharded.count() == 50
    finally:
        sharded.close()


# --------------------------------------------------------------------------- refused at flush


def test_a_write_refused_at_flush_is_split_off_reported_by_key_and_blocks_nothing(sql_url: str) -> None:
    """A limit the buffer could not see at entry (here: lowered afterwards) is met at flush."""
    inner = DBContextStore(sql_url)
    store = BufferedStore(inner, max_items=1000, flush_interval=None)
    try:
        rows = _rows(300)
        store.set_many(rows[:150])
        store.set(("big",), {"v": "x" * 500})
        store.set_many(rows[150:])
        inner.max_value_size = 200
        with pytest.raises(ContextStoreError) as info:
            store.flush()
        message = str(info.value)
        assert "('big',)" in message and "refused" in message, message
        assert "retried" not in message and "still buffered" not in message, message
        assert isinstance(info.value.__cause__, ContextValueTooLargeError)
        assert isinstance(info.value, ContextWritesRefusedError)
        assert [key for key, _ in info.value.refused] == [("big",)]
        assert store.pending_count == 0  # the refused write is dropped, not resent forever
        store.flush()  # nothing left to fail
    finally:
        store.close()
    with DBContextStore(sql_url) as raw:
        assert raw.count() == 300
        assert raw.get(("big",)) is None


def test_refused_writes_found_by_the_background_flush_are_reported_to_the_next_call() -> None:
    inner = InMemoryContextStore()
    store = BufferedStore(inner, max_items=10, flush_interval=None)
    store.set(("big",), {"v": "x" * 500})
    inner.max_value_size = 200
    for key, value in _rows(9):  # the 10th buffered write starts a background flush
        store.set(key, value)
    assert _wait_for(lambda: store.pending_count == 0)  # the others were sent, the refused one dropped
    with pytest.raises(ContextWritesRefusedError, match="refused") as info:
        store.get(("row", 0))  # the next call hears of it
    assert "('big',)" in str(info.value) and info.value.refused[0][0] == ("big",)
    store.flush()  # reported once
    assert inner.count() == 9 and inner.get(("big",)) is None
    store.close()


def test_a_cache_above_forgets_a_write_refused_at_flush() -> None:
    inner = InMemoryContextStore()
    store = CachedStore(BufferedStore(inner, flush_interval=None))
    store.set(("big",), {"v": "x" * 500})
    store.set(("ok",), {"v": 1})
    assert store.get(("big",)) == {"v": "x" * 500}  # served by the cache
    inner.max_value_size = 200
    with pytest.raises(ContextWritesRefusedError):
        store.flush()
    assert store.get(("big",)) is None  # not a value the store holds
    assert store.get(("ok",)) == {"v": 1}
    store.close()


def test_close_reports_refused_writes_and_still_closes() -> None:
    inner = InMemoryContextStore()
    store = BufferedStore(inner, flush_interval=None, close_inner=False)
    store.set(("big",), {"v": "x" * 500})
    store.set(("ok",), {"v": 1})
    inner.max_value_size = 200
    with pytest.raises(ContextWritesRefusedError, match="refused"):
        store.close()
    assert store.closed and dict(inner.items()) == {("ok",): {"v": 1}}


# --------------------------------------------------------------------------- truthful messages


@pytest.mark.servers
def test_a_transient_failure_says_how_often_it_was_tried(restartable: servers.RestartableRedis) -> None:
    store = BufferedStore(open_store(restartable.url, retries=0), flush_interval=None, retry_timeout=1.0)
    try:
        store.set(("a",), {"v": 1})
        restartable.stop()
        with pytest.raises(ContextStoreError) as info:
            store.flush()
        message = str(info.value)
        assert "1 buffered write could not be sent" in message, message
        assert "tried " in message and " times over " in message, message
        assert "still buffered" in message and store.pending_count == 1
        restartable.start()
    finally:
        store.close()


def test_a_failure_retrying_cannot_fix_says_it_was_not_retried(tmp_path: Path) -> None:
    inner = SQLiteContextStore(tmp_path / "closed.db")
    store = BufferedStore(inner, flush_interval=None, close_inner=False)
    store.set(("a",), {"v": 1})
    inner.close()
    with pytest.raises(ContextStoreError) as info:
        store.flush()
    message = str(info.value)
    assert "not retried" in message and "retried for" not in message, message
    assert store.pending_count == 1  # kept: the caller may still flush it elsewhere
    buffered._LIVE.discard(store)  # its inner store is gone for good: no exit message from this test


_EXIT_CHILD = textwrap.dedent(
    """
    import sys
    from context_framework import open_store
    from context_framework.wrappers import BufferedStore
    store = BufferedStore(open_store(sys.argv[1], retries=0), flush_interval=None, retry_timeout=0.5)
    for i in range(3):
        store.set(("row", i), {"i": i})
    print("written", flush=True)
    sys.stdin.readline()  # the parent stops the server, then lets this process exit without close()
    """
)


@pytest.mark.servers
def test_the_exit_message_says_lost_not_still_buffered(restartable: servers.RestartableRedis) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _EXIT_CHILD, restartable.url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().startswith("written")
    restartable.stop()
    _, err = child.communicate("\n", timeout=60)
    assert "3 buffered writes" in err and "lost" in err, err
    assert "still buffered" not in err and "tries again" not in err, err
    restartable.start()


_REFUSED_CHILD = textwrap.dedent(
    """
    import sys
    from context_framework import SQLiteContextStore
    from context_framework.wrappers import BufferedStore
    inner = SQLiteContextStore(sys.argv[1])
    store = BufferedStore(inner, flush_interval=None)
    store.set(("big",), {"v": "x" * 500})
    for i in range(10):
        store.set(("row", i), {"i": i})
    inner.max_value_size = 200
    """
)


def test_at_exit_refused_writes_are_named_and_the_others_written(tmp_path: Path) -> None:
    path = tmp_path / "exit.db"
    out = subprocess.run(
        [sys.executable, "-c", _REFUSED_CHILD, str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "('big',)" in out.stderr and "refused" in out.stderr, out.stderr
    assert "still buffered" not in out.stderr, out.stderr
    with SQLiteContextStore(path) as raw:
        assert raw.count() == 10 and raw.get(("big",)) is None
