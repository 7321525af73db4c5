"""Logins with passwords outside ASCII, against servers that check passwords.

PostgreSQL: a throwaway server whose user logs in with SCRAM-SHA-256. MariaDB:
the test server, with a user the test creates and drops.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from context_framework import open_store
from context_framework.exceptions import ContextStoreError
from context_framework.testing import servers
from test_db_store import _drop, _execute

PASSWORD = "p\u00e4ss \u5bc6\u7801 \U0001f511@:/?#"  # Latin-1, CJK, an emoji and URL delimiters


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url.split("?")[0])
    user, _, host = parts.netloc.rpartition("@")
    user = user.partition(":")[0]
    return urlunsplit((parts.scheme, f"{user}:{quote(password, safe='')}@{host}", parts.path, "", ""))


@pytest.fixture(scope="module")
def pg_login() -> Iterator[str]:
    try:
        with servers.postgres_server(use_env=False, password_user=("cfuser", PASSWORD)) as url:
            yield url
    except servers.ServerUnavailable as exc:
        pytest.skip(f"no throwaway PostgreSQL server: {exc}")


@pytest.fixture
def my_login(mysql_url: str, unique_name: str) -> Iterator[str]:
    user = f"u{unique_name}"[:30]
    literal = PASSWORD.replace("'", "''")
    database = urlsplit(mysql_url).path.lstrip("/")
    for host in ("%", "localhost"):
        _execute(mysql_url, f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{literal}'")
        _execute(mysql_url, f"GRANT ALL ON `{database}`.* TO '{user}'@'{host}'")
    parts = urlsplit(mysql_url.split("?")[0])
    try:
        yield urlunsplit((parts.scheme, f"{user}@{parts.netloc.rpartition('@')[2]}", parts.path, "", ""))
    finally:
        _drop(mysql_url, unique_name)
        for host in ("%", "localhost"):
            _execute(mysql_url, f"DROP USER IF EXISTS '{user}'@'{host}'")


@pytest.fixture(params=["postgresql", "mysql"])
def login(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("pg_login" if request.param == "postgresql" else "my_login"))


@pytest.mark.servers
def test_a_password_outside_latin1_logs_in(login: str, unique_name: str) -> None:
    with open_store(_with_password(login, PASSWORD) + f"?table={unique_name}") as store:
        store.set(("row", 1), {"ok": True})
        assert store.get(("row", 1)) == {"ok": True}
        store.clear()


@pytest.mark.servers
def test_a_wrong_password_outside_latin1_is_refused_without_showing_it(login: str, unique_name: str) -> None:
    wrong = PASSWORD + "\u00df"
    with pytest.raises(ContextStoreError, match="cannot connect") as info:
        open_store(_with_password(login, wrong) + f"?table={unique_name}").close()
    assert wrong not in str(info.value) and quote(wrong, safe="") not in str(info.value)
