"""A small TCP proxy for fault tests: forward a request, then lose its reply.

::

    with DropReplyProxy("127.0.0.1", 6379) as proxy:
        store = open_store(f"redis://127.0.0.1:{proxy.port}/15")
        proxy.drop_reply_to(b"marker")      # the next request holding these bytes...
        store.set(("marker",), {"v": 1})    # ...reaches the server, its reply never comes back

The proxy relays bytes both ways between each client and the server. Once
armed with :meth:`DropReplyProxy.drop_reply_to`, the first data a client sends
that contains ``marker`` is forwarded to the server (with whatever the client
sends after it on that connection), but nothing more is relayed back: when the
server has answered (its reply went quiet for ``settle`` seconds, so the
request was executed) the proxy closes the client's connection. With
``refuse_after=True`` (the default) it also stops listening as soon as the
request arrives, so every reconnection is refused: the client saw its request
go out and can no longer find out what became of it.

Runs in daemon threads of the test process; :meth:`DropReplyProxy.close` (or
leaving the ``with`` block) stops it and closes every socket it opened.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

__all__ = ["DropReplyProxy"]

_CHUNK = 65536


class DropReplyProxy:
    """Forward TCP connections on ``127.0.0.1:port`` to ``host:target_port``."""

    def __init__(self, host: str, target_port: int, *, settle: float = 0.2) -> None:
        self.target = (host, target_port)
        self.settle = settle
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._muted: set[socket.socket] = set()  # server sides whose replies are withheld
        self._marker: bytes | None = None
        self._refuse_after = True
        self._closed = False
        self.dropped = threading.Event()  # set once a reply was withheld and its client cut off
        threading.Thread(target=self._accept, name="drop-reply-proxy", daemon=True).start()

    def drop_reply_to(self, marker: bytes, *, refuse_after: bool = True) -> None:
        """Withhold the reply to the next request containing ``marker`` (see the module docstring)."""
        with self._lock:
            self._marker = marker
            self._refuse_after = refuse_after
            self.dropped.clear()

    # ------------------------------------------------------------------ relaying

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # no longer listening
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._closed:
                    _close(client, server)
                    return
                self._sockets += [client, server]
            threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        """Client to server; arms the withholding of replies on the connection of the marked request."""
        while True:
            try:
                data = client.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                if server not in self._muted:
                    _close(client, server)
                return  # a muted connection is closed by _downstream once the server answered
            with self._lock:
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    self._muted.add(server)  # before the request goes out: its reply is not relayed
                    if self._refuse_after:
                        self._stop_listening()
            try:
                server.sendall(data)
            except OSError:
                _close(client, server)
                return

    def _downstream(self, server: socket.socket, client: socket.socket) -> None:
        """Server to client, until the connection is muted; then wait for the reply and cut off."""
        while True:
            try:
                data = server.recv(_CHUNK)
            except OSError:
                data = b""
            if server in self._muted:
                if data:
                    self._drain(server)
                self.dropped.set()
                _close(client, server)
                return
            if not data:
                _close(client, server)
                return
            try:
                client.sendall(data)
            except OSError:
                _close(client, server)
                return

    def _drain(self, server: socket.socket) -> None:
        """Read (and drop) the rest of the server's reply, until it is quiet for ``settle`` seconds."""
        server.settimeout(self.settle)
        with contextlib.suppress(OSError):
            while server.recv(_CHUNK):
                pass

    # ------------------------------------------------------------------ lifecycle

    def _stop_listening(self) -> None:
        # shutdown() first: it wakes the accepting thread and refuses new connections at once
        # (a bare close() leaves the socket listening while accept() still holds it)
        _close(self._listener)

    def close(self) -> None:
        """Stop listening and close every connection."""
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        self._stop_listening()
        _close(*sockets)

    def __enter__(self) -> DropReplyProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
