"""The spec's import path for stores.

``from context_framework.context_store import ContextStore, InMemoryContextStore``.
Store classes that need optional drivers are resolved lazily on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base_store import BaseContextStore, ContextStore, Metadata
from .in_memory_context_store import InMemoryContextStore
from .registry import open_store, register_store

if TYPE_CHECKING:  # resolved lazily at run time by __getattr__ below
    from .db_store import DatabaseContextStore, DBContextStore
    from .redis_store import RedisContextStore
    from .sqlite_store import SQLiteContextStore

__all__ = [
    "BaseContextStore",
    "ContextStore",
    "DBContextStore",
    "DatabaseContextStore",
    "InMemoryContextStore",
    "Metadata",
    "RedisContextStore",
    "SQLiteContextStore",
    "open_store",
    "register_store",
]

_LAZY = {
    "SQLiteContextStore": "context_framework.sqlite_store",
    "RedisContextStore": "context_framework.redis_store",
    "DBContextStore": "context_framework.db_store",
    "DatabaseContextStore": "context_framework.db_store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
