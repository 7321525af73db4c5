"""The benchmark suite's options and fixtures (servers come from ``context_framework.testing.fixtures``).

``--bench-ops N`` (default 10,000, as the spec) sets the entries of every
benchmark; ``--bench-rounds R`` (default 5) the rounds of each. The test
suite runs this suite with ``--benchmark-disable --bench-ops 50`` so that it
cannot rot (``tests/test_bench_suite.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from context_framework.bench.targets import open_target
from context_framework.testing.fixtures import postgres_url, redis_url

__all__ = ["postgres_url", "redis_url"]

#: The stores of the suite; the server ones use the session fixtures (env var or throwaway server).
STORES = ("memory", "sqlite", "redis", "postgres")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("context-framework benchmarks")
    group.addoption("--bench-ops", type=int, default=10_000, help="entries per benchmark (default 10,000)")
    group.addoption("--bench-rounds", type=int, default=5, help="rounds per benchmark (default 5)")


@pytest.fixture(scope="session")
def ops(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--bench-ops"))


@pytest.fixture(scope="session")
def rounds(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--bench-rounds"))


@pytest.fixture(scope="session")
def df(ops: int) -> pd.DataFrame:
    """The spec's DataFrame: 100,000 rows (more when ``--bench-ops`` asks for more)."""
    return pd.DataFrame({"A": range(max(100_000, ops))})


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh, empty store of each kind, removed afterwards."""
    kind = request.param
    url = request.getfixturevalue(f"{kind}_url") if kind in ("redis", "postgres") else None
    with open_target(kind, url) as target:
        yield target
