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
invalidations, which the cache relies on (a reply always reflects every
write whose invalidation came before it).

Lifecycle: the subscription is made synchronously by :meth:`start` (so a
cache knows at once whether it may cache), then kept by the thread. A lost
connection (error, EOF, or no answer to the ``PING`` sent after ``heartbeat``
idle seconds) calls ``sink.tracking_lost()`` and reconnects with
exponential backoff; ``sink.tracking_started()`` is called only once the
server has confirmed ``CLIENT TRACKING ON``. :meth:`close` wakes the thread
through a pipe and joins it. After ``fork()`` the child's copy is dead: it
never touches the parent's socket or thread (the owner makes a new one).
"""

from __future__ import annotations

import logging
import os
import random
import select
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol

__all__ = ["InvalidationListener", "InvalidationSink"]

log = logging.getLogger(__name__)

#: Keys per MGET sent for :meth:`InvalidationListener.fetch`.
_FETCH_CHUNK = 1000
_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 2.0
_PUSH = object()  # what the parser returns for a push message we handled


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
    """Internal: the connection is out of step or the sink failed: start over."""


class InvalidationListener:
    """One tracking connection and its thread. See the module docstring.

    Args:
        connect: returns a new, connected redis-py connection with ``protocol=3``.
        prefix: the BCAST prefix (``b""``: every key).
        sink: receives the events; held weakly (the thread stops once it is gone).
        address: where the server is, for log messages.
        heartbeat: idle seconds before a ``PING`` checks the connection.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        prefix: bytes,
        sink: InvalidationSink,
        *,
        address: str = "redis",
        heartbeat: float = 1.0,
    ) -> None:
        self.prefix = prefix
        self.address = address
        self.heartbeat = heartbeat
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
            if self._signalled or not self._pending:
                return
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
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()
        if thread is not None and thread.is_alive():
            return  # it exits at its next wake-up; leave it the pipe
        self._close_pipe()

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

    # ------------------------------------------------------------------ the thread

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

    def _subscribe(self) -> Any:
        conn = self._connect_fn()
        try:
            parser = conn._parser
            parser.set_invalidation_push_handler(self._on_push)
            parser.set_pubsub_push_handler(lambda message: _PUSH)
            args: list[Any] = ["CLIENT", "TRACKING", "ON", "BCAST"]
            if self.prefix:
                args += ["PREFIX", self.prefix]
            conn.send_command(*args)
            reply = self._read_reply(conn)
            if reply not in (b"OK", "OK"):
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
                    self._wait(
                        min(_BACKOFF_CAP, _BACKOFF_BASE * (1 << min(failures, 16))) * random.uniform(0.5, 1)
                    )
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
        poller = select.poll()
        poller.register(conn._sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        heartbeat_ms = max(1, int(self.heartbeat * 1000))
        while not self._stopping:
            if self._sink() is None:
                self._stopping = True
                return
            with self._lock:
                keys = list(self._pending)
                self._pending.clear()
                self._signalled = False
            if keys:
                self._fetch(conn, keys)
                continue
            if conn.can_read(0):
                if self._read_one(conn) is not _PUSH:
                    raise _Broken("an unexpected reply on the tracking connection")
                continue
            events = poller.poll(heartbeat_ms)
            if not events:
                conn.send_command("PING")
                self._read_reply(conn)
            elif any(fd == self._wake_r for fd, _ in events):
                self._drain_pipe()

    def _fetch(self, conn: Any, keys: list[bytes]) -> None:
        for i in range(0, len(keys), _FETCH_CHUNK):
            part = keys[i : i + _FETCH_CHUNK]
            conn.send_command("MGET", *part)
            values = self._read_reply(conn)
            sink = self._sink()
            if sink is None:
                return
            try:
                sink.fetched(dict(zip(part, values)))
            except Exception as exc:
                raise _Broken(f"the cache failed on fetched values: {exc!r}") from exc

    def _read_one(self, conn: Any) -> Any:
        self._sink_error: BaseException | None = None
        reply = conn.read_response(push_request=True)
        if self._sink_error is not None:
            raise _Broken(f"the cache failed on an invalidation: {self._sink_error!r}")
        return reply

    def _read_reply(self, conn: Any) -> Any:
        """The next reply that is not a push message (pushes are handled on the way)."""
        while True:
            reply = self._read_one(conn)
            if reply is not _PUSH:
                return reply

    def _on_push(self, message: Any) -> Any:
        """Called by the parser for each ``invalidate`` message."""
        sink = self._sink()
        if sink is not None:
            try:
                keys = message[1]
                sink.invalidated(None if keys is None else list(keys))
            except BaseException as exc:
                self._sink_error = exc
        return _PUSH


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
