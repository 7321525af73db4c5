"""SQL writes in autocommit whose reply is lost: the error must say they may or may not have been applied.

A real PostgreSQL / MariaDB behind :class:`~context_framework.testing.proxy.DropReplyProxy`:
the proxy forwards the statement that carries the test's namespace, lets the
server run (and commit) it, then closes the client's connection before the reply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from context_framework import ContextStoreError, DBContextStore
from context_framework.exceptions import ContextValueTooLargeError
from context_framework.testing.proxy import DropReplyProxy

UNKNOWN = "may or may not have been applied"


@pytest.fixture(params=["postgres_url", "mysql_url"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(request.param))


@pytest.fixture
def namespace(url: str, unique_name: str) -> Iterator[str]:
    yield unique_name
    with DBContextStore(url, namespace=unique_name) as raw:
        raw.clear()


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"))


def _marker(url: str, namespace: str) -> bytes:
    """Bytes that only the statements on this namespace's keys carry (MariaDB gets keys in hex)."""
    text = namespace.encode()
    return text.hex().encode() if url.startswith("mysql") else text


_OPS: dict[str, tuple[Callable[[DBContextStore], Any], Callable[[DBContextStore], bool]]] = {
    "set": (lambda s: s.set(("k",), {"v": 1}), lambda raw: raw.get(("k",)) == {"v": 1}),
    "delete": (lambda s: s.delete(("old",)), lambda raw: raw.get(("old",)) is None),
    "clear": (lambda s: s.clear(), lambda raw: raw.count() == 0),
    "update": (lambda s: s.update(("old",), {"w": 2}), lambda raw: raw.get(("old",)) == {"v": 0, "w": 2}),
    "increment": (lambda s: s.increment(("old",), "n", 3), lambda raw: raw.get(("old",)) == {"v": 0, "n": 3}),
}


@pytest.mark.parametrize("op", list(_OPS))
def test_an_autocommit_write_whose_reply_is_lost_may_or_may_not_have_been_applied(
    op: str, url: str, namespace: str
) -> None:
    run, applied = _OPS[op]
    in_transaction = op in ("update", "increment") and url.startswith("mysql")  # one read-then-write tx
    parts = urlsplit(url)
    with DBContextStore(url, namespace=namespace) as raw:
        raw.set(("old",), {"v": 0})
        proxy = DropReplyProxy(parts.hostname or "localhost", parts.port or 0)
        with proxy, DBContextStore(_through(url, proxy.port), namespace=namespace, pool_size=1) as store:
            assert store.get(("old",)) == {"v": 0}  # warm: the connection and its statements
            proxy.drop_reply_to(_marker(url, namespace))
            with pytest.raises(ContextStoreError) as info:
                run(store)
            assert proxy.dropped.is_set()
        if in_transaction:  # the row lock's reply was lost: the server rolled the transaction back
            assert "rolled back" in str(info.value), str(info.value)
            assert raw.get(("old",)) == {"v": 0}
            return
        assert UNKNOWN in str(info.value), str(info.value)
        assert applied(raw), f"the proxy let {op} through, the server should hold its effect"


def test_a_write_the_server_refuses_on_a_dropped_connection_was_not_applied(
    mysql_url: str, unique_name: str
) -> None:
    """MariaDB answers a statement over max_allowed_packet with error 1153, then drops the
    connection: the server's verdict is known, so the message must not say "may or may not"."""
    packet = _max_allowed_packet(mysql_url)
    if packet > 64 << 20:
        pytest.skip(f"max_allowed_packet is {packet:,} bytes: too large a value to send in a test")
    with DBContextStore(mysql_url, namespace=unique_name, max_value_size=None) as store:
        try:
            with pytest.raises(ContextValueTooLargeError, match="max_allowed_packet") as info:
                store.set(("big",), {"v": "x" * (packet + 1024)})
            assert UNKNOWN not in str(info.value), str(info.value)
            assert store.get(("big",)) is None
        finally:
            store.clear()


def _max_allowed_packet(url: str) -> int:
    pymysql = pytest.importorskip("pymysql")
    parts = urlsplit(url)
    conn = pymysql.connect(
        host=parts.hostname or "localhost", port=parts.port or 3306, user=parts.username or "root",
        password=parts.password or "", database=parts.path.lstrip("/"),
    )  # fmt: skip
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@max_allowed_packet")
            return int(cur.fetchone()[0])
    finally:
        conn.close()
