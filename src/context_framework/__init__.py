"""context-framework: typed, queryable metadata ("context") for any part of your data.

Quick start::

    import pandas as pd
    from context_framework import InMemoryContextStore, PandasContextAdapter

    df = pd.DataFrame({"A": range(5)})
    adapter = PandasContextAdapter(df, context_store=InMemoryContextStore())
    adapter.add_context(("column", "A"), {"source": "sensor 7"})
    adapter.get_context(("column", "A"))          # {'source': 'sensor 7'}

``import context_framework`` needs no optional dependency; adapters and
stores that need one are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base_store import BaseContextStore, ContextStore
from .exceptions import (
    ContextConfigurationError,
    ContextError,
    ContextKeyError,
    ContextSchemaError,
    ContextSerializationError,
    ContextStoreBusyError,
    ContextStoreClosedError,
    ContextStoreError,
    ContextValueError,
    ContextValueTooLargeError,
    ContextWritesRefusedError,
    LabelNotFoundError,
    MissingDependencyError,
    UnsupportedKeyError,
)
from .in_memory_context_store import InMemoryContextStore
from .keys import Key, decode_key, encode_key
from .registry import open_store, register_store

__version__ = "0.1.0"

__all__ = [
    "BaseContextAdapter",
    "BaseContextStore",
    "BufferedStore",
    "CachedStore",
    "ContextAwareDataStructure",
    "ContextConfigurationError",
    "ContextError",
    "ContextKeyError",
    "ContextSchemaError",
    "ContextSerializationError",
    "ContextStore",
    "ContextStoreBusyError",
    "ContextStoreClosedError",
    "ContextStoreError",
    "ContextValueError",
    "ContextValueTooLargeError",
    "ContextWritesRefusedError",
    "DBContextStore",
    "DaskContextAdapter",
    "DatabaseContextStore",
    "InMemoryContextStore",
    "Key",
    "LabelNotFoundError",
    "MPIContext",
    "MissingDependencyError",
    "PandasContextAdapter",
    "RedisContextStore",
    "SQLiteContextStore",
    "ShardedStore",
    "SparkContextAdapter",
    "UnsupportedKeyError",
    "copy_store",
    "decode_key",
    "encode_key",
    "export_store",
    "import_store",
    "open_store",
    "register_store",
    "wrap_store",
]

_LAZY = {
    "SQLiteContextStore": "context_framework.sqlite_store",
    "RedisContextStore": "context_framework.redis_store",
    "DBContextStore": "context_framework.db_store",
    "DatabaseContextStore": "context_framework.db_store",
    "BaseContextAdapter": "context_framework.adapters.base_adapter",
    "PandasContextAdapter": "context_framework.adapters.pandas_adapter",
    "ContextAwareDataStructure": "context_framework.context_aware_data_structure",
    "SparkContextAdapter": "context_framework.adapters.spark_adapter",
    "DaskContextAdapter": "context_framework.adapters.dask_adapter",
    "MPIContext": "context_framework.mpi",
    "BufferedStore": "context_framework.wrappers.buffered",
    "CachedStore": "context_framework.wrappers.cached",
    "ShardedStore": "context_framework.wrappers.sharded",
    "wrap_store": "context_framework.wrappers",
    "export_store": "context_framework.checkpoint",
    "import_store": "context_framework.checkpoint",
    "copy_store": "context_framework.checkpoint",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
