"""Conformance tests every context store must pass, shipped with the package.

Two helpers, in the style of zarr-python's ``zarr.testing.store.StoreTests``
and dogpile.cache's generic backend suite:

* :class:`StoreTests` (needs pytest): subclass it in a store's test module
  and implement ``make_store(**options)``::

      from context_framework.testing import StoreTests

      class TestMyStore(StoreTests):
          def make_store(self, **options):
              return MyStore(url, **options)   # fresh, EMPTY store

  See :mod:`context_framework.testing.store_tests` for the whole protocol
  (``reopen_store``, ``cleanup_store``, ``shares_data_when_pickled``...).

* :class:`StoreStateMachine` (needs Hypothesis): random operations checked
  against a plain ``dict`` model. One line gives a test case::

      from context_framework.testing import make_state_machine_test

      TestMyStoreStateMachine = make_state_machine_test(lambda: MyStore(url))

Nothing here is imported by ``import context_framework``, and importing
``context_framework.testing`` itself imports neither pytest nor Hypothesis:
each helper's module is loaded on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .state_machine import StoreStateMachine, make_state_machine_test, run_state_machine
    from .store_tests import StoreTests

__all__ = ["StoreStateMachine", "StoreTests", "make_state_machine_test", "run_state_machine"]

_LAZY = {
    "StoreTests": ".store_tests",
    "StoreStateMachine": ".state_machine",
    "make_state_machine_test": ".state_machine",
    "run_state_machine": ".state_machine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
