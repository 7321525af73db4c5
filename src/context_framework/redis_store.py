"""``RedisContextStore``: metadata in Redis (standalone or Redis Cluster), shared by processes.

Open it with ``RedisContextStore(host="localhost", port=6379, db=0)`` or by URL::

    redis://[user:password@]host[:port][/db]      plain TCP (default port 6379, db 0)
    rediss://...                                  TLS
    unix:///path/to/redis.sock?db=N               a Unix socket (``redis+unix://`` too)
    redis+cluster://host:port[,host:port...]      Redis Cluster (``rediss+cluster://``: TLS);
    redis://host:port?cluster=1                   the same

Query options: ``namespace``, ``max_value_size``, ``prefix``, ``ttl``,
``socket_timeout``, ``socket_connect_timeout``, ``retries``, ``db``,
``cluster``, ``ssl``, ``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile``,
``ssl_keyfile``, ``max_connections``, ``username``, ``password``. Needs the
``redis`` extra (``pip install 'context-framework[redis]'``: redis-py with
hiredis) and Redis >= 6.0.

Layout. One Redis string per entry::

    key   = prefix bytes (default b"cf:") + keys.encode_namespace(namespace) + keys.encode_key(key)
    value = values.encode_value(metadata): compact JSON text, exactly as every store writes it

The namespace is one codec string element (``0x02``, UTF-8, ``0x00``), so a
namespace's keys, and the keys under a key prefix within it, are exactly the
Redis keys that start with known bytes. ``scan``/``count``/``items``/``clear``
use ``SCAN MATCH <escaped bytes>*`` (never ``KEYS``), page by page, drop the
duplicates SCAN may return, re-check each key with ``keys.has_prefix`` and
decode it with its types intact. SCAN walks the whole keyspace of the
database (Redis has no range index), so these cost time in proportion to
everything in the database, not to the namespace.

Batches are native and chunked (``_CHUNK`` = 1,000 entries): ``set_many``
sends ``MSET`` (pipelined ``SET ... PX`` when the store has a TTL),
``get_many`` ``MGET``, ``delete_many``/``clear`` ``UNLINK``. Everything is
validated and encoded before the first byte is sent. A batch is not one
transaction: chunks are applied one after the other, and when the connection
fails for good the error says how many chunks (and entries) were applied and
whether the failing chunk may have been partly applied.

``update`` and ``increment`` are Lua scripts (``EVALSHA``, cached, with an
``EVAL`` fallback on ``NOSCRIPT``): atomic across clients and exact on the
JSON text, never through Lua's lossy cjson; see
:mod:`context_framework._redis_lua` for their design.

TTL. ``ttl=`` (seconds) gives every write a time to live: ``set``,
``set_many``, ``update`` and ``increment`` all (re)start it. Without a store
TTL, ``set``/``set_many`` replace the entry *and* drop any TTL it had (plain
``SET`` semantics), while ``update``/``increment`` keep the remaining TTL.
:meth:`RedisContextStore.expire` sets (or with ``None`` removes) the TTL of
one key, :meth:`RedisContextStore.time_to_live` reads it.

Connections. One redis-py connection pool per store backend, shared by its
namespace views. Each server also keeps one dedicated connection for
uncontended calls (taken with a non-blocking lock; a thread that finds it
busy takes a pooled one), which skips the pool's bookkeeping on the hot path.
Transient failures (refused or dropped connections, timeouts, a server still
loading) are retried ``retries`` times with exponential backoff and jitter.
A command that is not idempotent (``increment``, deletes) is only retried
when it certainly was not sent. A write that fails for good after any of its
attempts was sent (say its reply was lost, then every reconnection refused)
says it may or may not have been applied. Every redis-py exception becomes a
:class:`~context_framework.exceptions.ContextStoreError` naming the server,
the operation and the cause (kept as ``__cause__``); a failed authentication
says so, naming the user. No message and no ``repr`` contains the password.

Redis Cluster (``cluster=True``) goes through redis-py's ``RedisCluster`` for
the topology; commands are routed by hash slot to the primaries directly
(``MOVED``/``ASK``/``TRYAGAIN`` handled, the slot map refreshed after a
failure). Batches are grouped by slot (``MSET``/``MGET``/``UNLINK`` of one
slot each) and sent to every node of a chunk before any reply is read. SCAN
walks every primary. A key prefix with a hash tag (``prefix="{ctx}:"``) puts
the whole store in one slot, at the cost of all load on one node.

Processes. A store pickles by configuration (password included; ``repr``
never shows it): the copy opens its own pool. After ``fork()`` the child
never touches its parent's sockets: it opens new connections on first use.
"""

from __future__ import annotations

import inspect
import math
import os
import random
import ssl
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

from ._gc import gc_paused
from ._redis_lua import INCREMENT, UPDATE, Script
from .base_store import BaseContextStore, Metadata, Number, check_increment, check_prefix, iter_pairs
from .exceptions import (
    ContextConfigurationError,
    ContextSerializationError,
    ContextStoreClosedError,
    ContextStoreError,
    ContextValueError,
    MissingDependencyError,
    UnsupportedKeyError,
)
from .keys import Key, decode_key, encode_key, encode_keys, encode_namespace, encode_prefix, has_prefix
from .urls import check_host, decode, mask_secrets, mask_url, split_host, split_url
from .values import (
    DEFAULT_MAX_VALUE_SIZE,
    _too_large,
    dumps_json,
    encode_value,
    encode_values,
    loads_json,
    prepare_value,
)

try:
    import redis
    from redis import exceptions as rexc
    from redis.backoff import NoBackoff
    from redis.crc import key_slot
    from redis.retry import Retry
except ImportError as _exc:  # pragma: no cover - exercised without the extra
    raise MissingDependencyError.for_extra("redis", "redis") from _exc

_hiredis_pack: Any = None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - redis-py without hiredis (or an old hiredis)
    pass

__all__ = ["RedisContextStore"]

#: Entries (or keys) per chunk of the batch paths.
_CHUNK = 1000
#: COUNT hint of each SCAN call.
_SCAN_COUNT = 1000
#: MOVED/ASK/TRYAGAIN/CLUSTERDOWN redirections followed for one command.
_MAX_REDIRECTS = 16
#: First backoff delay and its cap, in seconds (then x2 per failure, with jitter).
_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 2.0

_CONN_ERRORS = (rexc.ConnectionError, rexc.TimeoutError, OSError)
# Connection errors that retrying cannot fix.
_FINAL_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls
    for cls in (
        rexc.AuthenticationError,
        getattr(rexc, "AuthorizationError", None),
        getattr(rexc, "AuthenticationWrongNumberOfArgsError", None),
    )
    if cls is not None
)
_REDIRECTS = (rexc.MovedError, rexc.AskError, rexc.TryAgainError, rexc.ClusterDownError)
_GLOB_SPECIAL = frozenset(b"\\*?[]")


class _IncrementResultError(ContextValueError, ContextSerializationError):
    """The result of an increment cannot be stored (outside the 64-bit range, or not finite).

    A :class:`ContextValueError`, and also the :class:`ContextSerializationError`
    that the other stores raise when the same result fails their value check.
    """


# --------------------------------------------------------------------------- connections


class _NotSent(Exception):
    """Internal: getting a usable connection failed, so the command was certainly not sent."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class _Failure(Exception):
    """Internal: a command failed for good. The store turns it into a ContextStoreError.

    ``sent``: the command reached a server (a reply, or a connection lost after
    sending). ``lost``: an attempt, any attempt and not only the last, sent the
    command and lost its connection before the reply, so it may have been
    applied: a reply lost on the first attempt and reconnections refused on the
    retries is still a command that may have been applied.
    """

    def __init__(
        self, error: BaseException, address: str, attempts: int, sent: bool, lost: bool = False
    ) -> None:
        super().__init__(error)
        self.error = error
        self.address = address
        self.attempts = attempts
        self.sent = sent
        self.lost = lost


def _takes_no_command_name() -> bool:
    parameters = list(inspect.signature(redis.ConnectionPool.get_connection).parameters.values())
    return len(parameters) < 2 or parameters[1].default is not inspect.Parameter.empty


if _takes_no_command_name():

    def _get_connection(pool: Any) -> Any:
        return pool.get_connection()

else:  # pragma: no cover - redis-py < 5.3 requires a command name

    def _get_connection(pool: Any) -> Any:
        return pool.get_connection("_")


if _hiredis_pack is not None:

    def _send(conn: Any, args: tuple[Any, ...]) -> None:
        conn.send_packed_command((_hiredis_pack(args),), False)

    def _send_many(conn: Any, commands: list[tuple[Any, ...]]) -> None:
        pack = _hiredis_pack
        conn.send_packed_command((b"".join([pack(c) for c in commands]),), False)

else:  # pragma: no cover - redis-py without hiredis

    def _send(conn: Any, args: tuple[Any, ...]) -> None:
        conn.send_command(*args, check_health=False)

    def _send_many(conn: Any, commands: list[tuple[Any, ...]]) -> None:
        conn.send_packed_command(conn.pack_commands(commands), False)


_live_nodes: weakref.WeakSet[_Node] = weakref.WeakSet()


class _Node:
    """One server: its redis-py pool plus a dedicated connection for uncontended calls."""

    __slots__ = ("__weakref__", "address", "conn", "lock", "pool")

    def __init__(self, pool: Any, address: str) -> None:
        self.pool = pool
        self.address = address
        self.conn: Any = None
        self.lock = threading.Lock()
        _live_nodes.add(self)

    def checkout(self, verify: bool = False) -> tuple[Any, bool]:
        """A connected connection and whether it is the dedicated one (see :meth:`checkin`).

        ``verify``: make sure a kept connection was not closed by the server
        meanwhile (for commands that must not be resent). Raises ``_NotSent``.
        """
        lock = self.lock
        if lock.acquire(False):
            conn = self.conn
            try:
                if conn is None:
                    conn = self.conn = _get_connection(self.pool)
                elif conn._sock is None:
                    conn.connect()
                elif verify:
                    try:
                        stale = conn.can_read()  # EOF (closed by the server) or stray data
                    except _CONN_ERRORS:
                        stale = True
                    if stale:
                        conn.disconnect()
                        conn.connect()
            except BaseException as exc:
                if conn is not None:
                    conn.disconnect()
                lock.release()
                if isinstance(exc, _CONN_ERRORS):
                    raise _NotSent(exc) from exc
                raise
            return conn, True
        try:
            return _get_connection(self.pool), False
        except _CONN_ERRORS as exc:
            raise _NotSent(exc) from exc

    def checkin(self, conn: Any, dedicated: bool) -> None:
        if dedicated:
            self.lock.release()
        else:
            self.pool.release(conn)

    def call(self, args: tuple[Any, ...], idempotent: bool = True, asking: bool = False) -> Any:
        """Send one command and return its reply (a ResponseError reply is raised)."""
        conn, dedicated = self.checkout(not idempotent)
        try:
            if asking:
                _send_many(conn, [(b"ASKING",), args])
                conn.read_response()
            else:
                _send(conn, args)
            return conn.read_response()
        except _CONN_ERRORS:
            conn.disconnect()
            raise
        finally:
            if dedicated:
                self.lock.release()
            else:
                self.pool.release(conn)

    def forget(self) -> None:
        """Drop the dedicated connection (its socket is closed by the pool)."""
        self.conn = None


def _after_fork_in_child() -> None:
    # The parent's sockets must not be used by the child; redis-py's pools reset
    # themselves on first use in a new process, the dedicated connections here.
    for node in list(_live_nodes):
        node.conn = None
        node.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _backoff(failures: int) -> float:
    """Exponential backoff with jitter: about base * 2**(failures - 1), capped."""
    delay = min(_BACKOFF_CAP, _BACKOFF_BASE * (1 << min(failures - 1, 20)))
    return delay * random.uniform(0.5, 1.0)


class _Engine:
    """Runs commands on one server or a cluster, with retries. Raises only ``_Failure``."""

    cluster: ClassVar[bool] = False

    def __init__(self, retries: int) -> None:
        self.retries = retries

    # -- routing (overridden by the cluster engine)

    def node_for_key(self, key: bytes) -> _Node:
        raise NotImplementedError

    def node_for_slot(self, slot: int) -> _Node:
        raise NotImplementedError

    def scan_nodes(self) -> list[_Node]:
        raise NotImplementedError

    def refresh(self) -> None:
        """Called after a connection failure, before retrying (cluster: reload the slot map)."""

    def close(self) -> None:
        raise NotImplementedError

    # -- retries

    def _retry_or_raise(
        self, exc: BaseException, sent: bool, idempotent: bool, failures: int, address: str
    ) -> int:
        """Sleep and return the new failure count, or raise ``_Failure``."""
        if isinstance(exc, _FINAL_ERRORS) or (sent and not idempotent) or failures >= self.retries:
            raise _Failure(exc, address, failures + 1, sent, sent) from exc
        failures += 1
        time.sleep(_backoff(failures))
        try:
            self.refresh()
        except _Failure:
            pass  # the retry reports the failure
        return failures

    def execute(self, key: bytes, args: tuple[Any, ...], idempotent: bool = True) -> Any:
        """Run ``args`` (a command on ``key``) on the node that holds ``key``."""
        node = self.node_for_key(key)
        failures = redirects = 0
        asking = lost = False  # lost: an attempt was sent, then its connection failed
        try:
            while True:
                try:
                    return node.call(args, idempotent, asking)
                except rexc.ResponseError as exc:
                    if not (self.cluster and isinstance(exc, _REDIRECTS)) or redirects >= _MAX_REDIRECTS:
                        raise _Failure(exc, node.address, failures + 1, True) from exc
                    redirects += 1
                    node, asking = self._redirect(exc, key, redirects)  # a redirect reply: not applied
                    continue
                except _NotSent as exc:
                    error = exc.error
                except _CONN_ERRORS as exc:
                    error, lost = exc, True
                failures = self._retry_or_raise(error, lost, idempotent, failures, node.address)
                node, asking = self.node_for_key(key), False
        except _Failure as failure:  # also a later failure (no node for the slot, a reply)
            failure.lost = failure.lost or lost
            raise

    def _redirect(self, exc: BaseException, key: bytes, count: int) -> tuple[_Node, bool]:
        raise _Failure(exc, "?", 1, True)

    def execute_on(self, node: _Node, args: tuple[Any, ...]) -> Any:
        """Run an idempotent, key-less command (``SCAN``, ``PING``) on ``node``."""
        failures = 0
        sent = False
        while True:
            try:
                return node.call(args)
            except rexc.ResponseError as exc:
                raise _Failure(exc, node.address, failures + 1, True) from exc
            except _NotSent as exc:
                error = exc.error
            except _CONN_ERRORS as exc:
                error, sent = exc, True
            failures = self._retry_or_raise(error, sent, True, failures, node.address)

    def evalsha(self, script: Script, key: bytes, args: Iterable[Any], idempotent: bool) -> Any:
        """Run ``script`` on ``key`` by SHA1, sending its source when the server lacks it."""
        tail = (b"1", key, *args)
        try:
            return self.execute(key, (b"EVALSHA", script.sha, *tail), idempotent)
        except _Failure as failure:
            if not isinstance(failure.error, rexc.NoScriptError):
                raise
        return self.execute(key, (b"EVAL", script.source, *tail), idempotent)

    def run(self, commands: list[tuple[int, tuple[Any, ...]]], idempotent: bool) -> list[Any]:
        """Run many single-slot commands ``(slot, args)``; replies in order.

        A reply may be a ResponseError instance (not raised). Connection
        failures are retried (the whole list) only when ``idempotent`` or when
        nothing was sent.
        """
        failures = 0
        lost = False  # an attempt was sent, then its connection failed
        try:
            while True:
                try:
                    replies = self._run_once(commands, not idempotent)
                except _NotSent as exc:
                    error, address = exc.error, getattr(exc, "address", "?")  # before any send
                except _CONN_ERRORS as exc:
                    error, lost, address = exc, True, getattr(exc, "address", "?")
                else:
                    return self._follow_redirects(commands, replies, idempotent)
                failures = self._retry_or_raise(error, lost, idempotent, failures, address)
        except _Failure as failure:  # also a later failure (no node for a slot)
            failure.lost = failure.lost or lost
            failure.sent = failure.sent or lost
            raise

    def _follow_redirects(
        self, commands: list[tuple[int, tuple[Any, ...]]], replies: list[Any], idempotent: bool
    ) -> list[Any]:
        if self.cluster:
            for i, reply in enumerate(replies):
                if isinstance(reply, _REDIRECTS):
                    args = commands[i][1]
                    try:
                        replies[i] = self.execute(args[1], args, idempotent)
                    except _Failure as failure:
                        replies[i] = failure.error
        return replies

    def _run_once(self, commands: list[tuple[int, tuple[Any, ...]]], verify: bool) -> list[Any]:
        """Send every command (grouped by node) before reading any reply."""
        groups: dict[_Node, list[int]] = {}
        for i, (slot, _) in enumerate(commands):
            node = self.node_for_slot(slot)
            group = groups.get(node)
            if group is None:
                groups[node] = [i]
            else:
                group.append(i)
        held: list[tuple[_Node, Any, bool, list[int]]] = []
        replies: list[Any] = [None] * len(commands)
        current = "?"  # the server being talked to, for the error message
        try:
            for target, indexes in groups.items():
                current = target.address
                conn, dedicated = target.checkout(verify)
                held.append((target, conn, dedicated, indexes))
            for target, conn, _, indexes in held:
                current = target.address
                _send_many(conn, [commands[i][1] for i in indexes])
            for target, conn, _, indexes in held:
                current = target.address
                read = conn.read_response
                for i in indexes:
                    try:
                        replies[i] = read()
                    except rexc.ResponseError as exc:
                        replies[i] = exc
            return replies
        except (_NotSent, *_CONN_ERRORS) as exc:
            exc.address = current  # type: ignore[union-attr]
            for _, conn, _, _ in held:
                conn.disconnect()  # replies may be pending: the connection is out of step
            raise
        finally:
            for target, conn, dedicated, _ in held:
                target.checkin(conn, dedicated)


class _Standalone(_Engine):
    """One Redis server (TCP, TLS or Unix socket)."""

    def __init__(self, pool: Any, address: str, retries: int) -> None:
        super().__init__(retries)
        self.node = _Node(pool, address)
        self.pool = pool

    def node_for_key(self, key: bytes) -> _Node:
        return self.node

    def node_for_slot(self, slot: int) -> _Node:
        return self.node

    def scan_nodes(self) -> list[_Node]:
        return [self.node]

    def close(self) -> None:
        self.node.forget()
        self.pool.disconnect()


class _Cluster(_Engine):
    """A Redis Cluster: redis-py's ``RedisCluster`` keeps the slot map, we route commands."""

    cluster = True

    def __init__(self, client: Any, retries: int) -> None:
        super().__init__(retries)
        self.client = client
        self.nodes: dict[str, _Node] = {}
        self.lock = threading.Lock()

    def _node(self, cnode: Any) -> _Node:
        redis_client = cnode.redis_connection
        if redis_client is None:
            redis_client = self.client.get_redis_connection(cnode)
        pool = redis_client.connection_pool
        node = self.nodes.get(cnode.name)
        if node is None or node.pool is not pool:
            with self.lock:
                node = self.nodes.get(cnode.name)
                if node is None or node.pool is not pool:
                    node = self.nodes[cnode.name] = _Node(pool, cnode.name)
        return node

    def node_for_slot(self, slot: int) -> _Node:
        try:
            cnode = self.client.nodes_manager.slots_cache[slot][0]
        except (KeyError, IndexError):
            self.refresh()
            try:
                cnode = self.client.nodes_manager.slots_cache[slot][0]
            except (KeyError, IndexError):
                error = rexc.ClusterDownError(f"hash slot {slot} is not served by any node")
                raise _Failure(error, "cluster", 1, False) from None
        return self._node(cnode)

    def node_for_key(self, key: bytes) -> _Node:
        return self.node_for_slot(key_slot(key))

    def scan_nodes(self) -> list[_Node]:
        return [self._node(cnode) for cnode in self.client.get_primaries()]

    def refresh(self) -> None:
        try:
            self.client.nodes_manager.initialize()
        except rexc.RedisError as exc:
            raise _Failure(exc, "cluster", 1, False) from exc

    def _redirect(self, exc: BaseException, key: bytes, count: int) -> tuple[_Node, bool]:
        if isinstance(exc, rexc.MovedError):
            self.refresh()
            return self.node_for_key(key), False
        if isinstance(exc, rexc.AskError):
            target = self.client.get_node(host=exc.host, port=exc.port)
            if target is None:
                self.refresh()
                target = self.client.get_node(host=exc.host, port=exc.port)
                if target is None:
                    raise _Failure(exc, f"{exc.host}:{exc.port}", 1, True) from exc
            return self._node(target), True
        # TRYAGAIN (a slot is being migrated) or CLUSTERDOWN (a failover): wait, then look again.
        time.sleep(min(0.05 * count, 0.5))
        if isinstance(exc, rexc.ClusterDownError):
            self.refresh()
        return self.node_for_key(key), False

    def close(self) -> None:
        for node in self.nodes.values():
            node.forget()
        self.client.close()


class _ClosedEngine:
    """Stands in for the engine of a closed store: every use raises."""

    __slots__ = ("_what",)

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> Any:
        raise ContextStoreClosedError(f"{self._what} is closed; open a new store to continue")


# --------------------------------------------------------------------------- helpers


def _glob_escape(data: bytes) -> bytes:
    """``data`` as a literal in a Redis glob pattern."""
    if not _GLOB_SPECIAL.intersection(data):
        return data
    out = bytearray()
    for b in data:
        if b in _GLOB_SPECIAL:
            out.append(0x5C)
        out.append(b)
    return bytes(out)


def _check_number(name: str, value: Any, *, minimum: float = 0, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= minimum
    ):
        more = " or None" if allow_none else ""
        raise ContextConfigurationError(f"{name} must be a finite number > {minimum:g}{more}, got {value!r}")
    return value


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ContextConfigurationError(f"{name} must be an int {bound}, got {value!r}")
    return value


def _parse_hosts(text: str, url: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` pairs of a comma-separated host list (``localhost:6379`` if empty)."""
    hosts = []
    for part in text.split(","):
        part = part.strip()
        if part:
            host, port = split_host(part, 6379, url)
            hosts.append((host or "localhost", port))
    return hosts or [("localhost", 6379)]


_CERT_REQS = ("none", "optional", "required")


def _check_cert_reqs(value: Any) -> Any:
    """``ssl_cert_reqs`` as redis-py takes it: None, an ``ssl.VerifyMode``, or none/optional/required."""
    if value is None or isinstance(value, ssl.VerifyMode):
        return value
    if isinstance(value, str) and value.lower() in _CERT_REQS:
        return value.lower()
    raise ContextConfigurationError(
        f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)} (or None, or an ssl.VerifyMode), got {value!r}"
    )


# --------------------------------------------------------------------------- the store


class RedisContextStore(BaseContextStore):
    """A store in Redis or Redis Cluster; see the module docstring for the design.

    ``prefix``: bytes (or text) put before every Redis key of this store.
    ``ttl``: seconds to live for every entry written (``None``: no expiry).
    ``socket_timeout``/``socket_connect_timeout``: seconds; ``retries``:
    retries of a transient connection failure. ``cluster=True`` talks to a
    Redis Cluster (``startup_nodes``: more ``(host, port)`` pairs to discover
    it from). ``ssl=True`` (or a ``rediss://`` URL) uses TLS, with the
    ``ssl_*`` options of redis-py. ``unix_socket_path`` connects through a
    Unix socket instead of TCP.
    """

    scheme = "redis"
    url_options: ClassVar[dict[str, type]] = {
        "db": int,
        "prefix": str,
        "ttl": float,
        "socket_timeout": float,
        "socket_connect_timeout": float,
        "retries": int,
        "cluster": bool,
        "ssl": bool,
        "ssl_cert_reqs": str,
        "ssl_ca_certs": str,
        "ssl_certfile": str,
        "ssl_keyfile": str,
        "max_connections": int,
        "username": str,
        "password": str,
    }

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        *,
        username: str | None = None,
        password: str | None = None,
        namespace: str = "",
        max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE,
        prefix: str | bytes = "cf:",
        socket_timeout: float | None = 10.0,
        socket_connect_timeout: float | None = None,
        retries: int = 3,
        ttl: float | None = None,
        cluster: bool = False,
        startup_nodes: Iterable[tuple[str, int]] | None = None,
        ssl: bool = False,
        ssl_cert_reqs: str | None = "required",
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        unix_socket_path: str | None = None,
        max_connections: int | None = None,
    ) -> None:
        super().__init__(namespace=namespace, max_value_size=max_value_size)
        if not isinstance(host, str) or not host:
            raise ContextConfigurationError(f"host must be a non-empty string, got {host!r}")
        self._host = check_host(host)
        self._port = _check_int("port", port, 1, 65535)
        self._db = _check_int("db", db, 0)
        for name, value in (("username", username), ("password", password)):
            if value is not None and not isinstance(value, str):
                raise ContextConfigurationError(
                    f"{name} must be a string or None, got {type(value).__name__}"
                )
        self._username = username
        self._password = password
        if isinstance(prefix, str):
            prefix_bytes = prefix.encode("utf-8", "surrogatepass")
        elif isinstance(prefix, bytes):
            prefix_bytes = prefix
        else:
            raise ContextConfigurationError(f"prefix must be str or bytes, got {type(prefix).__name__}")
        self._prefix = prefix
        self._prefix_bytes = prefix_bytes
        self._socket_timeout = _check_number("socket_timeout", socket_timeout, allow_none=True)
        self._socket_connect_timeout = _check_number(
            "socket_connect_timeout", socket_connect_timeout, allow_none=True
        )
        self._retries = _check_int("retries", retries, 0, 100)
        self._ttl = _check_number("ttl", ttl, allow_none=True)
        self._ttl_ms = b"%d" % max(1, round(ttl * 1000)) if ttl is not None else b"0"
        self._px: tuple[bytes, ...] = (b"PX", self._ttl_ms) if ttl is not None else ()
        self._cluster = bool(cluster)
        self._startup_nodes = [
            (check_host(str(h)), _check_int("port", p, 1, 65535)) for h, p in (startup_nodes or ())
        ]
        self._ssl = bool(ssl)
        self._ssl_options = {
            "ssl_cert_reqs": _check_cert_reqs(ssl_cert_reqs),
            "ssl_ca_certs": ssl_ca_certs,
            "ssl_certfile": ssl_certfile,
            "ssl_keyfile": ssl_keyfile,
        }
        self._unix_socket_path = unix_socket_path
        self._max_connections = (
            None if max_connections is None else _check_int("max_connections", max_connections, 1)
        )
        if self._cluster and self._db != 0:
            raise ContextConfigurationError(f"Redis Cluster has only database 0, got db={db!r}")
        if self._cluster and unix_socket_path is not None:
            raise ContextConfigurationError("cluster=True cannot be combined with a unix socket path")
        self._limit = b"%d" % (max_value_size or 0)
        self._bind_namespace()
        self._engine: Any = None
        self._engine = self._open()

    # ------------------------------------------------------------------ connecting

    def _connection_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "username": self._username,
            "password": self._password,
            "socket_timeout": self._socket_timeout,
            "socket_connect_timeout": (
                self._socket_connect_timeout
                if self._socket_connect_timeout is not None
                else self._socket_timeout
            ),
            "retry": Retry(NoBackoff(), 0),  # retries are ours (see _Engine)
        }
        if self._max_connections is not None:
            kwargs["max_connections"] = self._max_connections
        return kwargs

    def _open(self) -> _Engine:
        kwargs = self._connection_kwargs()
        engine: _Engine
        try:
            if self._cluster:
                from redis.cluster import ClusterNode, RedisCluster

                if self._ssl:
                    kwargs.update(ssl=True, **self._ssl_options)
                nodes = [ClusterNode(self._host, self._port)]
                nodes += [ClusterNode(h, p) for h, p in self._startup_nodes]
                kwargs.pop("retry")
                engine = self._connect_cluster(
                    lambda: RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), 0), **kwargs)
                )
            else:
                if self._unix_socket_path is not None:
                    kwargs.update(
                        connection_class=redis.UnixDomainSocketConnection, path=self._unix_socket_path
                    )
                else:
                    kwargs.update(host=self._host, port=self._port)
                    if self._ssl:
                        kwargs.update(connection_class=redis.SSLConnection, **self._ssl_options)
                pool = redis.ConnectionPool(db=self._db, **kwargs)
                engine = _Standalone(pool, self._address(), self._retries)
                engine.execute_on(engine.node, (b"PING",))
        except _Failure as failure:
            raise self._fail("open", failure) from failure.error
        except rexc.RedisError as exc:
            raise self._fail("open", _Failure(exc, self._address(), 1, False)) from exc
        return engine

    def _connect_cluster(self, make: Any) -> _Engine:
        failures = 0
        while True:
            try:
                return _Cluster(make(), self._retries)
            except (*_CONN_ERRORS, rexc.RedisClusterException) as exc:
                if isinstance(exc, _FINAL_ERRORS) or failures >= self._retries or _auth_failure(exc):
                    raise _Failure(exc, self._address(), failures + 1, False) from exc
                failures += 1
                time.sleep(_backoff(failures))

    # ------------------------------------------------------------------ errors

    def _address(self) -> str:
        if self._unix_socket_path is not None:
            return self._unix_socket_path
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    def _scrub(self, text: str) -> str:
        return mask_secrets(text, secrets=(self._password,))

    def _fail(self, op: str, failure: _Failure, *, write: bool = False) -> ContextStoreError:
        """The ContextStoreError for ``failure`` during ``op`` (never shows the password).

        ``write``: the command changes data, so one that any attempt sent may have
        been applied, and the message says so.
        """
        exc = failure.error
        if isinstance(exc, ContextStoreClosedError):
            return exc
        if failure.address == "cluster":
            address = f"the cluster at {self._address()}"
        elif failure.address == "?":
            address = self._address()
        else:
            address = failure.address
        tries = f" after {failure.attempts} attempts" if failure.attempts > 1 else ""
        detail = self._scrub(f"{type(exc).__name__}: {exc}")
        head = f"{self!r}: {op} failed"
        if _auth_failure(exc):
            user = self._username or "default"
            message = (
                f"{head}: authentication failed for user {user!r} at {address}; "
                f"check the username and password ({detail})"
            )
        elif isinstance(exc, (rexc.TimeoutError, TimeoutError)):
            message = (
                f"{head}: Redis at {address} did not answer within the socket timeout{tries} "
                f"({detail}){_unknown_outcome(failure, write)}"
            )
        elif isinstance(exc, _CONN_ERRORS):
            reach = "lost the connection to" if failure.lost else "cannot reach"
            outcome = _unknown_outcome(failure, write)
            message = f"{head}: {reach} Redis at {address}{tries} ({detail}){outcome}"
        elif isinstance(exc, rexc.RedisClusterException):
            message = f"{head}: cannot use the Redis Cluster at {address}{tries} ({detail})"
        elif isinstance(exc, rexc.ResponseError):
            message = f"{head}: Redis at {address} replied: {detail}"
        else:
            message = f"{head}: {detail}"
        if not isinstance(exc, (rexc.TimeoutError, TimeoutError, *_CONN_ERRORS)):
            message += _unknown_outcome(failure, write)  # e.g. an earlier attempt's reply was lost
        return ContextStoreError(message)

    def _decode(self, raw: bytes) -> Metadata:
        try:
            return loads_json(raw.decode("utf-8"))  # type: ignore[no-any-return]
        except (UnicodeDecodeError, ValueError) as exc:
            raise ContextStoreError(f"{self!r}: stored value is not valid JSON: {raw!r:.80} ({exc})") from exc

    def _decode_many(self, raws: list[Any]) -> list[Metadata | None]:
        out: list[Metadata | None] = []
        append = out.append
        loads = loads_json
        try:
            for raw in raws:
                append(None if raw is None else loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, ValueError, AttributeError) as exc:
            raise ContextStoreError(f"{self!r}: a stored value is not valid JSON ({exc})") from exc
        return out

    # ------------------------------------------------------------------ core

    def set(self, key: Key, value: Mapping[str, Any]) -> None:
        """Store ``value`` under ``key`` (one ``SET``; with ``PX`` when the store has a TTL)."""
        k = self._kp + encode_key(key)
        args = (b"SET", k, encode_value(value, self.max_value_size), *self._px)
        try:
            self._engine.execute(k, args)
        except _Failure as failure:
            raise self._fail("set", failure, write=True) from failure.error

    def get(self, key: Key, default: Any = None) -> Metadata | None:
        k = self._kp + encode_key(key)
        try:
            raw = self._engine.execute(k, (b"GET", k))
        except _Failure as failure:
            raise self._fail("get", failure) from failure.error
        if raw is None:
            return default  # type: ignore[no-any-return]
        return self._decode(raw)

    def delete(self, key: Key) -> bool:
        k = self._kp + encode_key(key)
        try:
            return bool(self._engine.execute(k, (b"UNLINK", k), False))
        except _Failure as failure:
            raise self._fail("delete", failure, write=True) from failure.error

    def exists(self, key: Key) -> bool:
        k = self._kp + encode_key(key)
        try:
            return bool(self._engine.execute(k, (b"EXISTS", k)))
        except _Failure as failure:
            raise self._fail("exists", failure) from failure.error

    # ------------------------------------------------------------------ TTL

    def expire(self, key: Key, seconds: float | None) -> bool:
        """Give ``key`` a time to live of ``seconds`` (``None``: keep it forever).

        Returns whether the key exists. ``seconds <= 0`` deletes it at once.
        The next ``set`` of the key drops this TTL (or applies the store's
        ``ttl``); ``update`` and ``increment`` keep it unless the store has a ``ttl``.
        """
        k = self._kp + encode_key(key)
        try:
            if seconds is None:
                if self._engine.execute(k, (b"PERSIST", k)):
                    return True
                return bool(self._engine.execute(k, (b"EXISTS", k)))
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds != seconds:
                raise ContextValueError(f"expire seconds must be a number or None, got {seconds!r}")
            if seconds <= 0:
                return bool(self._engine.execute(k, (b"UNLINK", k), False))
            ms = max(1, round(min(seconds, 1e12) * 1000))
            return bool(self._engine.execute(k, (b"PEXPIRE", k, b"%d" % ms)))
        except _Failure as failure:
            raise self._fail("expire", failure, write=True) from failure.error

    def time_to_live(self, key: Key) -> float | None:
        """Seconds left before ``key`` expires; ``None`` if it has no TTL or does not exist."""
        k = self._kp + encode_key(key)
        try:
            ms = self._engine.execute(k, (b"PTTL", k))
        except _Failure as failure:
            raise self._fail("time_to_live", failure) from failure.error
        return None if ms < 0 else ms / 1000

    @property
    def ttl(self) -> float | None:
        """The time to live (seconds) given to every write, or ``None``."""
        return self._ttl  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ client-side caching

    def track_invalidations(self, sink: Any, *, heartbeat: float = 1.0) -> Any:
        """An :class:`~context_framework._redis_tracking.InvalidationListener` for this store.

        Once started (``listener.start()``) it tracks (``CLIENT TRACKING ON
        BCAST``) every key under the store's ``prefix``, all namespaces
        included, on its own RESP3 connection, and reports to ``sink``.
        Standalone Redis only: Redis Cluster raises
        :class:`ContextConfigurationError`. The caller closes the listener.
        """
        if self._cluster:
            raise ContextConfigurationError(
                f"{self!r}: invalidation tracking is not supported on Redis Cluster"
            )
        self._check_open()
        from ._redis_tracking import InvalidationListener, available

        if not available():
            raise ContextConfigurationError(
                "invalidation tracking needs hiredis >= 3.2: pip install 'context-framework[redis]'"
            )
        return InvalidationListener(
            self._tracking_connection, self._prefix_bytes, sink, address=self._address(), heartbeat=heartbeat
        )

    def _tracking_connection(self) -> Any:
        """A new, connected RESP3 connection to this store's server (not from the pool)."""
        kwargs = self._connection_kwargs()
        kwargs.pop("max_connections", None)
        cls: Any = redis.Connection
        if self._unix_socket_path is not None:
            cls = redis.UnixDomainSocketConnection
            kwargs["path"] = self._unix_socket_path
        else:
            kwargs.update(host=self._host, port=self._port)
            if self._ssl:
                cls = redis.SSLConnection
                kwargs.update(self._ssl_options)
        conn = cls(db=self._db, protocol=3, client_name="context-framework-tracking", **kwargs)
        conn.connect()
        return conn

    # ------------------------------------------------------------------ scans

    def _pattern(self, prefix: Any) -> tuple[bytes, bytes]:
        """(SCAN MATCH pattern, encoded key prefix or b"") for ``prefix`` in this namespace."""
        prefix = check_prefix(prefix)
        encoded = b"" if not prefix else encode_prefix(prefix)
        return _glob_escape(self._kp + encoded) + b"*", encoded

    def _raw_pages(self, op: str, prefix: Any) -> Iterator[list[bytes]]:
        """Pages of the raw Redis keys under ``prefix``: deduplicated and exactly filtered."""
        pattern, encoded = self._pattern(prefix)
        engine = self._engine
        nodes = engine.scan_nodes()
        n = len(self._kp)
        count = b"%d" % _SCAN_COUNT

        def generate() -> Iterator[list[bytes]]:
            seen: set[bytes] = set()
            for node in nodes:
                cursor = b"0"
                while True:
                    if self._closed:
                        raise self._closed_error()
                    try:
                        cursor, page = engine.execute_on(
                            node, (b"SCAN", cursor, b"MATCH", pattern, b"COUNT", count)
                        )
                    except _Failure as failure:
                        raise self._fail(op, failure) from failure.error
                    keep = []
                    for raw in page:
                        if raw not in seen:
                            seen.add(raw)
                            if not encoded or has_prefix(raw[n:], encoded):
                                keep.append(raw)
                    if keep:
                        yield keep
                    if cursor in (b"0", 0):
                        break

        return generate()

    def _decode_key(self, raw: bytes) -> Key:
        try:
            return decode_key(raw[len(self._kp) :])
        except UnsupportedKeyError as exc:
            raise ContextStoreError(
                f"{self!r}: the Redis key {raw!r:.100} under this store's prefix is not a "
                f"context key written by this library ({exc})"
            ) from exc

    def scan(self, prefix: tuple[Any, ...] | None = None) -> Iterator[Key]:
        """Yield the keys under ``prefix`` (``SCAN``, page by page; in no particular order)."""
        pages = self._raw_pages("scan", prefix)
        decode = self._decode_key
        return (decode(raw) for page in pages for raw in page)

    def items(self, prefix: tuple[Any, ...] | None = None) -> Iterator[tuple[Key, Metadata]]:
        """Yield ``(key, metadata)`` under ``prefix``: each SCAN page is read with ``MGET``."""
        pages = self._raw_pages("items", prefix)

        def generate() -> Iterator[tuple[Key, Metadata]]:
            for page in pages:
                found = self._mget("items", page)
                for raw in page:
                    value = found.get(raw)
                    if value is not None:
                        yield self._decode_key(raw), self._decode(value)

        return generate()

    def count(self, prefix: tuple[Any, ...] | None = None) -> int:
        return sum(len(page) for page in self._raw_pages("count", prefix))

    def list_keys(self, prefix: tuple[Any, ...] | None = None) -> list[Key]:
        return list(self.scan(prefix))

    def clear(self, prefix: tuple[Any, ...] | None = None) -> int:
        """Delete every key under ``prefix`` (``SCAN`` then ``UNLINK`` page by page); return how many."""
        deleted = 0
        for page in self._raw_pages("clear", prefix):
            deleted += self._unlink("clear", page, deleted)
        return deleted

    # ------------------------------------------------------------------ batches

    def _slot_groups(self, keys: Iterable[bytes]) -> dict[int, list[bytes]]:
        engine = self._engine
        groups: dict[int, list[bytes]] = {}
        if not engine.cluster:
            groups[0] = list(keys)
            return groups
        for k in keys:
            s = key_slot(k)
            group = groups.get(s)
            if group is None:
                groups[s] = [k]
            else:
                group.append(k)
        return groups

    def _key_chunks(self, name: bytes, keys: list[bytes]) -> list[list[tuple[int, tuple[Any, ...]]]]:
        """Commands ``name key...`` (one slot each), in chunks of about ``_CHUNK`` keys."""
        chunks: list[list[tuple[int, tuple[Any, ...]]]] = []
        current: list[tuple[int, tuple[Any, ...]]] = []
        size = 0
        for s, group in self._slot_groups(keys).items():
            for i in range(0, len(group), _CHUNK):
                part = group[i : i + _CHUNK]
                current.append((s, (name, *part)))
                size += len(part)
                if size >= _CHUNK:
                    chunks.append(current)
                    current, size = [], 0
        if current:
            chunks.append(current)
        return chunks

    def _chunk_error(
        self, op: str, failure: _Failure, chunks_done: int, chunks: int, entries_done: int, entries: int
    ) -> ContextStoreError:
        """The error of a batch write that failed after ``chunks_done`` chunks were applied."""
        error = self._fail(op, failure, write=True)
        if chunks <= 1:
            return error
        failing = (
            "the failing chunk was sent, so it may have been written in whole or in part"
            if failure.sent
            else "the failing chunk was not sent"
        )
        return ContextStoreError(
            f"{op}: {chunks_done:,} of {chunks:,} chunks ({entries_done:,} of {entries:,} entries) were "
            f"written before the connection failed; {failing}, and the remaining chunks were not sent. "
            f"{error}"
        )

    def set_many(
        self, items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]]
    ) -> None:
        """Store many entries: ``MSET`` in chunks (pipelined ``SET PX`` with a TTL).

        Every key and value is validated before anything is sent. Chunks are
        applied in order; a failure names how many were written.
        """
        pairs = list(iter_pairs(items))
        if not pairs:
            self._check_open()
            return
        engine = self._engine
        with gc_paused():  # builds only acyclic objects
            keys = encode_keys([k for k, _ in pairs], self._kp)
            texts = encode_values([v for _, v in pairs], self.max_value_size)
            del pairs
            chunks: list[list[tuple[int, tuple[Any, ...]]]] = []
            sizes: list[int] = []
            px = self._px
            if not engine.cluster:
                step = _CHUNK
                for i in range(0, len(keys), step):
                    ks, vs = keys[i : i + step], texts[i : i + step]
                    if px:
                        chunks.append([(0, (b"SET", k, v, *px)) for k, v in zip(ks, vs)])
                    else:
                        flat: list[Any] = [None] * (2 * len(ks))
                        flat[0::2] = ks
                        flat[1::2] = vs
                        chunks.append([(0, (b"MSET", *flat))])
                    sizes.append(len(ks))
            else:
                groups: dict[int, list[Any]] = {}
                for k, v in zip(keys, texts):
                    s = key_slot(k)
                    group = groups.get(s)
                    if group is None:
                        groups[s] = [k, v]
                    else:
                        group += (k, v)
                current: list[tuple[int, tuple[Any, ...]]] = []
                size = 0
                for s, flat in groups.items():
                    if px:
                        current.extend(
                            (s, (b"SET", flat[j], flat[j + 1], *px)) for j in range(0, len(flat), 2)
                        )
                    else:
                        current.append((s, (b"MSET", *flat)))
                    size += len(flat) // 2
                    if size >= _CHUNK:
                        chunks.append(current)
                        sizes.append(size)
                        current, size = [], 0
                if current:
                    chunks.append(current)
                    sizes.append(size)
            del keys, texts
        total = sum(sizes)
        done = 0
        for n, (chunk, size) in enumerate(zip(chunks, sizes)):
            try:
                replies = engine.run(chunk, True)
            except _Failure as failure:
                raise self._chunk_error("set_many", failure, n, len(chunks), done, total) from failure.error
            for reply in replies:
                if isinstance(reply, Exception):
                    bad = _Failure(reply, engine.node_for_slot(chunk[0][0]).address, 1, True)
                    raise self._chunk_error("set_many", bad, n, len(chunks), done, total) from reply
            done += size

    def _mget(self, op: str, keys: list[bytes]) -> dict[bytes, Any]:
        """Raw values of distinct ``keys`` (absent ones map to ``None``)."""
        found: dict[bytes, Any] = {}
        engine = self._engine
        for chunk in self._key_chunks(b"MGET", keys):
            try:
                replies = engine.run(chunk, True)
            except _Failure as failure:
                raise self._fail(op, failure) from failure.error
            for (_, args), reply in zip(chunk, replies):
                if isinstance(reply, Exception):
                    bad = _Failure(reply, engine.node_for_key(args[1]).address, 1, True)
                    raise self._fail(op, bad) from reply
                found.update(zip(args[1:], reply))
        return found

    def get_many(self, keys: Iterable[Key]) -> list[Metadata | None]:
        """Metadata of each key in input order (``None`` if absent): ``MGET`` in chunks."""
        with gc_paused():  # builds only acyclic objects
            encoded = encode_keys(keys, self._kp)
            if not encoded:
                self._check_open()
                return []
            distinct = list(dict.fromkeys(encoded))
            engine = self._engine
            if not engine.cluster:
                raws: list[Any] = []
                for i in range(0, len(distinct), _CHUNK):
                    part = distinct[i : i + _CHUNK]
                    try:
                        raws.extend(engine.execute(part[0], (b"MGET", *part)))
                    except _Failure as failure:
                        raise self._fail("get_many", failure) from failure.error
                if len(distinct) == len(encoded):
                    return self._decode_many(raws)
                found = dict(zip(distinct, raws))
            else:
                found = self._mget("get_many", distinct)
            get = found.get
            return self._decode_many([get(k) for k in encoded])

    def _unlink(self, op: str, keys: list[bytes], before: int = 0) -> int:
        """``UNLINK`` distinct ``keys`` in chunks; return how many existed."""
        engine = self._engine
        chunks = self._key_chunks(b"UNLINK", keys)
        deleted = 0
        for n, chunk in enumerate(chunks):
            try:
                replies = engine.run(chunk, False)
            except _Failure as failure:
                error = self._fail(op, failure, write=True)
                raise ContextStoreError(
                    f"{op}: {before + deleted:,} keys were deleted ({n:,} of {len(chunks):,} chunks of this "
                    f"batch) before the connection failed; "
                    + ("the failing chunk may have been partly applied. " if failure.sent else "")
                    + str(error)
                ) from failure.error
            for (_, args), reply in zip(chunk, replies):
                if isinstance(reply, Exception):
                    bad = _Failure(reply, engine.node_for_key(args[1]).address, 1, True)
                    raise self._fail(op, bad) from reply
                deleted += reply
        return deleted

    def delete_many(self, keys: Iterable[Key]) -> int:
        """Delete many keys (``UNLINK`` in chunks); return how many existed."""
        encoded = encode_keys(keys, self._kp)
        self._check_open()
        if not encoded:
            return 0
        return self._unlink("delete_many", list(dict.fromkeys(encoded)))

    # ------------------------------------------------------------------ atomic read-modify-write

    def _script(
        self, op: str, script: Script, k: bytes, args: list[Any], idempotent: bool
    ) -> tuple[int, Any]:
        try:
            code, payload = self._engine.evalsha(script, k, args, idempotent)
        except _Failure as failure:
            raise self._fail(op, failure, write=True) from failure.error
        if code == 1:
            raise _too_large(int(payload), self.max_value_size or 0)
        if code == 2:
            raise ContextStoreError(f"{self!r}: {op} failed: {payload.decode()} (key {k!r:.100})")
        return code, payload

    def update(self, key: Key, patch: Mapping[str, Any]) -> Metadata:
        """Shallow-merge ``patch`` into ``key`` (created if absent), atomically (a Lua script)."""
        patch = prepare_value(patch, self.max_value_size)
        k = self._kp + encode_key(key)
        args: list[Any] = [self._limit, self._ttl_ms]
        for name, value in patch.items():
            args.append(dumps_json(name))
            args.append(dumps_json(value))
        _, text = self._script("update", UPDATE, k, args, True)
        return self._decode(text)

    def increment(self, key: Key, field: str, by: Number = 1) -> Number:
        """Add ``by`` to ``field`` (0 if absent), atomically and exactly (a Lua script)."""
        check_increment(field, by)
        if type(by) not in (int, float):
            by = float(by)  # as base_store.apply_increment does
        k = self._kp + encode_key(key)
        kind = b"i" if type(by) is int else b"f"
        args = [dumps_json(field), dumps_json(by), kind, self._limit, self._ttl_ms]
        code, payload = self._script("increment", INCREMENT, k, args, False)
        text = payload.decode("utf-8")
        if code == 0:
            return loads_json(text)  # type: ignore[no-any-return]
        if code == 3:
            try:
                old: Any = loads_json(text)
            except ValueError:
                old = text
            raise ContextValueError(
                f"cannot increment field {field!r} of {key!r}: it holds {old!r}, not a number"
            )
        if code == 4:
            raise _IncrementResultError(
                f"cannot increment field {field!r} of {key!r} by {by!r}: the result {text} is outside "
                "[-2**63, 2**64), the integer range metadata can hold; nothing was changed"
            )
        raise _IncrementResultError(
            f"cannot increment field {field!r} of {key!r} by {by!r}: the result is {text}, which JSON "
            "cannot hold; nothing was changed"
        )

    # ------------------------------------------------------------------ namespaces and lifecycle

    def _bind_namespace(self) -> None:
        try:
            self._kp = self._prefix_bytes + encode_namespace(self._namespace)
        except Exception:
            raise ContextConfigurationError(
                f"namespace {self._namespace!r} is not valid Unicode (lone surrogate)"
            ) from None

    def _mark_closed(self) -> None:
        super()._mark_closed()
        self._engine = _ClosedEngine(repr(self))

    def _close_backend(self) -> None:
        engine = self._engine
        if isinstance(engine, _Engine):
            try:
                engine.close()
            except rexc.RedisError as exc:
                raise ContextStoreError(f"{self!r}: close failed: {self._scrub(str(exc))}") from exc

    def _config(self) -> dict[str, Any]:
        """Constructor arguments that reopen this store (used by pickling; includes the password)."""
        return {
            "host": self._host,
            "port": self._port,
            "db": self._db,
            "username": self._username,
            "password": self._password,
            "max_value_size": self.max_value_size,
            "prefix": self._prefix,
            "socket_timeout": self._socket_timeout,
            "socket_connect_timeout": self._socket_connect_timeout,
            "retries": self._retries,
            "ttl": self._ttl,
            "cluster": self._cluster,
            "startup_nodes": list(self._startup_nodes),
            "ssl": self._ssl,
            **self._ssl_options,
            "unix_socket_path": self._unix_socket_path,
            "max_connections": self._max_connections,
        }

    # ------------------------------------------------------------------ URLs and repr

    @classmethod
    def _parse_url(cls, base: str) -> dict[str, Any]:
        """Constructor arguments from a ``redis://``, ``rediss://``, ``unix://`` or cluster URL."""
        parts = split_url(base)
        scheme = parts.scheme
        credentials = {"username": parts.user, "password": parts.password}
        if scheme in ("unix", "redis+unix"):
            if parts.hosts or not parts.path:
                raise ContextConfigurationError(
                    f"a Unix socket URL looks like unix:///path/to/redis.sock?db=0, got {mask_url(base)!r}"
                )
            return {"unix_socket_path": "/" + decode(parts.path, "socket path", base), **credentials}
        if scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
            raise ContextConfigurationError(f"not a Redis URL: {mask_url(base)!r}")
        hosts = _parse_hosts(parts.hosts, base)
        kwargs: dict[str, Any] = {
            "host": hosts[0][0],
            "port": hosts[0][1],
            **credentials,
            "ssl": scheme.startswith("rediss"),
        }
        if scheme.endswith("+cluster"):
            kwargs["cluster"] = True
        if len(hosts) > 1:
            if not scheme.endswith("+cluster"):
                raise ContextConfigurationError(
                    f"several hosts are only allowed in a redis+cluster:// URL, got {mask_url(base)!r}"
                )
            kwargs["startup_nodes"] = hosts[1:]
        path = parts.path.strip("/")
        if path:
            if not (path.isascii() and path.isdigit()):
                raise ContextConfigurationError(
                    "the path of a Redis URL is the database number (redis://host:6379/0), "
                    f"got {mask_url(base)!r}"
                )
            kwargs["db"] = int(path)
        return kwargs

    def _describe(self) -> str:
        if self._unix_socket_path is not None:
            where = f"unix://{self._unix_socket_path}?db={self._db}"
        else:
            scheme = ("rediss" if self._ssl else "redis") + ("+cluster" if self._cluster else "")
            user = f"{self._username}@" if self._username else ""
            where = f"{scheme}://{user}{self._address()}" + ("" if self._cluster else f"/{self._db}")
        if self._prefix != "cf:":
            where += f", prefix={self._prefix!r}"
        return where


def _unknown_outcome(failure: _Failure, write: bool) -> str:
    """The note for a write that an attempt sent before its connection failed ("" otherwise)."""
    if not (write and failure.lost):
        return ""
    return "; it was sent before the connection failed, so it may or may not have been applied"


_AUTH_MARKERS = ("WRONGPASS", "NOAUTH", "invalid username-password", "Authentication required")


def _auth_failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is an authentication failure."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, _FINAL_ERRORS):
            return True
        text = str(exc)
        if any(marker in text for marker in _AUTH_MARKERS) or text.startswith("AUTH "):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
