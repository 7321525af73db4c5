"""A value over the server's own limit (MariaDB's max_allowed_packet) is a clear error, not a dead store."""

from __future__ import annotations

import pytest

from context_framework.db_store import DBContextStore
from context_framework.exceptions import ContextValueTooLargeError, ContextWritesRefusedError
from context_framework.wrappers import BufferedStore
from test_db_lost_reply import _max_allowed_packet
from test_db_store import _drop


@pytest.fixture
def big_store(mysql_url: str, unique_name: str):  # type: ignore[no-untyped-def]
    with DBContextStore(mysql_url, table=unique_name, max_value_size=None) as store:
        yield store
    _drop(mysql_url, unique_name)


@pytest.mark.servers
def test_a_value_over_max_allowed_packet_is_too_large_and_the_store_goes_on(
    big_store: DBContextStore, mysql_url: str
) -> None:
    huge = {"blob": "x" * (_max_allowed_packet(mysql_url) + 1024)}
    big_store.set(("row", 0), {"ok": 1})
    for write in (
        lambda: big_store.set(("row", 1), huge),
        lambda: big_store.set_many([(("row", 2), {"ok": 2}), (("row", 1), huge)]),
        lambda: big_store.update(("row", 0), huge),
    ):
        with pytest.raises(ContextValueTooLargeError, match="max_allowed_packet"):
            write()
    assert big_store.get_many([("row", 0), ("row", 1), ("row", 2)]) == [{"ok": 1}, None, None]
    big_store.set(("row", 3), {"ok": 3})
    assert big_store.get(("row", 3)) == {"ok": 3}


@pytest.mark.servers
def test_a_buffer_splits_off_the_write_the_server_refuses_as_too_large(
    big_store: DBContextStore, mysql_url: str
) -> None:
    huge = {"blob": "x" * (_max_allowed_packet(mysql_url) + 1024)}
    buffer = BufferedStore(big_store, max_items=100, flush_interval=None, retry_timeout=60, close_inner=False)
    for i in range(50):
        buffer.set(("row", i), {"i": i})
    buffer.set(("row", 7), huge)
    with pytest.raises(ContextWritesRefusedError) as info:
        buffer.flush()
    assert [(key, type(error)) for key, error in info.value.refused] == [
        (("row", 7), ContextValueTooLargeError)
    ]
    buffer.close()
    assert big_store.count() == 49
    assert big_store.get(("row", 7)) is None
