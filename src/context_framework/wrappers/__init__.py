"""Store wrappers: write-behind buffering, read caching, sharding. They stack.

* :class:`BufferedStore` collects writes and sends them in batches;
* :class:`CachedStore` keeps recently used entries in this process;
* :class:`ShardedStore` spreads keys over several stores;
* :func:`as_context_store` (a :class:`MinimalStoreWrapper`) completes a store
  that has only ``set``/``get``/``delete``/``list_keys`` (``docs/custom-store.md``).

Turn them on without changing code that uses the store: by URL
(``open_store("buffered+cached+redis://host/0")`` or
``open_store("redis://host/0?buffer=1000&cache=10000")``), by adapter options
(``PandasContextAdapter(df, store, buffer=1000, cache=10000)``), or with
:func:`wrap_store`. However they are asked for, the stack is always
``CachedStore(BufferedStore(store))``: the cache sees every write of this
process, and the buffer batches what reaches the store.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import WrapperStore, unwrap
from .minimal import MinimalStoreWrapper, as_context_store

__all__ = [
    "BufferedStore",
    "CachedStore",
    "MinimalStoreWrapper",
    "ShardedStore",
    "WrapperStore",
    "as_context_store",
    "unwrap",
    "wrap_store",
]

_LAZY = {
    "BufferedStore": "context_framework.wrappers.buffered",
    "CachedStore": "context_framework.wrappers.cached",
    "ShardedStore": "context_framework.wrappers.sharded",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def wrap_store(
    store: Any,
    *,
    buffer: int | bool | None = None,
    flush_interval: float | None = None,
    cache: int | bool | None = None,
    cache_ttl: float | None = None,
    close_inner: bool = True,
) -> Any:
    """``store`` with a write buffer and/or a read cache, stacked as ``Cached(Buffered(store))``.

    ``buffer``: ``True`` or the number of writes that triggers a flush;
    ``flush_interval``: seconds after which buffered writes are sent anyway;
    ``cache``: ``True`` or the number of entries kept; ``cache_ttl``: seconds
    an entry stays. ``None``/``False``/``0`` leave a layer out (unless its
    other option is given). ``close_inner=False``: closing the result flushes
    it but leaves ``store`` open.
    """
    from ..exceptions import ContextConfigurationError

    for name, value in (("buffer", buffer), ("cache", cache)):
        if value is not None and not isinstance(value, (bool, int)):
            raise ContextConfigurationError(f"{name} must be a bool or an int, got {value!r}")
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise ContextConfigurationError(f"{name} must be >= 0, got {value!r}")
    if buffer or flush_interval is not None:
        from .buffered import BufferedStore

        kwargs: dict[str, Any] = {}
        if buffer is not None and not isinstance(buffer, bool):
            kwargs["max_items"] = buffer
        if flush_interval is not None:
            kwargs["flush_interval"] = flush_interval
        store = BufferedStore(store, close_inner=close_inner, **kwargs)
        close_inner = True
    if cache or cache_ttl is not None:
        from .cached import CachedStore

        kwargs = {}
        if cache is not None and not isinstance(cache, bool):
            kwargs["max_size"] = cache
        if cache_ttl is not None:
            kwargs["ttl"] = cache_ttl
        store = CachedStore(store, close_inner=close_inner, **kwargs)
    return store
