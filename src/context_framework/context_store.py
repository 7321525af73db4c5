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
    from .sqlite_store import SQLiteContextStore

__all__ = [
    "BaseContextStore",
    "ContextStore",
    "InMemoryContextStore",
    "Metadata",
    "SQLiteContextStore",
    "open_store",
    "register_store",
]

_LAZY = {
    "SQLiteContextStore": "context_framework.sqlite_store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
