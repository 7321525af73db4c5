"""pytest fixtures for real servers, shared by the test suite and the benchmark suite.

Import them into a ``conftest.py``::

    from context_framework.testing.fixtures import mysql_url, postgres_url, redis_url, unique_name

Each ``*_url`` fixture (session scope) yields the URL of a real server: the
one named by an environment variable (CI points these at the services of its
machine), else a throwaway server started for this test session (see
:mod:`context_framework.testing.servers`). When no server can be had, the
tests that need it are skipped with the reason, except under ``CI=true``,
where that is a failure.

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

This module imports pytest; ``import context_framework.testing`` does not
import it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from . import servers

__all__ = [
    "IN_CI",
    "mysql_url",
    "postgres_url",
    "redis_cluster_url",
    "redis_url",
    "server_url",
    "unique_name",
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def server_url(starter: Callable[[], AbstractContextManager[str]]) -> Iterator[str]:
    """Yield the URL ``starter`` gives; skip (fail under ``CI=true``) when no server can be had."""
    try:
        cm = starter()
        url = cm.__enter__()
    except servers.ServerUnavailable as exc:
        if IN_CI:
            pytest.fail(f"CI=true but no server could be had: {exc}", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    yield from server_url(servers.redis_server)


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    yield from server_url(servers.redis_cluster)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    yield from server_url(servers.postgres_server)


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    yield from server_url(servers.mysql_server)


@pytest.fixture
def unique_name() -> str:
    """A fresh name for a namespace, table or database of one test."""
    return f"cftest_{uuid.uuid4().hex[:12]}"
