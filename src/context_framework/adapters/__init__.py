"""Adapters: bind a data structure to a store and interpret keys for it.

``PandasContextAdapter`` (needs pandas) is imported lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base_adapter import BaseContextAdapter

__all__ = ["BaseContextAdapter", "PandasContextAdapter"]


def __getattr__(name: str) -> Any:
    if name == "PandasContextAdapter":
        return importlib.import_module(".pandas_adapter", __name__).PandasContextAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
