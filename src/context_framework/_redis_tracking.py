"""Redis server-assisted client-side caching: a listener for invalidation messages.

:class:`InvalidationListener` keeps one dedicated RESP3 connection with
``CLIENT TRACKING ON BCAST PREFIX <prefix>`` and a daemon thread that reads
the ``invalidate`` push messages the server sends whenever a key under the
prefix is written, deleted, expired or evicted, by *any* client (our own
writes included: they come back as "echoes"). It hands them to a sink
(:class:`InvalidationSink`, e.g. ``CachedStore``'s cache).

Why RESP3 on one connection rather than RESP2 ``REDIRECT`` to a
``__redis__:invalidate`` subscriber: one connection carries both the
subscription and its messages, so there is one thing to watch for loss
(with ``REDIRECT`` the tracking connection and the subscriber can fail
separately, and RESP2 cannot report a broken redirection). The same
connection also answers ``MGET`` for :meth:`InvalidationListener.fetch`
(reads never change BCAST tracking), and replies arrive in order with the
invalidations, which the cache relies on: a reply reflects every write
whose invalidation came before it, and the sink sees them in that order.

The connection is opened (HELLO 3, AUTH, SELECT, TLS) by redis-py; after
that the thread owns the socket and parses it with a ``hiredis.Reader``
directly, pipelining its requests: under a flood of invalidations (the
echoes of a write loop) it wakes at most every ``_COALESCE`` seconds and
handles what arrived in one go, because one wake-up and a few redis-py
calls per message would fight the writing thread for the GIL. An isolated
message is handled as soon as it arrives.

Lifecycle: the subscription is made synchronously by :meth:`start` (so a
cache knows at once whether it may cache), then kept by the thread. A lost
connection (error, EOF, or no reply within ``reply_timeout`` to a request
or to the ``PING`` sent after ``heartbeat`` idle seconds) calls
``sink.tracking_lost()`` and reconnects with exponential backoff;
``sink.tracking_started()`` is called only once the server has confirmed
``CLIENT TRACKING ON``. :meth:`close` wakes the thread through a pipe and
joins it. After ``fork()`` the child's copy is dead: it never touches the
parent's socket or thread (the owner makes a new one).
"""

from __future__ import annotations

import logging
import os
import random
import select
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

hiredis: Any
try:
    import hiredis

    _PushNotification: Any = getattr(hiredis, "PushNotification", None)
except ImportError:  # pragma: no cover - the redis extra installs hiredis
    hiredis = None
    _PushNotification = None

__all__ = ["InvalidationListener", "InvalidationSink", "available"]

log = logging.getLogger(__name__)

#: Keys per MGET sent for :meth:`InvalidationListener.fetch`.
_FETCH_CHUNK = 1000
_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 2.0
#: Under a flood, seconds between two rounds of message handling.
_COALESCE = 0.001
_READ_SIZE = 1 << 16
_PING: tuple[Any, ...] = ("PING",)


def available() -> bool:
    """Whether tracking can run here (it needs hiredis >= 3.2, which tells pushes from replies)."""
    return _PushNotification is not None


class InvalidationSink(Protocol):
    """What the listener calls, always from its own thread."""

    def tracking_started(self) -> None:
        """The subscription is (again) in place: caching may resume."""

    def tracking_lost(self) -> None:
        """The subscription is gone: invalidations may have been missed."""

    def invalidated(self, keys: list[bytes] | None) -> None:
        """These Redis keys changed (``None``: every key, e.g. after ``FLUSHDB``)."""

    def fetched(self, values: dict[bytes, bytes | None]) -> None:
        """Current raw values of keys asked for with :meth:`InvalidationListener.fetch`."""


class _Broken(Exception):
    """Internal: the connection failed, is out of step, or the sink failed: start over."""


class InvalidationListener:
    """One tracking connection and its thread. See the module docstring.

    Args:
        connect: returns a new, connected redis-py connection with ``protocol=3``.
        prefix: the BCAST prefix (``b""``: every key).
        sink: receives the events; held weakly (the thread stops once it is gone).
        address: where the server is, for log messages.
        heartbeat: idle seconds before a ``PING`` checks the connection.
        reply_timeout: seconds a request may wait for its reply before the
            connection is considered lost.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        prefix: bytes,
        sink: InvalidationSink,
        *,
        address: str = "redis",
        heartbeat: float = 1.0,
        reply_timeout: float = 10.0,
    ) -> None:
        if not available():
            raise RuntimeError("Redis invalidation tracking needs hiredis >= 3.2")
        self.prefix = prefix
        self.address = address
        self.heartbeat = heartbeat
        self.reply_timeout = reply_timeout
        self._connect_fn = connect
        self._sink = weakref.ref(sink)
        self._lock = threading.Lock()
        self._pending: dict[bytes, None] = {}
        self._signalled = False
        self._stopping = False
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._pipe_open = True
        self._dead = False  # a copy inherited through fork()
        self.up = False
        _live.add(self)

    # ------------------------------------------------------------------ public

    def start(self) -> bool:
        """Subscribe now (on this thread), then start the thread; return whether subscribed.

        When the first attempt fails, the thread keeps retrying in the background.
        """
        try:
            self._conn = self._subscribe()
        except Exception as exc:
            log.warning("client tracking on %s failed (%s); retrying in the background", self.address, exc)
        else:
            self._set_up()
        self._thread = threading.Thread(
            target=self._run, name=f"context-framework-invalidations({self.address})", daemon=True
        )
        self._thread.start()
        return self.up

    def fetch(self, keys: Iterable[bytes]) -> None:
        """Ask for the current values of ``keys``: ``sink.fetched`` gets them (thread-safe)."""
        with self._lock:
            self._pending.update(dict.fromkeys(keys))
            if self._signalled or not self._pending or threading.current_thread() is self._thread:
                return  # the thread itself (a sink callback) sends them on its next round
            self._signalled = True
        self._wake()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and drop the connection."""
        if self._stopping:
            return
        self._stopping = True
        if self._dead:
            return
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is not None and thread.is_alive():
            return  # it exits (and cleans up) at its next wake-up
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()
        self._close_pipe()

    # ------------------------------------------------------------------ the wake-up pipe

    def _close_pipe(self) -> None:
        _live.discard(self)
        with self._lock:
            if not self._pipe_open:
                return
            self._pipe_open = False
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _wake(self) -> None:
        with self._lock:  # never write to a closed pipe's number: it may belong to someone else now
            if not self._pipe_open:
                return
            try:
                os.write(self._wake_w, b"x")
            except OSError:  # pipe full: already signalled
                pass

    def _wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early on :meth:`close`."""
        select.select([self._wake_r], [], [], seconds)
        self._drain_pipe()

    def _drain_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except OSError:
            pass

    # ------------------------------------------------------------------ the thread

    def _subscribe(self) -> Any:
        """A connection with tracking on (redis-py did the handshake; we own the socket now)."""
        conn = self._connect_fn()
        try:
            conn._cf_reader = reader = hiredis.Reader()
            args: tuple[Any, ...] = ("CLIENT", "TRACKING", "ON", "BCAST")
            if self.prefix:
                args += ("PREFIX", self.prefix)
            conn._sock.sendall(hiredis.pack_command(args))
            while True:
                reply = reader.gets()
                if reply is not False:
                    break
                data = conn._sock.recv(_READ_SIZE)  # the socket timeout bounds the wait
                if not data:
                    raise _Broken("the server closed the connection")
                reader.feed(data)
            if reply != b"OK":
                raise _Broken(f"CLIENT TRACKING replied {reply!r}")
        except BaseException:
            conn.disconnect()
            raise
        return conn

    def _run(self) -> None:
        failures = 0
        while not self._stopping:
            conn = self._conn
            if conn is None:
                try:
                    conn = self._subscribe()
                except Exception as exc:
                    failures += 1
                    if failures == 1 or failures % 20 == 0:
                        log.warning("client tracking on %s: reconnecting failed (%s)", self.address, exc)
                    delay = min(_BACKOFF_CAP, _BACKOFF_BASE * (1 << min(failures, 16)))
                    self._wait(delay * random.uniform(0.5, 1.0))
                    continue
                if self._stopping:
                    conn.disconnect()
                    break
                self._conn = conn
                failures = 0
                self._set_up()
            try:
                self._serve(conn)
            except Exception as exc:
                if not self._stopping:
                    log.warning("client tracking on %s lost (%s); reconnecting", self.address, exc)
            self._conn = None
            conn.disconnect()
            self._set_down()
        self._set_down()
        self._close_pipe()

    def _set_up(self) -> None:
        self.up = True
        sink = self._sink()
        if sink is None:
            self._stopping = True
            return
        sink.tracking_started()

    def _set_down(self) -> None:
        with self._lock:
            self._pending.clear()
        if not self.up:
            return
        self.up = False
        sink = self._sink()
        if sink is not None:
            sink.tracking_lost()

    def _serve(self, conn: Any) -> None:
        """Handle messages until the connection fails or :meth:`close` is called."""
        sock = conn._sock
        reader = conn._cf_reader
        buf = bytearray(_READ_SIZE)
        expect: deque[tuple[Any, float]] = deque()  # requests sent, oldest first
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        heartbeat_ms = max(1, int(self.heartbeat * 1000))
        tls_pending = getattr(sock, "pending", None)
        while not self._stopping:
            handled = self._handle(reader, expect)
            with self._lock:
                keys = list(self._pending)
                self._pending.clear()
                self._signalled = False
            now = time.monotonic()
            if keys:
                out = []
                for i in range(0, len(keys), _FETCH_CHUNK):
                    chunk = keys[i : i + _FETCH_CHUNK]
                    out.append(hiredis.pack_command(("MGET", *chunk)))
                    expect.append((chunk, now))
                sock.sendall(b"".join(out))
            if expect and now - expect[0][1] > self.reply_timeout:
                raise _Broken(f"no reply within {self.reply_timeout} s")
            if handled:
                time.sleep(_COALESCE)  # more is probably on its way: take it in one go
                timeout = 0
            else:
                timeout = heartbeat_ms
            if tls_pending is not None and tls_pending():
                events = [(sock.fileno(), select.POLLIN)]
            else:
                events = poller.poll(timeout)
            if not events:
                if timeout and not expect:
                    sock.sendall(hiredis.pack_command(_PING))
                    expect.append((_PING, time.monotonic()))
                continue
            for fd, _ in events:
                if fd == self._wake_r:
                    self._drain_pipe()
                else:
                    n = sock.recv_into(buf)
                    if not n:
                        raise _Broken("the server closed the connection")
                    reader.feed(buf, 0, n)

    def _handle(self, reader: Any, expect: deque[tuple[Any, float]]) -> int:
        """Hand every complete message read so far to the sink, in order; return how many."""
        sink = self._sink()
        if sink is None:
            self._stopping = True
            return 0
        count = 0
        keys: list[bytes] = []  # invalidations not yet handed over, merged
        try:
            while True:
                message = reader.gets()
                if message is False:
                    break
                count += 1
                if type(message) is _PushNotification:
                    if len(message) == 2 and message[0] == b"invalidate":
                        if message[1] is None:
                            keys = []
                            sink.invalidated(None)
                        else:
                            keys += message[1]
                    continue
                # A reply: it reflects every write whose invalidation came before it.
                if keys:
                    sink.invalidated(keys)
                    keys = []
                if not expect:
                    raise _Broken(f"an unexpected reply on the tracking connection: {message!r:.80}")
                request, _ = expect.popleft()
                if isinstance(message, Exception):
                    raise _Broken(f"Redis replied {message}")
                if request is not _PING:
                    sink.fetched(dict(zip(request, message)))
            if keys:
                sink.invalidated(keys)
        except _Broken:
            raise
        except Exception as exc:
            raise _Broken(f"the cache failed on a message: {exc!r}") from exc
        return count


_live: weakref.WeakSet[InvalidationListener] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The thread does not exist in the child and the socket belongs to the parent:
    # make each inherited listener inert (its owner subscribes anew when asked).
    for listener in list(_live):
        listener._dead = True
        listener._stopping = True
        listener.up = False
        listener._lock = threading.Lock()
        listener._conn = None  # redis-py never shuts down a socket of another process
        listener._close_pipe()  # only if still open: a closed one's numbers may be reused


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
