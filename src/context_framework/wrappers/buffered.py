"""``BufferedStore``: write-behind batching over any store, with read-your-writes.

Writes (``set``, ``delete`` and their batches) are validated at once — a bad
key or value raises in the caller, as on any store — and kept in a buffer,
one entry per key (a later write to a key replaces the earlier one). The
buffer goes to the inner store through its batch path (``delete_many`` then
``set_many``) when it holds ``max_items`` keys (in a background thread, so
the caller goes on), ``flush_interval`` seconds after the first buffered
write, on :meth:`BufferedStore.flush`, on ``close()`` and at interpreter exit.

Reads see this process's unflushed writes: ``get``/``get_many``/``exists``
look in the buffer (and in the batch being sent) before the inner store;
``scan``, ``items``, ``count`` and ``clear`` flush first. ``update`` and
``increment`` merge into a buffered value when the key has one, else they run
on the inner store (atomically there), so a key's writes keep their order.

Failures: a batch that fails is kept and resent with exponential backoff
(writes are idempotent: resending is safe) for up to ``retry_timeout``
seconds. If it still fails, the writes stay buffered and the next operation,
``flush()`` or ``close()`` raises :class:`~context_framework.ContextStoreError`
(with the driver error as ``__cause__``); a later flush tries again. Nothing
is dropped silently. When the buffer holds ``max_pending`` unsent writes
(buffered plus in flight), writers wait for the flush, so memory stays bounded.

What a crash loses: writes live in this process until the inner store
acknowledges them. If the process is killed (``SIGKILL``, OOM killer, power
loss) at most the unacknowledged writes are lost: never more than
``max_pending`` (default ``4 * max_items``), and at most ``max_items`` plus
one batch in flight while the store keeps up. A normal exit, an uncaught
exception or ``SIGTERM`` handled by Python flush through ``atexit``.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..base_store import (
    ContextStore,
    Metadata,
    Number,
    apply_increment,
    check_increment,
    increment_result,
    iter_pairs,
)
from ..exceptions import (
    ContextConfigurationError,
    ContextError,
    ContextStoreClosedError,
    ContextStoreError,
)
from ..in_memory_context_store import (
    _canonical,
    _canonical_batch,
    _fast_entry,
    _freeze,
    _original,
    _thaw,
    fast_str_limit,
)
from ..keys import Key
from ..values import prepare_value
from .base import WrapperStore

__all__ = ["BufferedStore"]

_DELETED: Any = object()  # a buffered delete
_MISSING: Any = object()

# pending/in-flight writes: namespace -> {canonical key: (key, entry or _DELETED)}
_Writes = dict[str, dict[Any, tuple[Key, Any]]]


def _check_positive(name: str, value: Any, kind: type, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
        raise ContextConfigurationError(f"{name} must be a positive {kind.__name__}, got {value!r}")
    return value


class _Buffer:
    """The state every view of one BufferedStore shares."""

    def __init__(self, max_items: int, max_pending: int, flush_interval: float | None, retry_timeout: float):
        self.max_items = max_items
        self.max_pending = max_pending
        self.flush_interval = flush_interval
        self.retry_timeout = retry_timeout
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.flush_lock = threading.Lock()  # one batch in flight at a time
        self.pending: _Writes = {}
        self.inflight: _Writes = {}
        self.n_pending = 0
        self.n_inflight = 0
        self.first_write = 0.0  # monotonic time of the oldest pending write
        self.root: Any = None  # the inner store of the BufferedStore that owns this buffer
        self.inners: dict[str, Any] = {}  # namespace -> a view of root bound to it, for flushing
        self.error: BaseException | None = None  # a failure to report to the next caller
        self.thread: threading.Thread | None = None
        self.stopping = False
        self.pid = os.getpid()
        self.flushes = 0
        self.failures = 0

    # ------------------------------------------------------------------ bookkeeping (lock held)

    def put(self, namespace: str, ckey: Any, key: Key, entry: Any) -> None:
        space = self.pending.get(namespace)
        if space is None:
            space = self.pending[namespace] = {}
        if ckey not in space:
            if not self.n_pending:
                self.first_write = time.monotonic()
            self.n_pending += 1
        space[ckey] = (key, entry)

    def lookup(self, namespace: str, ckey: Any) -> Any:
        """The buffered entry of a key (or _DELETED), else _MISSING."""
        space = self.pending.get(namespace)
        if space is not None:
            op = space.get(ckey)
            if op is not None:
                return op[1]
        space = self.inflight.get(namespace)
        if space is not None:
            op = space.get(ckey)
            if op is not None:
                return op[1]
        return _MISSING

    def due(self) -> bool:
        if self.n_pending >= self.max_items:
            return True
        return bool(
            self.n_pending
            and self.flush_interval is not None
            and time.monotonic() - self.first_write >= self.flush_interval
        )


class BufferedStore(WrapperStore):
    """Write-behind buffer over ``inner``; see the module docstring for the guarantees.

    Args:
        inner: the store the writes go to.
        max_items: buffered keys that start a background flush (default 1000).
        flush_interval: seconds after the first buffered write when the buffer is
            flushed anyway (default 1.0; ``None``: only by size, ``flush()``, close, exit).
        max_pending: unsent writes (buffered plus in flight) at which writers wait
            (default ``4 * max_items``). Bounds memory and what a crash can lose.
        retry_timeout: seconds a failing batch is retried before the failure is
            reported (default 30).
        close_inner: whether ``close()`` closes ``inner`` too.
    """

    keeps_keys = True

    def __init__(
        self,
        inner: ContextStore,
        *,
        max_items: int = 1000,
        flush_interval: float | None = 1.0,
        max_pending: int | None = None,
        retry_timeout: float = 30.0,
        close_inner: bool = True,
    ) -> None:
        _check_positive("max_items", max_items, int)
        _check_positive("flush_interval", flush_interval, float, allow_none=True)
        _check_positive("retry_timeout", retry_timeout, float)
        if max_pending is None:
            max_pending = 4 * max_items
        _check_positive("max_pending", max_pending, int)
        if max_pending < max_items:
            raise ContextConfigurationError(
                f"max_pending ({max_pending}) must be at least max_items ({max_items})"
            )
        super().__init__(inner, close_inner=close_inner)
        self._buf = _Buffer(max_items, max_pending, flush_interval, retry_timeout)
        self._buf.root = self.inner
        self._buf.inners[self._namespace] = self.inner
        self._fast_len = fast_str_limit(self.max_value_size)
        _LIVE.add(self)

    # ------------------------------------------------------------------ options

    @property
    def max_items(self) -> int:
        return self._buf.max_items

    @property
    def flush_interval(self) -> float | None:
        return self._buf.flush_interval

    @property
    def pending_count(self) -> int:
        """Writes not yet acknowledged by the inner store (buffered plus in flight)."""
        return self._buf.n_pending + self._buf.n_inflight

    def _config(self) -> dict[str, Any]:
        buf = self._buf
        return {
            "max_items": buf.max_items,
            "flush_interval": buf.flush_interval,
            "max_pending": buf.max_pending,
            "retry_timeout": buf.retry_timeout,
            "close_inner": self.close_inner,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # the copy reopens the inner store by its configuration: send what it should see first
        self.flush()
        return super().__reduce__()

    def _bind_namespace(self) -> None:
        buf = self._buf
        with buf.lock:
            if self._namespace not in buf.inners:
                # the buffer's own view, so that closing this wrapper view cannot break a flush
                base = buf.root.namespace
                relative = self._namespace[len(base) + 1 :] if base else self._namespace
                buf.inners[self._namespace] = buf.root.with_namespace(relative)

    def _close_view(self) -> None:
        self.flush()

    # ------------------------------------------------------------------ writes

    def _entry(self, value: Any) -> Any:
        entry = _fast_entry(value, self._fast_len)
        if entry is None:
            entry = _freeze(prepare_value(value, self.max_value_size))
        return entry

    def set(self, key: Key, value: Mapping[str, Any]) -> None:
        self._set_normalized(_canonical(key), value, key)

    def _set_normalized(self, ckey: Any, value: Mapping[str, Any], key: Any = _MISSING) -> None:
        """``set`` for a key already in canonical form (the pandas adapter's fast path)."""
        self._set_entry(ckey, self._entry(value), key)

    def _set_entry(self, ckey: Any, entry: Any, key: Any = None) -> None:
        """``set`` of a validated, private, never-mutated entry (the in-memory store's form:
        see ``in_memory_context_store._freeze``) under a canonical key. A cache above
        hands its own entry down here instead of having it checked and copied again."""
        if key is None or key is _MISSING:
            key = ckey if type(ckey) is not bytes else _original(ckey)
        self._check_usable()
        buf = self._buf
        with buf.lock:
            self._make_room(1)
            buf.put(self._namespace, ckey, key, entry)
            if buf.n_pending >= buf.max_items:
                self._wake()

    def set_many(
        self, items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]]
    ) -> None:
        self._check_usable()
        pairs = list(iter_pairs(items))
        ckeys = _canonical_batch([k for k, _ in pairs])
        entry = self._entry
        entries = [entry(v) for _, v in pairs]  # everything validated before anything is buffered
        self._put_many(list(zip(ckeys, [k for k, _ in pairs], entries)))

    def _put_many(self, ops: list[tuple[Any, Key, Any]]) -> None:
        buf = self._buf
        ns = self._namespace
        step = buf.max_items
        for start in range(0, len(ops), step):
            with buf.lock:
                self._make_room(min(step, len(ops) - start))
                for ckey, key, entry in ops[start : start + step]:
                    buf.put(ns, ckey, key, entry)
                if buf.n_pending >= buf.max_items:
                    self._wake()

    def delete(self, key: Key) -> bool:
        self._check_usable()
        ckey = _canonical(key)
        existed = self._exists(ckey, key)
        buf = self._buf
        with buf.lock:
            self._make_room(1)
            buf.put(self._namespace, ckey, key, _DELETED)
            if buf.n_pending >= buf.max_items:
                self._wake()
        return existed

    def delete_many(self, keys: Iterable[Key]) -> int:
        self._check_usable()
        keys = list(keys)
        ckeys = _canonical_batch(keys)
        found = self._get_entries(ckeys, keys)
        self._put_many([(c, k, _DELETED) for c, k in zip(ckeys, keys)])
        # a key named twice counts once, as on every store
        return len({c for c, e in zip(ckeys, found) if e is not None})

    def update(self, key: Key, patch: Mapping[str, Any]) -> Metadata:
        self._check_usable()
        patch = self._check_value(patch)
        ckey = _canonical(key)
        buf = self._buf
        with buf.lock:
            current = buf.lookup(self._namespace, ckey)
            if current is not _MISSING:
                merged = patch if current is _DELETED else {**_thaw(current), **patch}
                self._check_merged_size(merged)
                buf.put(self._namespace, ckey, key, _freeze(merged))
                return _thaw(_freeze(merged))
        return self.inner.update(key, patch)  # type: ignore[no-any-return]

    def increment(self, key: Key, field: str, by: Number = 1) -> Number:
        self._check_usable()
        check_increment(field, by)
        ckey = _canonical(key)
        buf = self._buf
        with buf.lock:
            current = buf.lookup(self._namespace, ckey)
            if current is not _MISSING:
                new = apply_increment(None if current is _DELETED else _thaw(current), key, field, by)
                result = increment_result(new, key, field)
                self._check_merged_size(new)
                buf.put(self._namespace, ckey, key, _freeze(new))
                return result
        return self.inner.increment(key, field, by)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ reads

    def get(self, key: Key, default: Any = None) -> Metadata | None:
        return self._get_normalized(_canonical(key), default, key)

    def _get_normalized(self, ckey: Any, default: Any = None, key: Any = _MISSING) -> Metadata | None:
        """``get`` for a key already in canonical form (the pandas adapter's fast path)."""
        if self._buf.error is not None or self._closed:
            self._check_usable()
        buf = self._buf
        with buf.lock:
            entry = buf.lookup(self._namespace, ckey)
        if entry is _MISSING:
            return self.inner.get(ckey if key is _MISSING else key, default)  # type: ignore[no-any-return]
        if entry is _DELETED:
            return default  # type: ignore[no-any-return]
        return _thaw(entry)

    def _get_entries(self, ckeys: list[Any], keys: list[Key]) -> list[Any]:
        """Buffered entries (or inner values) of many keys; None where absent."""
        buf = self._buf
        with buf.lock:
            found = [buf.lookup(self._namespace, c) for c in ckeys]
        missing = [i for i, e in enumerate(found) if e is _MISSING]
        if missing:
            values = self.inner.get_many([keys[i] for i in missing])
            for i, value in zip(missing, values):
                found[i] = value
        return [None if e is _DELETED else e for e in found]

    def get_many(self, keys: Iterable[Key]) -> list[Metadata | None]:
        self._check_usable()
        keys = list(keys)
        ckeys = _canonical_batch(keys)
        buf = self._buf
        with buf.lock:
            found = [buf.lookup(self._namespace, c) for c in ckeys]
        out: list[Metadata | None] = [None if e is _DELETED or e is _MISSING else _thaw(e) for e in found]
        missing = [i for i, e in enumerate(found) if e is _MISSING]
        if missing:
            for i, value in zip(missing, self.inner.get_many([keys[i] for i in missing])):
                out[i] = value
        return out

    def _exists(self, ckey: Any, key: Key) -> bool:
        with self._buf.lock:
            entry = self._buf.lookup(self._namespace, ckey)
        if entry is _MISSING:
            return bool(self.inner.exists(key))
        return entry is not _DELETED

    def exists(self, key: Key) -> bool:
        self._check_usable()
        return self._exists(_canonical(key), key)

    def scan(self, prefix: tuple[Any, ...] | None = None) -> Iterator[Key]:
        self.flush()
        return self.inner.scan(prefix)  # type: ignore[no-any-return]

    def items(self, prefix: tuple[Any, ...] | None = None) -> Iterator[tuple[Key, Metadata]]:
        self.flush()
        return self.inner.items(prefix)  # type: ignore[no-any-return]

    def count(self, prefix: tuple[Any, ...] | None = None) -> int:
        self.flush()
        return int(self.inner.count(prefix))

    def clear(self, prefix: tuple[Any, ...] | None = None) -> int:
        self.flush()
        return int(self.inner.clear(prefix))

    # ------------------------------------------------------------------ flushing

    def flush(self) -> None:
        """Send every buffered write now; raise ContextStoreError if they cannot be sent.

        Failed writes stay buffered, so a later ``flush()`` can send them.
        """
        self._check_open()
        self._check_fork()
        buf = self._buf
        # _flush waits for a batch already in flight; if that batch failed it is back in
        # the buffer, so this call sends it (or reports why it cannot).
        error = self._flush(retry=True)
        with buf.lock:
            buf.error = None  # reported here, or sent since it was recorded
        if error is not None:
            raise self._failure(error) from error
        flush = getattr(self.inner, "flush", None)
        if flush is not None:
            flush()

    def _flush(self, *, retry: bool, background: bool = False) -> BaseException | None:
        """Send the buffer (one batch at a time); return the error that stopped it, if any."""
        buf = self._buf
        with buf.flush_lock:
            with buf.lock:
                if not buf.n_pending:
                    return None
                batch, n = buf.pending, buf.n_pending
                buf.inflight, buf.n_inflight = batch, n
                buf.pending, buf.n_pending = {}, 0
            error = self._send(batch, retry)
            with buf.lock:
                if error is not None:
                    # keep the batch; writes made since are newer and win
                    for ns, space in batch.items():
                        newer = buf.pending.get(ns, {})
                        for ckey, op in space.items():
                            if ckey not in newer:
                                buf.put(ns, ckey, op[0], op[1])
                    buf.failures += 1
                    if background:
                        buf.error = error  # the next caller (or flush/close) reports it
                else:
                    buf.flushes += 1
                buf.inflight, buf.n_inflight = {}, 0
                buf.cond.notify_all()  # writers waiting for room
            return error

    def _send(self, batch: _Writes, retry: bool) -> BaseException | None:
        buf = self._buf
        deadline = time.monotonic() + buf.retry_timeout
        delay = 0.05
        while True:
            try:
                for ns, space in batch.items():
                    inner = buf.inners[ns]
                    deletes = [op[0] for op in space.values() if op[1] is _DELETED]
                    sets = [
                        (op[0], op[1] if None not in op[1] else _thaw(op[1]))
                        for op in space.values()
                        if op[1] is not _DELETED
                    ]
                    if deletes:
                        inner.delete_many(deletes)
                    if sets:
                        inner.set_many(sets)
                return None
            except ContextStoreError as exc:
                if (
                    not retry
                    or time.monotonic() + delay > deadline
                    or isinstance(exc, ContextStoreClosedError)
                ):
                    return exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception as exc:  # a value the inner store refuses, a bug: retrying will not help
                return exc

    def _failure(self, error: BaseException) -> ContextStoreError:
        return ContextStoreError(
            f"{self!r}: {self.pending_count} buffered writes could not be sent to {self.inner!r} "
            f"(retried for up to {self._buf.retry_timeout:g} s): {error}. They are still buffered; "
            "flush() tries again"
        )

    # ------------------------------------------------------------------ background flusher

    def _wake(self) -> None:
        """Start or wake the background flusher (lock held)."""
        buf = self._buf
        thread = buf.thread
        if thread is None or not thread.is_alive():
            thread = buf.thread = threading.Thread(
                target=_flusher, args=(weakref.ref(self),), name="context-framework-flush", daemon=True
            )
            thread.start()
        buf.cond.notify_all()

    def _make_room(self, n: int) -> None:
        """Wait (lock held) until ``n`` more writes fit under max_pending."""
        buf = self._buf
        while buf.n_pending + buf.n_inflight + n > buf.max_pending and buf.n_pending + buf.n_inflight:
            if buf.error is not None:
                return  # reported by the next call; do not block on a dead store
            self._wake()
            if buf.thread is threading.current_thread():
                return
            buf.cond.wait(0.5)
        if buf.flush_interval is not None and buf.n_pending == 0:
            self._wake()  # the flusher's clock starts with this write

    def _check_usable(self) -> None:
        if self._closed:
            raise self._closed_error()
        buf = self._buf
        if buf.pid != os.getpid():
            self._check_fork()
        error = buf.error
        if error is not None:
            buf.error = None
            raise self._failure(error) from error

    def _check_fork(self) -> None:
        """In a forked child, forget the parent's buffer (the parent sends it)."""
        buf = self._buf
        if buf.pid != os.getpid():
            buf.lock = threading.Lock()
            buf.cond = threading.Condition(buf.lock)
            buf.flush_lock = threading.Lock()
            buf.pending, buf.inflight, buf.n_pending, buf.n_inflight = {}, {}, 0, 0
            buf.thread, buf.error, buf.pid = None, None, os.getpid()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Flush, stop the flusher and close. If the flush fails the store stays open."""
        if self._closed:
            return
        if not self._is_view:
            self.flush()
            buf = self._buf
            with buf.lock:
                buf.stopping = True
                buf.cond.notify_all()
            thread = buf.thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(5.0)
        super().close()
        _LIVE.discard(self)


def _flusher(ref: weakref.ref[BufferedStore]) -> None:
    """Background thread: flush when the buffer is full or old enough."""
    store = ref()
    if store is None:
        return
    buf = store._buf
    del store
    while True:
        with buf.lock:
            while not buf.stopping and not buf.due():
                timeout = None
                if buf.n_pending and buf.flush_interval is not None:
                    timeout = max(0.0, buf.first_write + buf.flush_interval - time.monotonic())
                elif buf.flush_interval is not None:
                    timeout = buf.flush_interval
                if not buf.cond.wait(timeout) and ref() is None:
                    return
            if buf.stopping:
                return
        store = ref()
        if store is None:
            return
        error = store._flush(retry=True, background=True)
        if error is not None:
            with buf.lock:  # wait for a caller before trying again
                while buf.error is not None and not buf.stopping:
                    buf.cond.wait(1.0)
        del store


# Open BufferedStores (strong references: one that was never closed is still flushed at exit)
_LIVE: set[BufferedStore] = set()


@atexit.register
def _flush_at_exit() -> None:
    for store in list(_LIVE):
        if store.closed or store._buf.pid != os.getpid() or not store.pending_count:
            continue
        try:
            store.flush()
        except ContextError as exc:
            print(
                f"context-framework: {store.pending_count} buffered writes of {store!r} were lost at "
                f"exit: {exc}",
                file=sys.stderr,
            )


def _forget_buffers_in_child() -> None:
    for store in list(_LIVE):
        store._check_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_buffers_in_child)
