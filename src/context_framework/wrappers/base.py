"""``WrapperStore``: the delegating base class of every store wrapper.

A wrapper holds an ``inner`` store and forwards every operation to it; a
subclass overrides only what it changes (``BufferedStore`` the writes,
``CachedStore`` the reads, ``ShardedStore`` the routing). Wrappers stack:
``CachedStore(BufferedStore(RedisContextStore(...)))``.

Namespaces: ``wrapper.with_namespace(name)`` is a wrapper of the same class
around ``inner.with_namespace(name)`` that shares the wrapper's state (its
buffer, its cache); subclasses keep that state in attributes that the
shallow copy shares. Closing the wrapper that was built first closes its
views and, unless ``close_inner=False``, the inner store.

Pickling sends the inner store (which pickles by its configuration) and the
wrapper's options, never its buffer or cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

from ..base_store import BaseContextStore, ContextStore, Metadata, Number
from ..in_memory_context_store import _size_bound
from ..keys import Key
from ..values import DEFAULT_MAX_VALUE_SIZE
from .minimal import FULL_API, complete_store

__all__ = ["WrapperStore", "WriteChecks", "unwrap", "write_checks"]

W = TypeVar("W", bound="WrapperStore")


class WrapperStore(BaseContextStore):
    """Forward everything to ``inner``. Subclasses override what they change.

    ``keeps_keys``: whether every key reaches ``inner`` unchanged and nothing is
    routed elsewhere (a buffer, a cache); a cache may then subscribe to the
    invalidations of the store below.

    Args:
        inner: any context store (a ``BaseContextStore`` or anything with its methods);
            one with only ``set``/``get``/``delete``/``list_keys`` is completed by
            :func:`~context_framework.wrappers.as_context_store`.
        close_inner: whether closing this wrapper closes ``inner`` too (default: yes).
    """

    keeps_keys: ClassVar[bool] = False

    def __init__(self, inner: ContextStore, *, close_inner: bool = True) -> None:
        inner = complete_store(inner, close_inner=close_inner)  # a four-method store, completed
        missing = [m for m in FULL_API if not callable(getattr(inner, m, None))]
        if missing:
            raise TypeError(
                f"{type(self).__name__} wraps a context store, got {type(inner).__name__} "
                f"without {', '.join(missing)}"
            )
        super().__init__(
            namespace=inner.namespace,
            max_value_size=getattr(inner, "max_value_size", DEFAULT_MAX_VALUE_SIZE),
        )
        self.inner: Any = inner
        self.close_inner = close_inner

    # ------------------------------------------------------------------ delegation

    def set(self, key: Key, value: Mapping[str, Any]) -> None:
        self.inner.set(key, value)

    def get(self, key: Key, default: Any = None) -> Metadata | None:
        return self.inner.get(key, default)

    def delete(self, key: Key) -> bool:
        return bool(self.inner.delete(key))

    def scan(self, prefix: tuple[Any, ...] | None = None) -> Iterator[Key]:
        return self.inner.scan(prefix)  # type: ignore[no-any-return]

    def set_many(
        self, items: Mapping[Key, Mapping[str, Any]] | Iterable[tuple[Key, Mapping[str, Any]]]
    ) -> None:
        self.inner.set_many(items)

    def get_many(self, keys: Iterable[Key]) -> list[Metadata | None]:
        return self.inner.get_many(keys)  # type: ignore[no-any-return]

    def delete_many(self, keys: Iterable[Key]) -> int:
        return int(self.inner.delete_many(keys))

    def items(self, prefix: tuple[Any, ...] | None = None) -> Iterator[tuple[Key, Metadata]]:
        return self.inner.items(prefix)  # type: ignore[no-any-return]

    def count(self, prefix: tuple[Any, ...] | None = None) -> int:
        return int(self.inner.count(prefix))

    def list_keys(self, prefix: tuple[Any, ...] | None = None) -> list[Key]:
        return list(self.scan(prefix))

    def exists(self, key: Key) -> bool:
        return bool(self.inner.exists(key))

    def clear(self, prefix: tuple[Any, ...] | None = None) -> int:
        return int(self.inner.clear(prefix))

    def update(self, key: Key, patch: Mapping[str, Any]) -> Metadata:
        return self.inner.update(key, patch)  # type: ignore[no-any-return]

    def increment(self, key: Key, field: str, by: Number = 1) -> Number:
        return self.inner.increment(key, field, by)  # type: ignore[no-any-return]

    def check_write(self, key: Key, value: Any) -> None:
        """What ``inner`` checks (the generic checks for a store without ``check_write``)."""
        check = getattr(self.inner, "check_write", None)
        if check is None:
            super().check_write(key, value)
        else:
            check(key, value)

    def check_write_key(self, key: Key) -> None:
        check = getattr(self.inner, "check_write_key", None)
        if check is None:
            super().check_write_key(key)
        else:
            check(key)

    @property
    def max_key_size(self) -> int | None:
        return getattr(self.inner, "max_key_size", None)

    def flush(self) -> None:
        """Send what this wrapper (or a wrapper below it) holds back to the store."""
        flush = getattr(self.inner, "flush", None)
        if flush is not None:
            flush()

    # ------------------------------------------------------------------ namespaces / lifecycle

    def with_namespace(self: W, name: str) -> W:
        """A wrapper around ``inner.with_namespace(name)`` sharing this wrapper's state."""
        self._check_open()
        child = object.__new__(type(self))
        child.__dict__.update(self.__dict__)
        child.inner = self.inner.with_namespace(name)
        child._namespace = child.inner.namespace
        child._is_view = True
        self._views.add(child)
        child._bind_namespace()
        return child

    def close(self) -> None:
        """Close the wrapper (and its views); close ``inner`` too unless ``close_inner=False``."""
        if self._closed:
            return
        if self._is_view:
            try:
                self._close_view()
            finally:
                self._mark_closed()
                self.inner.close()
            return
        super().close()

    def _close_view(self) -> None:
        """Hook: a view is being closed (the owner's state stays open)."""

    def _close_backend(self) -> None:
        if self.close_inner:
            self.inner.close()

    def _config(self) -> dict[str, Any]:
        return {"close_inner": self.close_inner}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rewrap, (type(self), self.inner, self._config()))

    def _describe(self) -> str:
        return repr(self.inner)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()}{', closed' if self._closed else ''})"


class WriteChecks:
    """What a wrapper checks in a write before handing it on (or holding it back), so that a
    write the store below would refuse fails at once; see :func:`write_checks`.

    ``full``: ``full(key, value)`` for every write (a store with value rules of its own),
    else ``None``: the store's value rules are the generic ones, which the wrapper applies
    itself with the store's ``max_value_size``. ``key``: ``key(k)`` for a key that may
    encode to more than ``room`` bytes, else ``None``: every encodable key is accepted.
    """

    __slots__ = ("full", "head", "key", "room")

    def __init__(self, full: Callable[[Key, Any], None] | None, key: Callable[[Key], None] | None, room: int):
        self.full = full
        self.key = key
        self.room = room
        #: A canonical ``(str, int)`` key whose str is at most this long needs no check at all
        #: (hot paths test it inline): 1 header byte, 2 per char + 2, an int of <= 257 bytes.
        self.head = -1 if full is not None else (room - 261) // 2

    def __call__(self, ckey: Any, key: Key, value: Any) -> None:
        """Check a write of ``value`` under ``key`` (``ckey``: its canonical form, see
        ``in_memory_context_store._canonical``); raise what the store below would."""
        check = self.key
        if check is not None and _size_bound(ckey) > self.room:
            check(key)  # it may not fit: the store's own check, on the encoded key
        if self.full is not None:
            self.full(key, value)


def write_checks(inner: Any) -> WriteChecks | None:
    """The :class:`WriteChecks` for ``inner``, or ``None`` when it checks nothing beyond the
    generic rules (a store without ``check_write`` gets the generic checks only)."""
    owner = inner
    while (
        isinstance(owner, WrapperStore)
        and type(owner).check_write is WrapperStore.check_write
        and type(owner).check_write_key is WrapperStore.check_write_key
    ):
        owner = owner.inner  # a wrapper that delegates its checks: the rules are those below
    if not isinstance(owner, BaseContextStore):
        full = getattr(inner, "check_write", None)
        return None if full is None else WriteChecks(full, None, 0)
    describe = getattr(owner, "_write_checks", None)
    if describe is not None:  # a store of stores (sharding) knows its shards' checks
        return describe()  # type: ignore[no-any-return]
    if type(owner).check_write is not BaseContextStore.check_write:
        return WriteChecks(inner.check_write, None, 0)
    room = inner.max_key_size
    if room is None and type(owner).check_write_key is BaseContextStore.check_write_key:
        return None
    return WriteChecks(None, inner.check_write_key, -1 if room is None else room)


def _rewrap(cls: type[WrapperStore], inner: Any, config: dict[str, Any]) -> WrapperStore:
    return cls(inner, **config)


def unwrap(store: Any) -> Any:
    """The innermost store under any stack of wrappers."""
    while isinstance(store, WrapperStore):
        store = store.inner
    return store
