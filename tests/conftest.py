"""Shared fixtures: real servers for the Redis and SQL store tests.

Each ``*_url`` fixture yields the URL of a real server: the one named by an
environment variable (CI points these at the services of its machine), else
a throwaway server started for this test session (see
``context_framework.testing.servers``). When no server can be had, the tests
that need it are skipped with the reason, except under ``CI=true``, where
that is a failure.

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

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from context_framework.testing import servers

_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _server(starter: Callable[[], AbstractContextManager[str]]) -> Iterator[str]:
    try:
        cm = starter()
        url = cm.__enter__()
    except servers.ServerUnavailable as exc:
        if _IN_CI:
            pytest.fail(f"CI=true but no server could be had: {exc}", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    yield from _server(servers.redis_server)


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    yield from _server(servers.redis_cluster)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    yield from _server(servers.postgres_server)


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    yield from _server(servers.mysql_server)


@pytest.fixture
def unique_name() -> str:
    """A fresh name for a namespace, table or database of one test."""
    return f"cftest_{uuid.uuid4().hex[:12]}"
