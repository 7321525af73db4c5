"""Redis writes whose reply is lost: the error must say the write may or may not have been applied.

A real Redis behind :class:`~context_framework.testing.proxy.DropReplyProxy`:
the proxy forwards the marked command, lets the server execute it, closes the
client's connection before the reply and refuses every reconnection. The
store's retries then all fail to connect, which must not make it claim the
command never got through.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from context_framework import ContextStoreError, RedisContextStore
from context_framework.testing import servers
from context_framework.testing.proxy import DropReplyProxy

UNKNOWN = "may or may not have been applied"


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"cftest_{uuid.uuid4().hex[:12]}:"
    yield name
    servers.sweep_redis_prefix(redis_url, name)


def _direct(redis_url: str, prefix: str) -> RedisContextStore:
    parts = urlsplit(redis_url)
    db = int(parts.path.strip("/") or 0)
    return RedisContextStore(parts.hostname or "localhost", parts.port or 6379, db, prefix=prefix)


@pytest.fixture
def proxied(redis_url: str, prefix: str) -> Iterator[tuple[RedisContextStore, DropReplyProxy]]:
    parts = urlsplit(redis_url)
    db = int(parts.path.strip("/") or 0)
    with DropReplyProxy(parts.hostname or "localhost", parts.port or 6379) as proxy:
        store = RedisContextStore("127.0.0.1", proxy.port, db, prefix=prefix, retries=3, socket_timeout=5)
        try:
            yield store, proxy
        finally:
            store.close()


MARK = "lost-reply-marker"
KEY = ("k", MARK)

# operation name -> (what to do on the store, what the server must hold afterwards)
Check = Callable[[RedisContextStore], bool]
_OPS: dict[str, tuple[Callable[[RedisContextStore], Any], Check]] = {
    "set": (lambda s: s.set(KEY, {"v": 1}), lambda raw: raw.get(KEY) == {"v": 1}),
    "update": (lambda s: s.update(KEY, {"v": 2}), lambda raw: raw.get(KEY) == {"v": 2}),
    "increment": (lambda s: s.increment(KEY, "n", 5), lambda raw: raw.get(KEY) == {"n": 5}),
    "expire": (lambda s: s.expire(KEY, 1000), lambda raw: (raw.time_to_live(KEY) or 0) > 900),
    "delete": (lambda s: s.delete(KEY), lambda raw: raw.get(KEY) is None),
    "delete_many": (lambda s: s.delete_many([KEY, ("other",)]), lambda raw: raw.get(KEY) is None),
    "clear": (lambda s: s.clear(("k",)), lambda raw: raw.get(KEY) is None),
}
_NEEDS_KEY = {"expire", "delete", "delete_many", "clear"}


@pytest.mark.parametrize("op", list(_OPS))
def test_a_write_whose_reply_is_lost_may_or_may_not_have_been_applied(
    op: str, proxied: tuple[RedisContextStore, DropReplyProxy], redis_url: str, prefix: str
) -> None:
    store, proxy = proxied
    run, applied = _OPS[op]
    with _direct(redis_url, prefix) as raw:
        if op in _NEEDS_KEY:
            raw.set(KEY, {"v": 0})
        store.update(("warm-up",), {"v": 0})  # loads the Lua scripts, so EVALSHA runs at once
        store.increment(("warm-up",), "n")
        proxy.drop_reply_to(MARK.encode())
        with pytest.raises(ContextStoreError) as info:
            run(store)
        assert proxy.dropped.is_set()
        assert UNKNOWN in str(info.value), str(info.value)
        assert "was not sent" not in str(info.value)
        assert applied(raw), f"the proxy let {op} through, the server should hold its effect"


def test_a_set_many_chunk_whose_reply_is_lost_may_have_been_written(
    proxied: tuple[RedisContextStore, DropReplyProxy], redis_url: str, prefix: str
) -> None:
    """Two chunks; the first is applied but its reply is lost: the error must not say "not sent"."""
    store, proxy = proxied
    items = [(("row", i), {"i": i}) for i in range(999)] + [(KEY, {"v": 1})] + [(("row", 1000), {"i": 1000})]
    proxy.drop_reply_to(MARK.encode())
    with pytest.raises(ContextStoreError) as info:
        store.set_many(items)
    message = str(info.value)
    assert "0 of 2 chunks" in message, message
    assert "was not sent" not in message, message
    assert UNKNOWN in message, message
    with _direct(redis_url, prefix) as raw:
        assert raw.get(KEY) == {"v": 1}
        assert raw.count() == 1000  # the first chunk was applied; the second was never sent


def test_a_read_whose_reply_is_lost_says_nothing_about_applying(
    proxied: tuple[RedisContextStore, DropReplyProxy], redis_url: str, prefix: str
) -> None:
    store, proxy = proxied
    proxy.drop_reply_to(MARK.encode())
    with pytest.raises(ContextStoreError) as info:
        store.get(KEY)
    assert "applied" not in str(info.value), str(info.value)
    assert "lost the connection to Redis" in str(info.value), str(info.value)
