"""Importing the package pulls in no optional dependency, and every documented path works."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("pandas", "numpy", "redis", "sqlalchemy", "pyspark", "dask", "mpi4py", "psycopg", "pymysql")
TEST_ONLY = ("pytest", "hypothesis")


def run(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it must print one JSON document."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "module",
    [
        "context_framework",
        "context_framework.context_store",
        "context_framework.exceptions",
        "context_framework.keys",
        "context_framework.values",
        "context_framework.base_store",
        "context_framework.registry",
        "context_framework.in_memory_context_store",
        "context_framework.context_aware_data_structure",
        "context_framework.adapters",
        "context_framework.adapters.base_adapter",
        "context_framework.testing",
        "context_framework.wrappers",
        "context_framework.wrappers.buffered",
        "context_framework.wrappers.cached",
        "context_framework.wrappers.sharded",
        "context_framework.wrappers.minimal",
        "context_framework.distributed",
        "context_framework.checkpoint",
        "context_framework.mpi",
    ],
)
def test_import_pulls_in_no_optional_dependency(module: str) -> None:
    code = f"""
import json, sys
import {module}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY + TEST_ONLY!r})))
"""
    assert run(code) == []


def test_using_the_in_memory_store_pulls_in_nothing_optional() -> None:
    code = f"""
import json, pickle, sys
from context_framework import InMemoryContextStore, open_store
store = open_store("memory://?namespace=a")
store.set(("row", 1), {{"a": [1]}})
store.update(("row", 1), {{"b": 2}})
store.increment(("row", 1), "n")
store.list_keys(("row",))
pickle.loads(pickle.dumps(store))
store.close()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY + TEST_ONLY!r})))
"""
    assert run(code) == []


def test_design_import_paths() -> None:
    code = """
import json
from context_framework.context_store import ContextStore, InMemoryContextStore
from context_framework.in_memory_context_store import InMemoryContextStore as Direct
from context_framework.context_aware_data_structure import ContextAwareDataStructure
from context_framework.adapters.base_adapter import BaseContextAdapter
from context_framework.adapters.pandas_adapter import PandasContextAdapter
from context_framework.exceptions import ContextKeyError, ContextStoreError
import context_framework
assert InMemoryContextStore is Direct is context_framework.InMemoryContextStore
assert ContextStore is context_framework.ContextStore
assert PandasContextAdapter is context_framework.PandasContextAdapter
assert BaseContextAdapter is context_framework.BaseContextAdapter
assert ContextAwareDataStructure is context_framework.ContextAwareDataStructure
assert issubclass(ContextKeyError, KeyError)
assert issubclass(ContextKeyError, context_framework.ContextError)
assert issubclass(ContextStoreError, context_framework.ContextError)
assert isinstance(InMemoryContextStore(), ContextStore)
print(json.dumps("ok"))
"""
    pytest.importorskip("pandas")
    assert run(code) == "ok"


def test_testing_helpers_load_lazily() -> None:
    code = """
import json, sys
import context_framework.testing as testing
before = sorted(m for m in sys.modules if m.split(".")[0] in ("pytest", "hypothesis"))
machine = testing.StoreStateMachine
after_machine = "hypothesis" in sys.modules and "pytest" not in sys.modules
tests = testing.StoreTests
print(json.dumps([before, after_machine, "pytest" in sys.modules, sorted(testing.__all__)]))
"""
    before, after_machine, pytest_loaded, names = run(code)  # type: ignore[misc]
    assert before == []
    assert after_machine is True
    assert pytest_loaded is True
    assert names == ["StoreStateMachine", "StoreTests", "make_state_machine_test", "run_state_machine"]


def test_public_names_resolve() -> None:
    import context_framework

    for name in context_framework.__all__:
        if name == "SQLiteContextStore":
            continue  # written concurrently; resolved lazily like the others
        assert getattr(context_framework, name) is not None, name
    with pytest.raises(AttributeError):
        context_framework.NoSuchThing  # noqa: B018
    import context_framework.testing

    with pytest.raises(AttributeError):
        context_framework.testing.NoSuchThing  # noqa: B018
