"""``CachedStore``: a bounded read cache in this process, in front of any store.

``CachedStore(inner, max_size=10_000, ttl=None)`` keeps recently used
entries (and recent misses) in memory. Reads that hit cost a dict lookup and
a copy; writes go through to ``inner`` and then populate the cache
(write-through), so ``set`` then ``get`` of the same keys never reaches the
store twice. See ``docs/caching.md`` for what each combination guarantees.

Entries. Each namespace has a dict ``canonical key -> [value, referenced,
expires, own]`` (``value`` ``None`` marks a cached miss; nested fields are
kept as JSON text, as in :class:`InMemoryContextStore`, so nothing handed out
ever aliases the cache). Namespace views share one cache. Eviction is CLOCK
(second chance): a hit only sets ``referenced``; when full, a hand walks the
insertion ring, clearing ``referenced`` bits and dropping the first entry
that has none. Scans must not flush the cache: a value *read* into a full
cache is only admitted on its second miss (a "doorkeeper" set of recently
missed key hashes, cleared when it reaches ``max_size``), and a miss (absent
key) is only cached while there is room. Without this, one extra key read
during a scan of a full cache evicts the next key the scan will read, which
then evicts the next, and so on: every read misses. Own writes are always
admitted.
``ttl`` counts from when an entry was stored.

Races. A value read from (or written to) ``inner`` is only cached when
nothing else touched that key meanwhile: 256 stripes (by key hash) each
count writes begun and ended in this process and invalidations received,
and a read or write records its stripe's count when it starts. When the
count moved, the value is not cached (or, with Redis tracking, cached and
verified against the server). An error from ``inner`` drops the entry.

Redis tracking. When the innermost store (below any ``BufferedStore``) is a
standalone :class:`~context_framework.redis_store.RedisContextStore`, the
cache subscribes to invalidations (``CLIENT TRACKING ON BCAST PREFIX``, see
:mod:`context_framework._redis_tracking`): another process's write evicts
the entry here within about a round trip. Our own writes come back as
invalidations too ("echoes"); an entry this process wrote is therefore not
evicted by an invalidation but verified (``MGET`` on the tracking
connection) and kept only if the server holds the same value. Entries
filled by reads are evicted. While the subscription is down the cache is
empty and caches nothing; after ``fork()`` the child subscribes anew on
first use. Redis Cluster gets no tracking (TTL only).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from time import monotonic
from typing import Any, NamedTuple

from ..base_store import ContextStore, Metadata, Number, iter_pairs
from ..exceptions import ContextConfigurationError
from ..in_memory_context_store import (
    _INT_LIMIT,
    _canonical,
    _canonical_batch,
    _ClosedData,
    _fast_entry,
    _freeze,
    _thaw,
    fast_str_limit,
)
from ..keys import Key, _find_terminator, decode_key, encode_key, encode_namespace
from ..values import dumps_json, loads_json, prepare_value
from .base import WrapperStore, write_checks

__all__ = ["CacheInfo", "CachedStore"]

_STRIPES = 256
_MASK = _STRIPES - 1
_DROP = object()  # "forget this entry" for _finish_one
_SLICE = 32  # invalidations handled per lock hold (the listener yields the GIL in between)


class CacheInfo(NamedTuple):
    """What :meth:`CachedStore.cache_info` reports (hits are counted without a lock: approximate)."""

    hits: int
    misses: int
    size: int
    max_size: int
    invalidations: int
    evictions: int
    ttl: float | None
    tracking: str  # "off" (no invalidation messages), "up" or "down"


def _original(ckey: Any) -> Key:
    return decode_key(ckey) if type(ckey) is bytes else ckey


def _private(value: Metadata) -> dict[Any, Any]:
    """A cache entry value for a dict just returned by a store (the caller keeps ``value``)."""
    frozen = _freeze(value)
    return frozen.copy() if frozen is value else frozen


def _same(entry_value: Any, raw: bytes | None) -> bool:
    """Whether a cached value equals what Redis holds (raw JSON bytes, ``None``: absent)."""
    if raw is None or entry_value is None:
        return raw is None and entry_value is None
    mine = _thaw(entry_value) if None in entry_value else entry_value
    try:
        text = raw.decode("utf-8")
        if dumps_json(mine) == text:
            return True
        theirs = loads_json(text)
    except ValueError:
        return False
    # Same fields in another order (e.g. merged by a Lua script): compare type-exactly.
    return bool(json.dumps(mine, sort_keys=True) == json.dumps(theirs, sort_keys=True))


def _str_int_key(encoded: bytes) -> tuple[str, int] | None:
    """Decode the common ``(ascii str, int)`` key shape (``("row", 7)``) fast; None for any other."""
    if len(encoded) < 4 or encoded[0] != 0x01 or encoded[1] != 0x02:
        return None
    end = encoded.find(0, 2)
    if end < 0 or end + 2 > len(encoded):
        return None
    n = encoded[end + 1] - 0x14  # int codes 0x0C..0x1C: magnitude of |n| bytes, sign of n
    if not -8 <= n <= 8 or len(encoded) != end + 2 + abs(n):
        return None
    text = encoded[2:end]
    if not text.isascii():
        return None
    value = int.from_bytes(encoded[end + 2 :], "big")
    if n < 0:
        value -= (1 << (8 * -n)) - 1
    return sys.intern(text.decode("ascii")), value


class _Cache:
    """The state shared by a ``CachedStore`` and its namespace views (and the listener's sink)."""

    def __init__(self, max_size: int, ttl: float | None) -> None:
        self.lock = threading.Lock()
        self.max_size = max_size
        self.ttl = ttl
        self.spaces: dict[str, dict[Any, list[Any]]] = {}
        self.by_tag: dict[bytes, dict[Any, list[Any]]] = {}
        self.ring: deque[tuple[dict[Any, list[Any]], Any, list[Any]]] = deque()
        self.doorkeeper: set[int] = set()  # hashes of keys read once into a full cache
        self.size = 0
        self.epoch = 0
        self.ver = [0] * _STRIPES
        self.busy = [0] * _STRIPES
        self.hits = [0]  # a list cell: the hit path increments it without a lock
        self.misses = self.invalidations = self.evictions = 0
        self.enabled = True
        # Redis tracking
        self.tracked = False
        self.source: Any = None  # the RedisContextStore to subscribe on
        self.listener: Any = None
        self.prefix = b""
        self.verifying: dict[bytes, tuple[dict[Any, list[Any]], Any]] = {}
        self.restart_pending = False
        _live_caches.add(self)

    # ------------------------------------------------------------------ spaces and entries

    def space(self, namespace: str) -> tuple[dict[Any, list[Any]], bytes]:
        try:
            tag = encode_namespace(namespace)
        except Exception:  # not encodable: no Redis store can hold it, so nothing to track
            tag = b"\xff" + namespace.encode("utf-8", "surrogatepass")
        with self.lock:
            space = self.spaces.get(namespace)
            if space is None:
                space = self.spaces[namespace] = {}
                self.by_tag[tag] = space
        return space, tag

    def put(self, space: dict[Any, list[Any]], ckey: Any, value: Any, own: bool) -> None:
        """Cache ``value`` (``None``: absent) under ``ckey``. Caller holds the lock."""
        expires = monotonic() + self.ttl if self.ttl is not None else 0.0
        entry = space.get(ckey)
        if entry is not None:
            entry[0] = value
            entry[2] = expires
            entry[3] = own
            return
        if self.size >= self.max_size:
            if value is None:
                return  # a cached miss never displaces a cached value
            if not own:  # a read into a full cache: admitted on its second miss only
                seen = self.doorkeeper
                mark = hash(ckey)
                if mark not in seen:
                    if len(seen) >= self.max_size:
                        seen.clear()
                    seen.add(mark)
                    return
                seen.discard(mark)
            self.evict()
        entry = [value, False, expires, own]
        space[ckey] = entry
        ring = self.ring
        ring.append((space, ckey, entry))
        self.size += 1
        if len(ring) > 2 * self.max_size + 64:  # stale items of removed entries pile up
            self.ring = deque((s, k, e) for s, k, e in ring if s.get(k) is e)

    def remove(self, space: dict[Any, list[Any]], ckey: Any) -> bool:
        """Drop one entry. Caller holds the lock."""
        if space.pop(ckey, None) is None:
            return False
        self.size -= 1
        return True

    def evict(self) -> None:
        """CLOCK: drop entries until there is room for one more. Caller holds the lock."""
        ring = self.ring
        now = monotonic() if self.ttl is not None else 0.0
        while self.size >= self.max_size and ring:
            space, ckey, entry = ring.popleft()
            if space.get(ckey) is not entry:
                continue  # removed meanwhile
            if entry[1] and (self.ttl is None or entry[2] > now):
                entry[1] = False
                ring.append((space, ckey, entry))
                continue
            del space[ckey]
            self.size -= 1
            self.evictions += 1

    def drop_all(self) -> None:
        """Forget every entry; in-flight reads and writes will not insert theirs. Caller holds the lock."""
        self.epoch += 1
        for space in self.spaces.values():
            space.clear()
        self.ring.clear()
        self.size = 0
        self.verifying.clear()

    def refused(self, namespace: str, ckey: Any) -> None:
        """The store below refused (and dropped) a buffered write to ``ckey``: forget the key."""
        with self.lock:
            self.ver[hash(ckey) & _MASK] += 1  # a read or write in flight will not cache it either
            space = self.spaces.get(namespace)
            if space is not None:
                self.remove(space, ckey)

    def drop_space(self, space: dict[Any, list[Any]]) -> None:
        """Forget one namespace. Caller holds the lock."""
        self.epoch += 1
        self.size -= len(space)
        space.clear()

    # ------------------------------------------------------------------ verification (Redis)

    def want(self, space: dict[Any, list[Any]], tag: bytes, ckey: Any) -> bytes:
        """Register a verification of ``ckey``; return its Redis key. Caller holds the lock."""
        raw = self.prefix + tag + (ckey if type(ckey) is bytes else encode_key(ckey))
        self.verifying[raw] = (space, ckey)
        return raw

    def request(self, raws: list[bytes]) -> None:
        listener = self.listener
        if raws and listener is not None:
            listener.fetch(raws)

    def locate(self, raw: bytes) -> tuple[dict[Any, list[Any]], Any] | None:
        """The (space, canonical key) cached for a Redis key, if its namespace is cached here."""
        prefix = self.prefix
        if not raw.startswith(prefix):
            return None
        rest = raw[len(prefix) :]
        try:
            if not rest or rest[0] != 0x02:
                return None
            end = _find_terminator(rest, 1)
            space = self.by_tag.get(rest[: end + 1])
            if space is None:
                return None
            encoded = rest[end + 1 :]
            return space, _str_int_key(encoded) or _canonical(decode_key(encoded))
        except Exception:
            return None

    # ------------------------------------------------------------------ the listener's sink

    def tracking_started(self) -> None:
        with self.lock:
            self.drop_all()
            self.enabled = True

    def tracking_lost(self) -> None:
        with self.lock:
            self.enabled = False
            self.drop_all()

    def invalidated(self, keys: list[bytes] | None) -> None:
        if keys is None:
            with self.lock:
                self.invalidations += self.size
                self.drop_all()
            return
        # Decoding needs no lock; the rest is done in slices, letting writers in between.
        located = [(raw, found) for raw in keys if (found := self.locate(raw)) is not None]
        verify: list[bytes] = []
        ver = self.ver
        for i in range(0, len(located), _SLICE):
            if i:
                time.sleep(0)
            with self.lock:
                for raw, (space, ckey) in located[i : i + _SLICE]:
                    ver[hash(ckey) & _MASK] += 1
                    entry = space.get(ckey)
                    if entry is None:
                        continue
                    if entry[3]:  # written here: maybe our own echo, check the server's value
                        self.verifying[raw] = (space, ckey)
                        verify.append(raw)
                    else:
                        del space[ckey]
                        self.size -= 1
                        self.invalidations += 1
        self.request(verify)

    def fetched(self, values: dict[bytes, bytes | None]) -> None:
        with self.lock:
            checks = []
            for raw, server in values.items():
                found = self.verifying.pop(raw, None)
                if found is not None:
                    entry = found[0].get(found[1])
                    if entry is not None:
                        checks.append((found, entry, entry[0], server))
        # Compared without the lock. An entry whose value was replaced meanwhile is left
        # alone: the write or read that replaced it brings its own check (an echo, or a
        # verification of its own when an invalidation overlapped it).
        stale = [(found, entry, mine) for found, entry, mine, server in checks if not _same(mine, server)]
        for i in range(0, len(stale), _SLICE):
            if i:
                time.sleep(0)
            with self.lock:
                for (space, ckey), entry, mine in stale[i : i + _SLICE]:
                    if space.get(ckey) is entry and entry[0] is mine:
                        self.ver[hash(ckey) & _MASK] += 1
                        del space[ckey]
                        self.size -= 1
                        self.invalidations += 1

    # ------------------------------------------------------------------ lifecycle

    def subscribe(self) -> None:
        """Create and start the listener (tracking mode)."""
        listener = self.source.track_invalidations(self)
        self.listener = listener
        self.prefix = listener.prefix
        listener.start()

    def restart(self) -> None:
        """Subscribe anew in a forked child (called on first use after the fork)."""
        with self.lock:
            if not self.restart_pending:
                return
            self.restart_pending = False
        if not self.source.closed:
            self.subscribe()

    def close(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.close()
        with self.lock:
            self.enabled = False
            self.drop_all()


_live_caches: weakref.WeakSet[_Cache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_live_caches):
        cache.lock = threading.Lock()  # another thread may have held it at the fork
        cache.drop_all()
        if cache.tracked and cache.listener is not None:
            cache.enabled = False
            cache.listener = None  # dead in the child (see _redis_tracking)
            cache.restart_pending = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _tracked_redis(store: Any) -> Any:
    """The RedisContextStore whose keys ``store`` reads unchanged (through buffers), else None."""
    layer = store
    while isinstance(layer, WrapperStore):
        if not layer.keeps_keys:
            return None  # a wrapper that may route or transform keys (e.g. sharding)
        layer = layer.inner
    try:
        from ..redis_store import RedisContextStore
    except ImportError:
        return None
    return layer if isinstance(layer, RedisContextStore) else None


def _watch_refusals_below(store: Any, state: _Cache) -> None:
    """Have the write buffer below (through wrappers that keep keys) tell ``state`` of the
    writes the store refuses when the buffer sends them: the cache holds them as written."""
    layer = store
    while isinstance(layer, WrapperStore) and layer.keeps_keys:
        watch = getattr(layer, "_watch_refusals", None)
        if watch is not None:
            watch(state.refused)
            return
        layer = layer.inner


def _tracking_available() -> bool:
    from .._redis_tracking import available

    return available()


class CachedStore(WrapperStore):
    """A bounded, in-process read cache over ``inner``; see the module docstring.

    Args:
        inner: any context store.
        max_size: entries kept (all namespaces together), at least 1.
        ttl: seconds an entry stays (``None``: until evicted or invalidated).
        close_inner: whether closing the cache closes ``inner`` too.
        invalidation: ``None`` (default): subscribe to Redis invalidations when
            the store below is a standalone Redis store; ``True``: require it
            (error otherwise); ``False``: never (cross-process staleness is then
            bounded by ``ttl`` only).
    """

    keeps_keys = True

    def __init__(
        self,
        inner: ContextStore,
        *,
        max_size: int = 10_000,
        ttl: float | None = None,
        close_inner: bool = True,
        invalidation: bool | None = None,
    ) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ContextConfigurationError(f"max_size must be an int >= 1, got {max_size!r}")
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0
        ):
            raise ContextConfigurationError(
                f"ttl must be a finite number of seconds > 0 or None, got {ttl!r}"
            )
        if invalidation not in (None, True, False):
            raise ContextConfigurationError(f"invalidation must be None, True or False, got {invalidation!r}")
        super().__init__(inner, close_inner=close_inner)
        self.max_size = max_size
        self.ttl = ttl
        self.invalidation = invalidation
        self._ttl = None if ttl is None else float(ttl)
        self._fast_len = fast_str_limit(self.max_value_size)
        state = self._state = _Cache(max_size, self._ttl)
        self._hits = state.hits
        self._bind_namespace()
        _watch_refusals_below(inner, state)
        if invalidation is False:
            return
        redis = _tracked_redis(inner)
        if redis is None or redis._cluster or not _tracking_available():
            if invalidation:
                raise ContextConfigurationError(
                    f"invalidation=True needs a standalone Redis store below the cache (and hiredis "
                    f">= 3.2), got {inner!r}"
                )
            return
        state.tracked = True
        state.source = redis
        state.enabled = False  # until the subscription is confirmed
        state.subscribe()

    # ------------------------------------------------------------------ plumbing

    def _bind_namespace(self) -> None:
        self._data, self._tag = self._state.space(self._namespace)
        inner = self.inner
        self._inner_set = getattr(inner, "_set_normalized", None)
        self._inner_get = getattr(inner, "_get_normalized", None)
        # takes the entry this cache already validated and froze (no second check or copy)
        self._inner_set_entry = getattr(inner, "_set_entry", None)
        # a write buffer's non-blocking put: the write-through is then one step under our lock
        self._inner_try_put = getattr(inner, "_try_put", None)
        # what the store below checks beyond the value rules (its key limit), run here first
        self._checks = write_checks(inner)

    def _mark_closed(self) -> None:
        super()._mark_closed()
        self._data = _ClosedData(self)

    def _close_backend(self) -> None:
        try:
            self._state.close()
        finally:
            super()._close_backend()

    def _config(self) -> dict[str, Any]:
        return {
            **super()._config(),
            "max_size": self.max_size,
            "ttl": self.ttl,
            "invalidation": self.invalidation,
        }

    def _describe(self) -> str:
        ttl = f", ttl={self.ttl}" if self.ttl is not None else ""
        return f"{self.inner!r}, max_size={self.max_size}{ttl}"

    def _value(self, value: Any) -> dict[Any, Any]:
        """Validate ``value`` as every store does; return the private entry value for it."""
        entry = _fast_entry(value, self._fast_len)
        if entry is None:
            entry = _freeze(prepare_value(value, self.max_value_size))
        return entry

    def _check_restart(self) -> None:
        if self._state.restart_pending:
            self._state.restart()

    # ------------------------------------------------------------------ cache API

    def cache_info(self) -> CacheInfo:
        """Hits, misses, size, evictions and invalidations of the cache (shared by views)."""
        st = self._state
        if not st.tracked:
            tracking = "off"
        else:
            tracking = "up" if st.enabled else "down"
        return CacheInfo(
            st.hits[0], st.misses, st.size, st.max_size, st.invalidations, st.evictions, st.ttl, tracking
        )

    def invalidate(self, key: Key | None = None) -> None:
        """Drop ``key`` of this namespace from the cache, or (``None``) every cached entry."""
        self._check_open()
        st = self._state
        if key is None:
            with st.lock:
                st.drop_all()
            return
        ckey = _canonical(key)
        with st.lock:
            st.ver[hash(ckey) & _MASK] += 1
            st.remove(self._data, ckey)

    # ------------------------------------------------------------------ reads

    def get(self, key: Key, default: Any = None) -> Metadata | None:
        if (
            type(key) is tuple
            and len(key) == 2
            and type(key[0]) is str
            and type(key[1]) is int
            and key[0].isascii()
            and -_INT_LIMIT < key[1] < _INT_LIMIT
        ):
            ckey: Any = key
        else:
            ckey = _canonical(key)
        return self._get_normalized(ckey, default, key)

    def _get_normalized(self, ckey: Any, default: Any = None, key: Any = None) -> Metadata | None:
        """``get`` for a key already in canonical form (adapters call this directly;
        ``key`` None: the inner store gets ``ckey`` too)."""
        entry = self._data.get(ckey)
        if entry is not None and (self._ttl is None or entry[2] > monotonic()):
            entry[1] = True
            self._hits[0] += 1
            value = entry[0]
            if value is None:
                return default  # type: ignore[no-any-return]
            if None in value:
                return _thaw(value)
            return value.copy()  # type: ignore[no-any-return]
        return self._miss(ckey, key, default)

    def _miss(self, ckey: Any, key: Any, default: Any) -> Metadata | None:
        """Read through to ``inner`` and cache what it holds (``key`` None: use ``ckey``)."""
        st = self._state
        if st.restart_pending:
            st.restart()
        h = hash(ckey) & _MASK
        start = (st.epoch, st.ver[h], st.busy[h])
        if key is not None:
            value = self.inner.get(key)
        elif self._inner_get is not None:
            value = self._inner_get(ckey)
        else:
            value = self.inner.get(_original(ckey))
        frozen = None if value is None else _private(value)
        raw = None
        with st.lock:
            st.misses += 1
            if st.enabled and start[2] == 0:
                if start[0] == st.epoch and start[1] == st.ver[h] and st.busy[h] == 0:
                    st.put(self._data, ckey, frozen, False)
                elif st.listener is not None:
                    st.put(self._data, ckey, frozen, False)
                    raw = st.want(self._data, self._tag, ckey)
        if raw is not None:
            st.request([raw])
        return default if value is None else value

    def get_many(self, keys: Iterable[Key]) -> list[Metadata | None]:
        keys = list(keys)
        ckeys = _canonical_batch(keys)
        data = self._data
        ttl = self._ttl
        now = monotonic() if ttl is not None else 0.0
        out: list[Metadata | None] = [None] * len(keys)
        missing: dict[Any, list[int]] = {}
        hits = 0
        for i, ckey in enumerate(ckeys):
            entry = data.get(ckey)
            if entry is not None and (ttl is None or entry[2] > now):
                entry[1] = True
                hits += 1
                value = entry[0]
                if value is not None:
                    out[i] = _thaw(value) if None in value else value.copy()
            else:
                slots = missing.get(ckey)
                if slots is None:
                    missing[ckey] = [i]
                else:
                    slots.append(i)
        self._hits[0] += hits
        if not missing:
            self._check_open()
            return out
        self._check_restart()
        st = self._state
        wanted = list(missing)
        starts = [(st.ver[h], st.busy[h]) for h in (hash(c) & _MASK for c in wanted)]
        epoch = st.epoch
        values = self.inner.get_many([keys[missing[c][0]] for c in wanted])
        frozen = [None if v is None else _private(v) for v in values]
        raws: list[bytes] = []
        with st.lock:
            st.misses += len(wanted)
            for ckey, (v0, b0), fv in zip(wanted, starts, frozen):
                if not st.enabled or b0:
                    continue
                h = hash(ckey) & _MASK
                if epoch == st.epoch and v0 == st.ver[h] and st.busy[h] == 0:
                    st.put(data, ckey, fv, False)
                elif st.listener is not None:
                    st.put(data, ckey, fv, False)
                    raws.append(st.want(data, self._tag, ckey))
        st.request(raws)
        for ckey, value, fv in zip(wanted, values, frozen):
            slots = missing[ckey]
            out[slots[0]] = value
            for i in slots[1:]:
                out[i] = None if fv is None else _thaw(fv) if None in fv else fv.copy()
        return out

    def exists(self, key: Key) -> bool:
        ckey = _canonical(key)
        entry = self._data.get(ckey)
        if entry is not None and (self._ttl is None or entry[2] > monotonic()):
            entry[1] = True
            self._hits[0] += 1
            return entry[0] is not None
        return bool(self.inner.exists(key))

    # ------------------------------------------------------------------ writes

    def _begin(self, ckeys: list[Any]) -> tuple[int, dict[int, int]]:
        """Mark writes to ``ckeys`` as in flight; the token for :meth:`_finish`."""
        st = self._state
        if st.restart_pending:
            st.restart()
        stripes = {hash(c) & _MASK for c in ckeys}
        with st.lock:
            ver, busy = st.ver, st.busy
            for h in stripes:
                ver[h] += 1
                busy[h] += 1
            return st.epoch, {h: ver[h] for h in stripes}

    def _finish(self, token: tuple[int, dict[int, int]], ckeys: list[Any], values: list[Any] | None) -> None:
        """End writes begun with :meth:`_begin`: cache ``values`` (``None``: drop the entries)."""
        st = self._state
        epoch, started = token
        data, tag = self._data, self._tag
        raws: list[bytes] = []
        with st.lock:
            ver, busy = st.ver, st.busy
            clean: dict[int, bool] = {}
            for h, v0 in started.items():
                busy[h] -= 1
                clean[h] = epoch == st.epoch and v0 == ver[h] and busy[h] == 0
                ver[h] += 1
            if values is None or not st.enabled:
                for ckey in ckeys:
                    st.remove(data, ckey)
            else:
                tracked = st.listener is not None
                for ckey, value in zip(ckeys, values):
                    if clean[hash(ckey) & _MASK]:
                        st.put(data, ckey, value, True)
                    elif tracked:
                        st.put(data, ckey, value, True)
                        raws.append(st.want(data, tag, ckey))
                    else:
                        st.remove(data, ckey)
        st.request(raws)

    def set(self, key: Key, value: Mapping[str, Any]) -> None:
        if (
            type(key) is tuple
            and len(key) == 2
            and type(key[0]) is str
            and type(key[1]) is int
            and key[0].isascii()
            and -_INT_LIMIT < key[1] < _INT_LIMIT
        ):
            ckey: Any = key
        else:
            ckey = _canonical(key)
        self._write_one(ckey, key, value)

    def _set_normalized(self, ckey: Any, value: Mapping[str, Any]) -> None:
        """``set`` for a key already in canonical form (adapters call this directly)."""
        self._write_one(ckey, None, value)

    def _write_one(self, ckey: Any, key: Any, value: Mapping[str, Any]) -> None:
        """``set`` of one key (``key`` None: hand ``ckey`` to the inner store's fast path)."""
        if self._closed:
            raise self._closed_error()
        checks = self._checks
        if checks is not None and not (  # ("row", 7) with a short str surely fits: no call
            type(ckey) is tuple
            and len(ckey) == 2
            and type(ckey[1]) is int
            and type(ckey[0]) is str
            and len(ckey[0]) <= checks.head
        ):
            checks(ckey, _original(ckey) if key is None else key, value)
        entry = _fast_entry(value, self._fast_len)
        if entry is None:
            entry = _freeze(prepare_value(value, self.max_value_size))
        st = self._state
        if st.restart_pending:
            st.restart()
        h = hash(ckey) & _MASK
        try_put = self._inner_try_put
        if try_put is not None:
            with st.lock:
                # A buffer below takes the write at once: no window in which a read could
                # cache an older value, so one lock hold replaces _begin/_finish.
                if try_put(ckey, _original(ckey) if key is None else key, entry):
                    st.ver[h] += 1  # reads begun before this write will not cache theirs
                    if st.enabled and not st.busy[h]:
                        st.put(self._data, ckey, entry, True)
                    else:
                        st.remove(self._data, ckey)
                    return
        with st.lock:
            st.ver[h] += 1
            st.busy[h] += 1
            start = st.ver[h]
            epoch = st.epoch
        try:
            if self._inner_set_entry is not None:
                self._inner_set_entry(ckey, entry, key)
            elif key is not None:
                self.inner.set(key, value)
            elif self._inner_set is not None:
                self._inner_set(ckey, value)
            else:
                self.inner.set(_original(ckey), value)
        except BaseException:
            self._finish_one(h, epoch, start, ckey, _DROP)
            raise
        self._finish_one(h, epoch, start, ckey, entry)

    def _finish_one(self, h: int, epoch: int, start: int, ckey: Any, value: Any) -> None:
        """:meth:`_finish` for one key (``value`` ``_DROP``: drop the entry)."""
        st = self._state
        raw = None
        with st.lock:
            busy = st.busy[h] - 1
            st.busy[h] = busy
            clean = epoch == st.epoch and start == st.ver[h] and busy == 0
            st.ver[h] += 1
            if value is _DROP or not st.enabled:
                st.remove(self._data, ckey)
            elif clean:
                st.put(self._data, ckey, value, True)
            elif st.listener is not None:
                st.put(self._data, ckey, value, True)
                raw = st.want(self._data, self._tag, ckey)
            else:
                st.remove(self._data, ckey)
        if raw is not None:
            st.request([raw])

    def set_many(
        self, items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]]
    ) -> None:
        pairs = list(iter_pairs(items))
        ckeys = _canonical_batch([k for k, _ in pairs])
        checks = self._checks
        if checks is not None:
            for ckey, (key, value) in zip(ckeys, pairs):
                checks(ckey, key, value)
        entries = [self._value(v) for _, v in pairs]
        self._check_open()
        if not pairs:
            return
        token = self._begin(ckeys)
        try:
            self.inner.set_many(pairs)
        except BaseException:
            self._finish(token, ckeys, None)
            raise
        self._finish(token, ckeys, entries)

    def delete(self, key: Key) -> bool:
        ckey = _canonical(key)
        self._check_open()
        keys = [ckey]
        token = self._begin(keys)
        try:
            existed = bool(self.inner.delete(key))
        except BaseException:
            self._finish(token, keys, None)
            raise
        self._finish(token, keys, [None])
        return existed

    def delete_many(self, keys: Iterable[Key]) -> int:
        keys = list(keys)
        ckeys = _canonical_batch(keys)
        self._check_open()
        if not keys:
            return int(self.inner.delete_many(keys))
        token = self._begin(ckeys)
        try:
            n = int(self.inner.delete_many(keys))
        except BaseException:
            self._finish(token, ckeys, None)
            raise
        self._finish(token, ckeys, [None] * len(ckeys))
        return n

    def update(self, key: Key, patch: Mapping[str, Any]) -> Metadata:
        ckey = _canonical(key)
        self._check_open()
        keys = [ckey]
        token = self._begin(keys)
        try:
            merged = self.inner.update(key, patch)
        except BaseException:
            self._finish(token, keys, None)
            raise
        self._finish(token, keys, [_private(merged)])
        return merged  # type: ignore[no-any-return]

    def increment(self, key: Key, field: str, by: Number = 1) -> Number:
        ckey = _canonical(key)
        self._check_open()
        keys = [ckey]
        token = self._begin(keys)
        try:
            return self.inner.increment(key, field, by)  # type: ignore[no-any-return]
        finally:
            self._finish(token, keys, None)  # the new value is not known here: drop it

    def clear(self, prefix: tuple[Any, ...] | None = None) -> int:
        """Clear ``inner`` under ``prefix`` and forget this namespace's cached entries."""
        self._check_open()
        st = self._state
        with st.lock:
            st.epoch += 1  # reads in flight will not cache what they find
        try:
            return int(self.inner.clear(prefix))
        finally:
            with st.lock:
                st.drop_space(self._data)

    # ------------------------------------------------------------------ pass-through reads

    def scan(self, prefix: tuple[Any, ...] | None = None) -> Iterator[Key]:
        return self.inner.scan(prefix)  # type: ignore[no-any-return]

    def items(self, prefix: tuple[Any, ...] | None = None) -> Iterator[tuple[Key, Metadata]]:
        return self.inner.items(prefix)  # type: ignore[no-any-return]
