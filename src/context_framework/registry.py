"""Open stores by URL: a lazy registry of schemes plus an entry-point group.

``open_store("memory://")``, ``open_store("sqlite:///path/ctx.db")``, and
later ``redis://``, ``postgresql://`` ... Built-in backends are registered
by *import path* and imported only when a URL with their scheme is opened,
so ``import context_framework`` pulls in no driver. Third-party packages
register a store class under the entry-point group ``context_framework.stores``::

    [project.entry-points."context_framework.stores"]
    mystore = "mypackage.stores:MyStore"

A store class opened by URL must provide ``from_url(url, **options)``
(``BaseContextStore`` subclasses inherit one, built on :mod:`context_framework.urls`;
they override ``_parse_url`` when their URL has a host or a path).

Query parameters common to every store: ``namespace`` and ``max_value_size``.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from .exceptions import ContextConfigurationError, MissingDependencyError
from .urls import WRAPPER_OPTIONS, coerce_option, mask_url, split_options

__all__ = ["ENTRY_POINT_GROUP", "available_schemes", "open_store", "register_store"]

ENTRY_POINT_GROUP = "context_framework.stores"
_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]*")

# scheme -> "module:Class" (lazy) or the class itself
_registry: dict[str, Any] = {
    "memory": "context_framework.in_memory_context_store:InMemoryContextStore",
    "mem": "context_framework.in_memory_context_store:InMemoryContextStore",
    "sqlite": "context_framework.sqlite_store:SQLiteContextStore",
    # Redis: TCP, TLS, a Unix socket (redis-py's own spelling is unix://), Redis Cluster.
    **{
        scheme: "context_framework.redis_store:RedisContextStore"
        for scheme in ("redis", "rediss", "redis+unix", "unix", "redis+cluster", "rediss+cluster")
    },
    **{
        scheme: "context_framework.db_store:DBContextStore"
        for scheme in (
            "postgresql",
            "postgres",
            "postgresql+psycopg",
            "postgresql+psycopg2",
            "mysql",
            "mariadb",
            "mysql+pymysql",
            "mariadb+pymysql",
            "mysql+mysqldb",
        )
    },
}
# extra needed per built-in scheme, to name it when the import fails
_extras: dict[str, str] = {
    **{s: "redis" for s in ("redis", "rediss", "redis+unix", "unix", "redis+cluster", "rediss+cluster")},
    **{s: "postgres" for s in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")},
    **{s: "mysql" for s in ("mysql", "mariadb", "mysql+pymysql", "mariadb+pymysql", "mysql+mysqldb")},
}
_entry_points_loaded = False


def register_store(scheme: str, target: Any, *, replace: bool = False) -> None:
    """Register a store class (or ``"module:Class"`` string) for a URL scheme."""
    scheme = scheme.lower() if isinstance(scheme, str) else scheme
    # RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ); urlsplit finds no other scheme.
    if not isinstance(scheme, str) or not _SCHEME_RE.fullmatch(scheme):
        raise ContextConfigurationError(
            f"invalid URL scheme {scheme!r}: a letter, then letters, digits, '+', '-' or '.'"
        )
    if scheme in _registry and not replace and _registry[scheme] != target:
        raise ContextConfigurationError(
            f"URL scheme {scheme!r} is already registered to {_registry[scheme]!r}; "
            "pass replace=True to override it"
        )
    _registry[scheme] = target


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _registry.setdefault(ep.name.lower(), ep.value)


def available_schemes() -> list[str]:
    """Every registered URL scheme (built-in, registered, and from entry points)."""
    _load_entry_points()
    return sorted(_registry)


def _resolve(scheme: str) -> Any:
    if scheme not in _registry:
        _load_entry_points()
    if scheme not in _registry:
        raise ContextConfigurationError(
            f"no store is registered for URL scheme {scheme!r}; "
            f"known schemes: {', '.join(available_schemes())}"
        )
    target = _registry[scheme]
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            extra = _extras.get(scheme)
            if extra and not isinstance(exc, MissingDependencyError):
                raise MissingDependencyError.for_extra(extra, exc.name or module_name) from exc
            raise
        target = getattr(module, attr)
        _registry[scheme] = target
    return target


#: Scheme prefixes that stack a wrapper on the store named by the rest of the URL.
WRAPPER_PREFIXES = ("buffered", "cached", "sharded")


def _peel(url: str) -> tuple[list[str], str]:
    """(wrapper prefixes, URL without them): ``buffered+redis://h`` -> (["buffered"], "redis://h")."""
    scheme, sep, rest = url.partition("://")
    layers: list[str] = []
    parts = scheme.lower().split("+")
    while len(parts) > 1 and parts[0] in WRAPPER_PREFIXES:
        if parts[0] in layers:
            raise ContextConfigurationError(f"{parts[0]!r} appears twice in the store URL scheme {scheme!r}")
        layers.append(parts.pop(0))
    return layers, "+".join(parts) + sep + rest


def _wrapper_options(url: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Take the wrapper options out of the URL query and ``options``; return the rest of the URL."""
    from urllib.parse import urlencode

    base, query = split_options(url)
    found: dict[str, Any] = {}
    for name, kind in WRAPPER_OPTIONS.items():
        if name in query:
            found[name] = coerce_option(name, query.pop(name), kind)
        if name in options:
            found[name] = options.pop(name)
    return (f"{base}?{urlencode(query)}" if query else base), found


def open_store(url: str, **options: Any) -> Any:
    """Open a store from a URL such as ``memory://`` or ``sqlite:///ctx.db``.

    Keyword ``options`` override query parameters of the URL.

    Wrappers stack on any URL: the scheme prefixes ``buffered+``, ``cached+``
    and ``sharded+`` (``buffered+cached+redis://host/0``;
    ``sharded+redis://h1:6379,h2:6379/0`` spreads keys over the listed
    servers), or the options ``buffer`` (writes per batch), ``flush_interval``
    (seconds), ``cache`` (entries kept) and ``cache_ttl`` (seconds). The stack
    is always ``CachedStore(BufferedStore(store))``, whatever the spelling.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ContextConfigurationError(
            "a store URL looks like 'memory://' or 'sqlite:///path/to/ctx.db', got "
            f"{mask_url(url) if isinstance(url, str) else url!r}"
        )
    layers, url = _peel(url)
    url, wrapping = _wrapper_options(url, options)
    if "sharded" in layers:
        from .wrappers.sharded import ShardedStore

        store = ShardedStore.from_url(url, **options)
    else:
        scheme = url.partition("://")[0].lower()
        cls = _resolve(scheme)
        from_url = getattr(cls, "from_url", None)
        if from_url is None:
            raise ContextConfigurationError(f"{cls!r} registered for {scheme!r} has no from_url()")
        store = from_url(url, **options)
    if not (layers or wrapping):
        return store
    from .wrappers import wrap_store

    try:
        return wrap_store(
            store,
            buffer=wrapping.get("buffer", "buffered" in layers or None),
            flush_interval=wrapping.get("flush_interval"),
            cache=wrapping.get("cache", "cached" in layers or None),
            cache_ttl=wrapping.get("cache_ttl"),
        )
    except BaseException:
        store.close()
        raise
