"""The stores ``ctx bench`` measures: names, labels, servers, and a fresh store for each run.

Every run gets a store of its own that it removes afterwards: a fresh
in-memory store, a new SQLite file, a random Redis namespace, a random SQL
table. Server stores use the URL given (``--redis-url``...), else their
environment variable, else a throwaway server
(:mod:`context_framework.testing.servers`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

__all__ = [
    "LABELS",
    "SERVER_STORES",
    "STORES",
    "open_target",
    "parse_choices",
    "parse_stores",
    "probe",
    "server_url",
    "store_kind",
    "tag",
]

#: Stores ``ctx bench`` knows, in the order of its table.
STORES = ("memory", "sqlite", "redis", "redis-cluster", "postgres", "mysql")
SERVER_STORES = ("redis", "redis-cluster", "postgres", "mysql")

#: The label of our store in tables and plots.
LABELS = {
    "memory": "InMemoryContextStore",
    "sqlite": "SQLiteContextStore",
    "redis": "RedisContextStore",
    "redis-cluster": "RedisContextStore (cluster)",
    "postgres": "DBContextStore (PostgreSQL)",
    "mysql": "DBContextStore (MariaDB)",
}


def parse_choices(text: str, choices: tuple[str, ...], what: str, hint: str = "") -> tuple[str, ...]:
    """A comma list of ``choices`` (first-seen order, repeats dropped); ``ValueError`` naming
    the unknown ones, or saying that none was given. ``hint``: how to name the choices."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    hint = hint or ", ".join(choices)
    bad = [n for n in names if n not in choices]
    if bad:
        raise ValueError(f"unknown {what}(s) {', '.join(bad)}; choose from {hint}")
    if not names:
        raise ValueError(f"no {what} given; choose from {hint}")
    return names


def parse_stores(text: str) -> tuple[str, ...]:
    """``"memory, sqlite"`` -> ``("memory", "sqlite")``; ``ValueError`` naming unknown stores."""
    return parse_choices(text, STORES, "store")


def store_kind(url: str) -> str:
    """The ``ctx bench`` store name of a URL other processes can share (``redis://`` -> ``"redis"``...)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme.startswith("redis"):
        return "redis-cluster" if "+cluster" in scheme else "redis"
    if scheme.startswith("postgres"):
        return "postgres"
    if scheme.startswith("mysql") or scheme.startswith("mariadb"):
        return "mysql"
    if scheme == "sqlite":
        return "sqlite"
    raise ValueError(
        f"{url.split('://', 1)[0]}:// cannot be shared by worker processes; "
        "use redis://, postgresql://, mysql:// or sqlite:///path"
    )


def tag() -> str:
    """A random name for one run's namespace, table or file."""
    return f"ctxbench_{uuid.uuid4().hex[:10]}"


def server_url(store: str, urls: Mapping[str, str], stack: ExitStack) -> str:
    """The URL of a server store: given, from its environment variable, or a throwaway server.

    A throwaway server stays up until ``stack`` closes.
    """
    if urls.get(store):
        return urls[store]
    from ..testing import servers

    start = {
        "redis": servers.redis_server,
        "redis-cluster": servers.redis_cluster,
        "postgres": servers.postgres_server,
        "mysql": servers.mysql_server,
    }[store]
    return stack.enter_context(start())


def cluster_url(url: str) -> str:
    """A Redis Cluster store URL (the throwaway cluster yields a plain ``redis://`` URL)."""
    if not url.split("://", 1)[0].endswith("+cluster"):
        return url.replace("://", "+cluster://", 1)
    return url


@contextmanager
def open_target(store: str, url: str | None = None, workdir: str | None = None) -> Iterator[Any]:
    """A fresh, empty store of kind ``store``, removed (file, namespace, table) on exit.

    ``url`` is the server's URL for server stores; ``workdir`` the directory of
    SQLite files (default: a temporary directory). The store pickles by its
    configuration, so other processes can open the same one.
    """
    if store == "memory":
        from ..in_memory_context_store import InMemoryContextStore

        yield InMemoryContextStore()
        return
    if store == "sqlite":
        import tempfile

        from ..sqlite_store import SQLiteContextStore

        with ExitStack() as stack:
            if workdir is None:
                workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="ctx-bench-"))
            path = os.path.join(workdir, f"{tag()}.db")
            sqlite = SQLiteContextStore(path)
            try:
                yield sqlite
            finally:
                sqlite.close()
                for suffix in ("", "-wal", "-shm", "-journal"):
                    try:
                        os.remove(path + suffix)
                    except FileNotFoundError:
                        pass
        return
    if url is None:
        raise ValueError(f"{store} needs a server URL")
    if store.startswith("redis"):
        from ..redis_store import RedisContextStore
        from ..testing.servers import sweep_redis_prefix

        redis_url = cluster_url(url) if store == "redis-cluster" else url
        prefix = f"{tag()}:"  # of this run only: the sweep takes every namespace used under it
        redis = RedisContextStore.from_url(redis_url, prefix=prefix)
        try:
            yield redis
        finally:
            try:
                redis.close()
            finally:
                sweep_redis_prefix(redis_url, prefix, cluster=store == "redis-cluster")
        return
    if store in ("postgres", "mysql"):
        from ..db_store import DBContextStore
        from .sql_baseline import _drop_store_table

        table = tag()
        db = DBContextStore(url, table=table)
        try:
            yield db
        finally:
            db.close()
            _drop_store_table(url, table)
        return
    raise ValueError(f"unknown store {store!r}")


def probe(store: str, url: str) -> None:
    """Raise if the server of ``url`` cannot be reached (so a run fails early, not midway)."""
    if store.startswith("redis"):
        from .redis_baseline import _raw_client

        client = _raw_client(cluster_url(url) if store == "redis-cluster" else url)
        try:
            client.ping()
        finally:
            client.close()
    elif store in ("postgres", "mysql"):
        from . import sql_baseline

        postgres = url.split("://", 1)[0].lower().startswith("postgres")
        (sql_baseline._pg_connect if postgres else sql_baseline._my_connect)(url).close()
