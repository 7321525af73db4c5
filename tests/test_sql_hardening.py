"""SQL batches under contention: rolled-back transactions, deadlocks, key order (issue 9).

Against the real servers (``postgres_url``, ``mysql_url``). A second raw
connection of the server's driver takes row locks to make a batch wait, be
cancelled, or become a deadlock victim. Every test works in its own table
(``unique_name``) and drops it afterwards.
"""
# ruff: noqa: F811  (the fixtures url and table, imported from test_db_store, are parameters here)

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from context_framework.db_store import DBContextStore
from context_framework.exceptions import ContextStoreBusyError, ContextStoreError
from context_framework.keys import in_key_order
from test_db_store import _drop, _is_pg, _raw, table, url  # noqa: F401


@pytest.fixture
def pg_table(postgres_url: str, unique_name: str) -> Iterator[str]:
    yield unique_name
    _drop(postgres_url, unique_name)


# --------------------------------------------------------------------------- helpers


def _rows(n: int, tag: Any, *, reverse: bool = False) -> list[tuple[Any, dict[str, Any]]]:
    order = range(n - 1, -1, -1) if reverse else range(n)
    return [(("row", i), {"i": i, "tag": tag}) for i in order]


def _session_id(store: DBContextStore) -> int:
    """The server's id of the session of a ``pool_size=1`` store."""
    if store.dialect == "postgresql":
        return int(store._backend.run("pid", lambda c: c.conn.info.backend_pid))
    return int(store._backend.run("pid", lambda c: c.conn.thread_id()))


def _wait_for_lock_wait(url: str, session: int, thread: threading.Thread, outcome: list[Any]) -> None:
    """Return once ``session`` waits for a row lock (fail if ``thread`` ended first)."""
    if _is_pg(url):
        sql = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s"
    else:
        sql = (
            "SELECT trx_state = 'LOCK WAIT' FROM information_schema.innodb_trx "
            "WHERE trx_mysql_thread_id = %s"
        )
    conn = _raw(url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert thread.is_alive(), f"the store's call ended without waiting for the lock: {outcome}"
            cur = conn.cursor()
            cur.execute(sql, (session,))
            row = cur.fetchone()
            if row is not None and row[0]:
                return
            time.sleep(0.25)  # InnoDB refreshes INNODB_TRX only once it has gone unread for 0.1s
        raise AssertionError("the store's session never waited for the row lock")
    finally:
        conn.close()


def _begin(conn: Any, url: str) -> None:
    conn.cursor().execute("BEGIN" if _is_pg(url) else "START TRANSACTION")


def _lock(conn: Any, url: str, table: str, k: bytes) -> None:
    q = f'"{table}"' if _is_pg(url) else f"`{table}`"
    conn.cursor().execute(f"SELECT v FROM {q} WHERE k = %s FOR UPDATE", (k,))


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """``call`` started in a thread; the list gets ``("ok", result)`` or ``("error", exc)``."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(("ok", call()))
        except BaseException as exc:
            outcome.append(("error", exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _outcome(thread: threading.Thread, outcome: list[Any]) -> Any:
    thread.join(120)
    assert not thread.is_alive() and outcome, "the store's call did not end"
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


def _make_heavy(conn: Any, url: str, table: str) -> None:
    """Give a MariaDB transaction more undo than a store's batch, so that InnoDB (which rolls
    back the lighter transaction of a deadlock) picks the store's batch as the victim."""
    conn.cursor().executemany(
        f"INSERT INTO `{table}` (k, v) VALUES (%s, '{{}}')",
        [(b"\xfe" + i.to_bytes(4, "big"),) for i in range(20_000)],
    )


def _deadlock(
    url: str, store: DBContextStore, call: Callable[[], Any]
) -> tuple[threading.Thread, list[Any]]:
    """Run ``call`` (a batch over the keys ``("row", 0)`` ... ``("row", n - 1)``, written in
    that order) into a deadlock whose victim is the store's transaction: a raw transaction
    locks the last row, waits until the batch waits for it, then locks the first row."""
    n = store.count(("row",))
    first, last = store._k(("row", 0)), store._k(("row", n - 1))
    session = _session_id(store)
    raw = _raw(url)
    try:
        if _is_pg(url):
            raw.execute("SET deadlock_timeout = '60s'")  # the store's session detects the deadlock
        _begin(raw, url)
        if not _is_pg(url):
            _make_heavy(raw, url, store.table)
        _lock(raw, url, store.table, last)
        thread, outcome = _in_thread(call)
        _wait_for_lock_wait(url, session, thread, outcome)
        try:
            _lock(raw, url, store.table, first)  # waits until the store's transaction is rolled back
        except Exception as exc:
            raise AssertionError(f"the raw transaction, not the store's, was the victim: {exc}") from exc
        raw.rollback()
        thread.join(120)
        return thread, outcome
    finally:
        raw.close()


# --------------------------------------------------------------------------- defect 1


def test_batch_that_was_a_deadlock_victim_is_retried_on_the_temp_table_path(url: str, table: str) -> None:
    """The deadlocked batch is rolled back and retried whole; later batches still work."""
    with DBContextStore(url, table=table, pool_size=1) as s:
        s.set_many(_rows(1000, "a"))  # PostgreSQL: COPY straight into the table
        thread, outcome = _deadlock(url, s, lambda: s.set_many(_rows(1000, "b")))  # upsert path
        _outcome(thread, outcome)
        assert {v["tag"] for v in s.get_many([("row", i) for i in range(1000)])} == {"b"}
        s.set_many(_rows(1000, "c"))
        assert {v["tag"] for v in s.get_many([("row", i) for i in range(1000)])} == {"c"}
        assert s.count() == 1000


def test_pg_batch_after_a_cancelled_batch(postgres_url: str, pg_table: str) -> None:
    """A batch cancelled by ``pg_cancel_backend`` writes nothing, and the next one works."""
    with DBContextStore(postgres_url, table=pg_table, pool_size=1) as s:
        s.set_many(_rows(1000, "a"))
        session = _session_id(s)
        raw = _raw(postgres_url)
        try:
            _begin(raw, postgres_url)
            _lock(raw, postgres_url, pg_table, s._k(("row", 999)))
            thread, outcome = _in_thread(lambda: s.set_many(_rows(1000, "b")))
            _wait_for_lock_wait(postgres_url, session, thread, outcome)
            raw.execute("SELECT pg_cancel_backend(%s)", (session,))
            with pytest.raises(ContextStoreError, match="nothing of this batch was written"):
                _outcome(thread, outcome)
        finally:
            raw.rollback()
            raw.close()
        assert {v["tag"] for v in s.get_many([("row", i) for i in range(1000)])} == {"a"}
        s.set_many(_rows(1000, "c"))
        assert {v["tag"] for v in s.get_many([("row", i) for i in range(1000)])} == {"c"}


def _prepared(store: DBContextStore) -> tuple[set[bytes], set[bytes]]:
    """The statements the store's connection believes are prepared, and those the session has."""

    def body(c: Any) -> tuple[set[bytes], set[bytes]]:
        rows = c.cur.execute("SELECT name FROM pg_prepared_statements").fetchall()
        return set(c.prepared), {r[0].encode() for r in rows}

    return store._backend.run("inspect", body)  # type: ignore[no-any-return]


def test_pg_prepared_statements_are_known_after_rolled_back_batches(
    postgres_url: str, pg_table: str
) -> None:
    """What the connection records as prepared is what its session has, after a rollback too
    (psycopg answers a ROLLBACK with DEALLOCATE ALL once it has prepared statements itself)."""
    with DBContextStore(postgres_url, table=pg_table, pool_size=1) as s:

        def prepare_and_check() -> None:
            s.set("k", {"v": 1})
            assert s.get("k") == {"v": 1}
            believed, held = _prepared(s)
            assert {b"cf_set", b"cf_get"} <= believed <= held, (believed, held)

        prepare_and_check()
        for i in range(10):  # the same batch statements, often enough for psycopg to prepare them
            s.set_many(_rows(10, i))
            s.get_many([("row", 1), ("row", 2)])
        with pytest.raises(ContextStoreError, match="nothing of this batch was written"):
            s._backend.run("set_many", lambda c: c.cur.execute("SELECT 1/0"), tx=True)
        believed, held = _prepared(s)
        assert believed <= held, (believed, held)
        prepare_and_check()
        # a batch whose direct COPY meets a key stored meanwhile rolls back to a savepoint
        for i in range(10):
            s.set_many(_rows(10, i))
        backend: Any = s._backend
        backend._range_is_free = lambda *args: True
        s.set_many(_rows(1000, "x"))
        believed, held = _prepared(s)
        assert believed <= held, (believed, held)
        prepare_and_check()


# --------------------------------------------------------------------------- defect 2: key order


def _rows_not_locked(url: str, table: str, keys: list[bytes]) -> set[bytes]:
    """Which of ``keys`` no other transaction holds a row lock on (``SKIP LOCKED``)."""
    q = f'"{table}"' if _is_pg(url) else f"`{table}`"
    conn = _raw(url)
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT k FROM {q} WHERE k >= %s AND k <= %s FOR UPDATE SKIP LOCKED",
                    (min(keys), max(keys)))
        return {bytes(r[0]) for r in cur.fetchall()}
    finally:
        conn.close()


BATCHES = {
    "set_many small": (500, lambda s, n: s.set_many(_rows(n, "new", reverse=True))),
    "set_many large": (3000, lambda s, n: s.set_many(_rows(n, "new", reverse=True))),
    "delete_many": (5000, lambda s, n: s.delete_many([("row", i) for i in range(n - 1, -1, -1)])),
}


@pytest.mark.parametrize("batch", list(BATCHES))
def test_batches_lock_rows_in_key_order(url: str, table: str, batch: str) -> None:
    """A batch sent in reversed order still takes its row locks in encoded-key order: blocked
    on the middle row, it holds exactly the rows below it."""
    n, call = BATCHES[batch]
    with DBContextStore(url, table=table, pool_size=1) as s:
        s.set_many(_rows(n, "old"))
        keys = [s._k(("row", i)) for i in range(n)]
        middle = keys[n // 2]
        session = _session_id(s)
        raw = _raw(url)
        try:
            _begin(raw, url)
            _lock(raw, url, table, middle)
            thread, outcome = _in_thread(lambda: call(s, n))
            _wait_for_lock_wait(url, session, thread, outcome)
            held_by_batch = set(keys) - _rows_not_locked(url, table, keys) - {middle}
        finally:
            raw.rollback()
            raw.close()
        _outcome(thread, outcome)
        assert held_by_batch == set(keys[: n // 2]), (
            f"the blocked batch holds {len(held_by_batch)} rows, "
            f"{len(held_by_batch & set(keys[: n // 2]))} of them below the row it waits for"
        )


@pytest.mark.parametrize("n", [500, 3000])  # INSERT ... unnest, and COPY straight into the table
def test_pg_new_rows_are_inserted_in_key_order(postgres_url: str, pg_table: str, n: int) -> None:
    with DBContextStore(postgres_url, table=pg_table) as s:
        s.set_many(_rows(n, "new", reverse=True))
        raw = _raw(postgres_url)
        try:
            stored = [bytes(r[0]) for r in raw.execute(f'SELECT k FROM "{pg_table}" ORDER BY ctid')]
        finally:
            raw.close()
        assert stored == [s._k(("row", i)) for i in range(n)]


# --------------------------------------------------------------------------- retries that run out


def test_busy_error_after_a_deadlock_says_nothing_was_written(url: str, table: str) -> None:
    with DBContextStore(url, table=table, pool_size=1, timeout=0) as s:  # no time to retry
        s.set_many(_rows(1000, "a"))
        thread, outcome = _deadlock(url, s, lambda: s.set_many(_rows(1000, "b")))
        with pytest.raises(ContextStoreBusyError) as info:
            _outcome(thread, outcome)
        message = str(info.value)
        assert "set_many" in message and "lock conflicts" in message
        assert "nothing of this batch was written" in message, message
        assert {v["tag"] for v in s.get_many([("row", i) for i in range(1000)])} == {"a"}
        s.set_many(_rows(1000, "c"))  # and the connection is still good for batches
        assert {v["tag"] for v in s.get_many([("row", i) for i in range(1000)])} == {"c"}


# --------------------------------------------------------------------------- acceptance: processes

PROCESSES, BATCHES_EACH, KEYS = 4, 12, 5000


def _write_batches(url: str, table: str, proc: int, start: Any, results: Any) -> None:
    """``BATCHES_EACH`` batches of the same ``KEYS`` keys; odd processes send them reversed."""
    keys = [("k", i) for i in range(KEYS)]
    if proc % 2:
        keys.reverse()
    with DBContextStore(url, table=table) as s:
        start.wait(60)
        for b in range(BATCHES_EACH):
            tag = f"{proc}:{b}"
            began = time.monotonic()
            try:
                s.set_many([(k, {"tag": tag, "i": k[1]}) for k in keys])
                error = None
            except Exception as exc:
                error = repr(exc)
            results.put((tag, began, time.monotonic(), error))


@pytest.mark.slow
def test_processes_writing_the_same_keys_in_opposite_orders(url: str, table: str) -> None:
    """4 processes x 12 batches of the same 5,000 keys, half of them reversed: every batch
    commits, and the table then holds the values of one batch, the last to commit."""
    DBContextStore(url, table=table).close()  # schema first, as a deployment would
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_write_batches, args=(url, table, p, start, results))
             for p in range(PROCESSES)]
    began = time.monotonic()
    for p in procs:
        p.start()
    batches = [results.get(timeout=600) for _ in range(PROCESSES * BATCHES_EACH)]
    for p in procs:
        p.join(60)
    elapsed = time.monotonic() - began
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    failed = [(tag, error) for tag, _, _, error in batches if error is not None]
    assert not failed, f"{len(failed)} of {len(batches)} batches failed: {failed[:3]}"
    with DBContextStore(url, table=table) as s:
        values = s.get_many([("k", i) for i in range(KEYS)])
    assert [v["i"] if v else None for v in values] == list(range(KEYS))
    tags = {v["tag"] for v in values if v}
    assert len(tags) == 1, f"the table mixes the values of {len(tags)} batches: {sorted(tags)[:5]}"
    (last,) = tags
    assert last.endswith(f":{BATCHES_EACH - 1}"), last  # some process's final batch
    ended = {tag: end for tag, _, end, _ in batches}
    later = [tag for tag, start_time, _, _ in batches if start_time > ended[last]]
    assert not later, f"{later} began after {last} had committed, yet {last} is what the table holds"
    order = [tag for tag, _, _, _ in sorted(batches, key=lambda b: b[2])]
    print(f"\n{url.split(':')[0]}: {len(batches)} batches in {elapsed:.1f}s; last committed {last}; "
          f"return order {' '.join(order)}")


def test_in_key_order_is_stable_and_keeps_sorted_lists() -> None:
    keys, values = [b"a", b"b"], [1, 2]
    assert in_key_order(keys, values) == (keys, values)
    assert in_key_order(keys, values)[0] is keys  # already in order: no copy
    # a repeated key keeps its entries' order, so the last still wins when written in turn
    assert in_key_order([b"b", b"a", b"b", b"a"], [1, 2, 3, 4]) == ([b"a", b"a", b"b", b"b"], [2, 4, 1, 3])
