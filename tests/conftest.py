"""Shared fixtures: real servers for the Redis and SQL store tests.

They live in :mod:`context_framework.testing.fixtures` (the benchmark suite in
``benchmarks/`` uses them too); see its docstring for the environment
variables and the throwaway servers.

Tests that need no server, no engine (Spark, Dask, MPI) and are not slow get the
marker ``quick``: ``python -m pytest -m quick`` is the newcomer's fast subset.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from context_framework.testing import servers
from context_framework.testing.fixtures import (
    IN_CI,
    mysql_url,
    postgres_url,
    redis_cluster_url,
    redis_url,
    unique_name,
)

__all__ = ["mysql_url", "postgres_url", "redis_cluster_url", "redis_url", "unique_name"]

@pytest.fixture
def restartable() -> Iterator[servers.RestartableRedis]:
    """A throwaway Redis server of this test's own, which it may stop and start again."""
    try:
        with servers.restartable_redis() as server:
            yield server
    except servers.ServerUnavailable as exc:
        if IN_CI:
            pytest.fail(f"CI=true but no Redis server could be started: {exc}", pytrace=False)
        pytest.skip(str(exc))


#: Fixtures that stand for a server (a test asking for one, directly or through another fixture).
_SERVER_FIXTURES = {
    "redis_url", "redis_cluster_url", "postgres_url", "mysql_url", "url", "server_url",
    "restartable", "private_server", "redis_urls", "make_url",
}  # fmt: skip
#: Parameter ids that name a server store.
_SERVER_PARAMS = re.compile(r"redis|cluster|standalone|postgres|mysql|mariadb")
#: Conformance classes of server stores (their server comes from a class fixture).
_SERVER_CLASS = re.compile(r"Redis|Postgres|MySQL|MariaDB")
#: Test modules that start an engine (a Spark session, a Dask cluster, MPI ranks) or servers.
_HEAVY_MODULES = {
    "test_spark_adapter", "test_dask_adapter", "test_mpi", "test_bench_engines", "test_bench_suite",
    "test_servers",
}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") or item.get_closest_marker("servers"):
            continue
        if _SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is not None and _SERVER_PARAMS.search(callspec.id):
            continue
        cls = getattr(item, "cls", None)
        if cls is not None and _SERVER_CLASS.search(cls.__name__):
            continue
        module = getattr(item, "module", None)
        if module is not None and module.__name__ in _HEAVY_MODULES:
            continue
        item.add_marker(pytest.mark.quick)
