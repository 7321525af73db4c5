"""Shared fixtures: real servers for the Redis and SQL store tests.

They live in :mod:`context_framework.testing.fixtures` (the benchmark suite in
``benchmarks/`` uses them too); see its docstring for the environment
variables and the throwaway servers.
"""

from __future__ import annotations

from context_framework.testing.fixtures import (
    mysql_url,
    postgres_url,
    redis_cluster_url,
    redis_url,
    unique_name,
)

__all__ = ["mysql_url", "postgres_url", "redis_cluster_url", "redis_url", "unique_name"]
