"""Shared fixtures: real servers for the Redis and SQL store tests.

The fixtures live in :mod:`context_framework.testing.fixtures` (the benchmark
suite in ``benchmarks/`` uses them too). Each ``*_url`` fixture yields the
URL of a real server: the one named by an environment variable (CI points
these at the services of its machine), else a throwaway server started for
this test session (see ``context_framework.testing.servers``). When no server
can be had, the tests that need it are skipped with the reason, except under
``CI=true``, where that is a failure.

============================  ======================================
fixture                       environment variable
============================  ======================================
``redis_url``                 ``CONTEXT_FRAMEWORK_REDIS_URL``
``redis_cluster_url``         ``CONTEXT_FRAMEWORK_REDIS_CLUSTER_URL``
``postgres_url``              ``CONTEXT_FRAMEWORK_POSTGRES_URL``
``mysql_url``                 ``CONTEXT_FRAMEWORK_MYSQL_URL``
============================  ======================================

Tests never depend on data left in a server: each uses its own namespace,
table or database (``unique_name``) and removes it afterwards.
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
