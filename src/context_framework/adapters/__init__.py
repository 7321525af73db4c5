"""Adapters: bind a data structure to a store and interpret keys for it.

``PandasContextAdapter`` (pandas), ``SparkContextAdapter`` (pyspark) and
``DaskContextAdapter`` (dask) are imported lazily, on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base_adapter import BaseContextAdapter

__all__ = ["BaseContextAdapter", "DaskContextAdapter", "PandasContextAdapter", "SparkContextAdapter"]

_LAZY = {
    "PandasContextAdapter": ".pandas_adapter",
    "SparkContextAdapter": ".spark_adapter",
    "DaskContextAdapter": ".dask_adapter",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
