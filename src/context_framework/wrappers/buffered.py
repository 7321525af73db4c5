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

Checks: a write is checked when it enters the buffer against everything the
store below checks (``inner.check_write``: key encoding and key size, value
rules, ``max_value_size``), so a write the store would refuse raises in the
caller at once, as ``set`` would, and is not buffered.

Failures: a batch that fails on the store's side (a ``ContextStoreError``:
connection, lock, timeout) is kept and resent with exponential backoff
(writes are idempotent: resending is safe) for up to ``retry_timeout``
seconds. If it still fails, the writes stay buffered and the next operation,
``flush()`` or ``close()`` raises :class:`~context_framework.ContextStoreError`
(with the driver error as ``__cause__``) saying how often it was tried; a
later flush tries again. A batch the store refuses for a reason retrying
cannot fix (a value or key it rejects only then) is split in halves until
the refused writes are found: the others are sent, the refused ones are
dropped and reported by key (:class:`~context_framework.ContextWritesRefusedError`).
Nothing is dropped silently. When the buffer holds ``max_pending`` unsent
writes (buffered plus in flight), writers wait for the flush, so memory stays
bounded.

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
from typing import Any, NoReturn

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
    ContextWritesRefusedError,
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
from .base import WrapperStore, write_checks

__all__ = ["BufferedStore"]

_DELETED: Any = object()  # a buffered delete
_MISSING: Any = object()

# pending/in-flight writes: namespace -> {canonical key: (key, entry or _DELETED)}
_Writes = dict[str, dict[Any, tuple[Key, Any]]]


class _Outcome:
    """What sending a batch came to: the error that stopped it (its writes are buffered
    again), how it was tried, and the writes the store refused (dropped)."""

    __slots__ = ("attempts", "elapsed", "error", "refused", "unsent")

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.attempts = 0
        self.elapsed = 0.0
        self.unsent = 0  # writes of the batch put back into the buffer
        self.refused: list[tuple[Key, BaseException]] = []

    def __bool__(self) -> bool:
        """Whether there is something to report."""
        return self.error is not None or bool(self.refused)

    def after(self, earlier: _Outcome | None) -> _Outcome:
        """This outcome, with the refusals of an ``earlier`` one not reported yet."""
        if earlier is not None and earlier.refused:
            self.refused[:0] = earlier.refused
        return self


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


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
        self.report: _Outcome | None = None  # a failed or refusing flush, for the next caller
        self.thread: threading.Thread | None = None
        self.stopping = False
        self.pid = os.getpid()
        self.flushes = 0
        self.failures = 0
        self.refusal_sinks: list[weakref.WeakMethod[Any]] = []  # told of each refused write

    def tell_refused(self, namespace: str, ckey: Any) -> None:
        for ref in list(self.refusal_sinks):
            sink = ref()
            if sink is not None:
                sink(namespace, ckey)

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
        self._bind_checks()
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
        self._bind_checks()

    def _watch_refusals(self, sink: Any) -> None:
        """Call the bound method ``sink(namespace, canonical key)`` (held weakly) for each
        write the store refuses at flush: a cache above drops what it holds for the key."""
        self._buf.refusal_sinks.append(weakref.WeakMethod(sink))

    def _bind_checks(self) -> None:
        """What the inner store checks in a write (its key limit can depend on the namespace)."""
        self._checks = write_checks(self.inner)

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
        if key is _MISSING:
            key = ckey if type(ckey) is not bytes else _original(ckey)
        checks = self._checks
        if checks is not None and not (  # ("row", 7) with a short str surely fits: no call
            type(ckey) is tuple
            and len(ckey) == 2
            and type(ckey[1]) is int
            and type(ckey[0]) is str
            and len(ckey[0]) <= checks.head
        ):
            checks(ckey, key, value)
        entry = _fast_entry(value, self._fast_len)
        if entry is None:
            entry = _freeze(prepare_value(value, self.max_value_size))
        if not self._try_put(ckey, key, entry):
            self._put_waiting(ckey, key, entry)

    def _set_entry(self, ckey: Any, entry: Any, key: Any = None) -> None:
        """``set`` of a validated, private, never-mutated entry (the in-memory store's form:
        see ``in_memory_context_store._freeze``) under a canonical key. A cache above
        hands its own entry down here instead of having it checked and copied again: it
        has run this store's checks (``write_checks(self)``, which are the inner store's)."""
        if key is None or key is _MISSING:
            key = ckey if type(ckey) is not bytes else _original(ckey)
        if not self._try_put(ckey, key, entry):
            self._put_waiting(ckey, key, entry)

    def _put_waiting(self, ckey: Any, key: Key, entry: Any) -> None:
        """Buffer an entry that :meth:`_try_put` could not: report a failure, or wait for room."""
        self._check_usable()
        buf = self._buf
        with buf.lock:
            self._make_room(1)
            buf.put(self._namespace, ckey, key, entry)
            if buf.n_pending >= buf.max_items:
                self._wake()

    def _try_put(self, ckey: Any, key: Any, entry: Any) -> bool:
        """Buffer a validated entry (as :meth:`_set_entry`) if that needs no waiting and there is
        nothing to report; ``False`` (nothing done) otherwise. A cache above calls it while
        holding its own lock, so that its write-through is one step."""
        buf = self._buf
        if self._closed or buf.report is not None:
            return False
        with buf.lock:
            n = buf.n_pending
            if n + buf.n_inflight >= buf.max_pending:
                return False
            # _Buffer.put, inlined (the per-write hot path)
            space = buf.pending.get(self._namespace)
            if space is None:
                space = buf.pending[self._namespace] = {}
            if ckey not in space:
                if not n:
                    buf.first_write = time.monotonic()
                buf.n_pending = n = n + 1
            space[ckey] = (key, entry)
            if n >= buf.max_items or (n == 1 and buf.flush_interval is not None):
                self._wake()  # a full buffer, or the flusher's clock starts with this write
        return True

    def set_many(
        self, items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]]
    ) -> None:
        self._check_usable()
        pairs = list(iter_pairs(items))
        ckeys = _canonical_batch([k for k, _ in pairs])
        checks = self._checks
        if checks is not None:
            for ckey, (key, value) in zip(ckeys, pairs):
                checks(ckey, key, value)
        entry = self._entry
        entries = [entry(v) for _, v in pairs]  # everything validated before anything is buffered
        self._put_many(list(zip(ckeys, [k for k, _ in pairs], entries)))

    def _check_inner(self, ckey: Any, key: Key, value: Any) -> None:
        """What the inner store checks in a write of ``value`` (see ``write_checks``)."""
        if self._checks is not None:
            self._checks(ckey, key, value)

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
                self._check_inner(ckey, key, merged)  # a buffered delete's key was never checked
                entry = _freeze(merged)
                buf.put(self._namespace, ckey, key, entry)
                return _thaw(entry)
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
                self._check_inner(ckey, key, new)
                buf.put(self._namespace, ckey, key, _freeze(new))
                return result
        return self.inner.increment(key, field, by)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ reads

    def get(self, key: Key, default: Any = None) -> Metadata | None:
        return self._get_normalized(_canonical(key), default, key)

    def _get_normalized(self, ckey: Any, default: Any = None, key: Any = _MISSING) -> Metadata | None:
        """``get`` for a key already in canonical form (the pandas adapter's fast path)."""
        if self._buf.report is not None or self._closed:
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

        Failed writes stay buffered, so a later ``flush()`` can send them. Writes the
        store refused (see the module docstring) raise ContextWritesRefusedError, once.
        """
        report = self._flush_report()
        if report is not None:
            self._raise_failure(report)
        flush = getattr(self.inner, "flush", None)
        if flush is not None:
            flush()

    def _flush_report(self) -> _Outcome | None:
        """Send the buffer; return what the caller must hear of (this flush's failure, and
        refusals a background flush found since the last report), or None."""
        self._check_open()
        self._check_fork()
        buf = self._buf
        # _flush waits for a batch already in flight; if that batch failed it is back in
        # the buffer, so this call sends it (or reports why it cannot).
        outcome = self._flush()
        with buf.lock:
            earlier, buf.report = buf.report, None  # a failure of before is this flush's now
        if outcome is None:
            outcome = _Outcome()
        return outcome.after(earlier) or None

    def _flush(self, *, background: bool = False) -> _Outcome | None:
        """Send the buffer (one batch at a time); return the outcome if there is one to report."""
        buf = self._buf
        with buf.flush_lock:
            with buf.lock:
                if not buf.n_pending:
                    return None
                batch, n = buf.pending, buf.n_pending
                buf.inflight, buf.n_inflight = batch, n
                buf.pending, buf.n_pending = {}, 0
            outcome = self._send(batch)
            with buf.lock:
                if outcome.error is not None:
                    # keep what was not sent; writes made since are newer and win
                    for ns, space in batch.items():
                        newer = buf.pending.get(ns, {})
                        for ckey, op in space.items():
                            outcome.unsent += 1
                            if ckey not in newer:
                                buf.put(ns, ckey, op[0], op[1])
                    buf.failures += 1
                else:
                    buf.flushes += 1
                if background and outcome:
                    buf.report = outcome.after(buf.report)  # the next caller (or flush/close) reports it
                buf.inflight, buf.n_inflight = {}, 0
                buf.cond.notify_all()  # writers waiting for room
            return outcome if outcome else None

    def _send(self, batch: _Writes) -> _Outcome:
        """Send ``batch``, retrying what the store may accept later; the batch keeps what was not sent."""
        buf = self._buf
        outcome = _Outcome()
        start = time.monotonic()
        deadline = start + buf.retry_timeout
        delay = 0.05
        while True:
            outcome.attempts += 1
            try:
                for ns, space in batch.items():
                    self._send_space(ns, space, outcome)
                outcome.error = None
                break
            except ContextStoreError as exc:  # the store's side: may work later
                outcome.error = exc
                if isinstance(exc, ContextStoreClosedError) or time.monotonic() + delay > deadline:
                    break
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception as exc:  # a bug below, on one write: retrying will not help
                outcome.error = exc
                break
        outcome.elapsed = time.monotonic() - start
        return outcome

    def _send_space(self, ns: str, space: dict[Any, tuple[Key, Any]], outcome: _Outcome) -> None:
        """Send one namespace's writes: deletes, then sets."""
        inner = self._buf.inners[ns]
        deletes = [(ckey, op[0], op[1]) for ckey, op in space.items() if op[1] is _DELETED]
        sets = [(ckey, op[0], op[1]) for ckey, op in space.items() if op[1] is not _DELETED]

        def delete_many(part: list[tuple[Any, Key, Any]]) -> None:
            inner.delete_many([op[1] for op in part])

        def set_many(part: list[tuple[Any, Key, Any]]) -> None:
            inner.set_many([(op[1], op[2] if None not in op[2] else _thaw(op[2])) for op in part])

        if deletes:
            self._send_part(ns, space, deletes, delete_many, outcome)
        if sets:
            self._send_part(ns, space, sets, set_many, outcome)

    def _send_part(
        self,
        ns: str,
        space: dict[Any, tuple[Key, Any]],
        part: list[tuple[Any, Key, Any]],
        write: Any,
        outcome: _Outcome,
    ) -> None:
        """``write(part)``; if the store refuses it for a reason retrying cannot fix, split it
        in halves until the refused writes are found (dropped into ``outcome.refused``)."""
        try:
            write(part)
        except ContextStoreError:
            raise  # the store's side: the whole rest is retried
        except Exception as exc:
            if len(part) > 1:
                middle = len(part) // 2
                self._send_part(ns, space, part[:middle], write, outcome)
                self._send_part(ns, space, part[middle:], write, outcome)
                return
            if not isinstance(exc, ContextError):
                raise  # not a refusal of this write: keep it buffered and report it
            outcome.refused.append((part[0][1], exc))
            self._buf.tell_refused(ns, part[0][0])
        self._done(space, part)

    def _done(self, space: dict[Any, tuple[Key, Any]], part: list[tuple[Any, Key, Any]]) -> None:
        """Writes of the batch in flight that were sent (or refused): no longer in flight."""
        buf = self._buf
        with buf.lock:
            for op in part:
                del space[op[0]]
            buf.n_inflight -= len(part)

    def _raise_failure(self, report: _Outcome) -> NoReturn:
        """Raise what ``report`` says: refused writes, and writes that could not be sent."""
        parts = []
        if report.refused:
            parts.append(self._refused_text(report))
        if report.error is not None:
            still = "It is" if report.unsent == 1 else "They are"
            parts.append(f"{self._unsent_text(report)}. {still} still buffered; flush() tries again")
        message = f"{self!r}: " + "; and ".join(parts)
        cause = report.refused[0][1] if report.refused else report.error
        if report.refused:
            raise ContextWritesRefusedError(message, report.refused) from cause
        raise ContextStoreError(message) from cause

    def _refused_text(self, report: _Outcome) -> str:
        """The refused writes, by key, grouped by error (a few keys of each)."""
        groups: dict[str, list[Key]] = {}
        for key, error in report.refused:
            groups.setdefault(str(error), []).append(key)
        shown = []
        for error_text, keys in list(groups.items())[:3]:
            names = ", ".join(f"{key!r:.120}" for key in keys[:3])
            more = f" and {len(keys) - 3:,} more" if len(keys) > 3 else ""
            shown.append(f"{names}{more} ({error_text})")
        if len(groups) > 3:
            shown.append(f"and {sum(len(k) for k in list(groups.values())[3:]):,} more")
        n = len(report.refused)
        return (
            f"{_plural(n, 'buffered write')} refused by {self.inner!r} when sent, and dropped: retrying "
            f"cannot store {'it' if n == 1 else 'them'} (the other writes were sent): {'; '.join(shown)}"
        )

    def _unsent_text(self, report: _Outcome) -> str:
        error = report.error
        if report.attempts > 1:
            tried = f"tried {report.attempts} times over {report.elapsed:.1f} s"
        elif isinstance(error, ContextStoreClosedError):
            tried = "tried once, not retried: the store is closed"
        elif isinstance(error, ContextStoreError):
            tried = f"tried once; retry_timeout is {self._buf.retry_timeout:g} s"
        else:
            tried = "tried once, not retried: retrying cannot fix this error"
        detail = str(error) if isinstance(error, ContextError) else f"{type(error).__name__}: {error}"
        unsent = _plural(report.unsent, "buffered write")
        return f"{unsent} could not be sent to {self.inner!r} ({tried}): {detail}"

    def _exit_message(self, report: _Outcome) -> str:
        """What ``report`` means when the process is exiting: nothing is buffered any more."""
        parts = []
        if report.refused:
            parts.append(self._refused_text(report))
        if report.error is not None:
            lost = "it is" if report.unsent == 1 else "they are"
            parts.append(f"{self._unsent_text(report)}; {lost} lost, as the process is exiting")
        return f"context-framework: {self!r}: " + "; and ".join(parts)

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
            if buf.report is not None:
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
        # A forked child's buffers were emptied by the at-fork hook (``_forget_buffers_in_child``):
        # no getpid() call per write, which is a system call.
        report = buf.report
        if report is not None:
            buf.report = None
            self._raise_failure(report)

    def _check_fork(self) -> None:
        """In a forked child, forget the parent's buffer (the parent sends it)."""
        buf = self._buf
        if buf.pid != os.getpid():
            buf.lock = threading.Lock()
            buf.cond = threading.Condition(buf.lock)
            buf.flush_lock = threading.Lock()
            buf.pending, buf.inflight, buf.n_pending, buf.n_inflight = {}, {}, 0, 0
            buf.thread, buf.report, buf.pid = None, None, os.getpid()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Flush, stop the flusher and close. If the flush fails the store stays open (writes
        the store refused are reported after closing: nothing of them is left to send)."""
        if self._closed:
            return
        report = None
        if not self._is_view:
            report = self._flush_report()
            if report is not None and report.error is not None:
                self._raise_failure(report)  # writes are still buffered: keep the store open
            flush = getattr(self.inner, "flush", None)
            if flush is not None:
                flush()
            buf = self._buf
            with buf.lock:
                buf.stopping = True
                buf.cond.notify_all()
            thread = buf.thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(5.0)
        super().close()
        _LIVE.discard(self)
        if report is not None:
            self._raise_failure(report)


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
        outcome = store._flush(background=True)
        if outcome is not None and outcome.error is not None:
            with buf.lock:  # writes are stuck: wait for a caller to hear of it before trying again
                while buf.report is not None and not buf.stopping:
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
            report = store._flush_report()
        except ContextError as exc:
            lost = _plural(store.pending_count, "buffered write")
            message = f"context-framework: {store!r}: {lost} lost at exit: {exc}"
        else:
            if report is None:
                continue
            message = store._exit_message(report)
        print(message, file=sys.stderr)


def _forget_buffers_in_child() -> None:
    for store in list(_LIVE):
        store._check_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_buffers_in_child)
