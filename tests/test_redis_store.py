"""RedisContextStore: the conformance suite and state machine (standalone and cluster) plus Redis specifics.

URLs and options, credentials (never shown), a server that is down or goes
away mid-batch, TTLs, the exactness of the Lua ``update``/``increment``
scripts, cluster routing, and several processes sharing one server.

Servers come from the ``redis_url`` / ``redis_cluster_url`` fixtures; every
test works under its own key prefix (``unique_name``) and deletes it after.
A few tests start a private ``redis-server`` (skipped without the binary).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import pickle
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

redis = pytest.importorskip("redis")

from context_framework import open_store  # noqa: E402
from context_framework.base_store import BaseContextStore, apply_increment  # noqa: E402
from context_framework.exceptions import (  # noqa: E402
    ContextConfigurationError,
    ContextSerializationError,
    ContextStoreClosedError,
    ContextStoreError,
    ContextValueError,
    ContextValueTooLargeError,
    MissingDependencyError,
)
from context_framework.keys import encode_key  # noqa: E402
from context_framework.redis_store import RedisContextStore  # noqa: E402
from context_framework.testing import StoreTests, run_state_machine, servers  # noqa: E402
from context_framework.values import dumps_json  # noqa: E402

# --------------------------------------------------------------------------- helpers


def _raw_client(url: str, cluster: bool = False) -> Any:
    """A plain redis-py client for the server (or cluster) of a store URL."""
    config = RedisContextStore._parse_url(url.partition("?")[0])
    common = {"username": config.get("username"), "password": config.get("password")}
    if cluster or config.get("cluster"):
        from redis.cluster import RedisCluster

        return RedisCluster(host=config["host"], port=config["port"], **common)
    if "unix_socket_path" in config:
        return redis.Redis(unix_socket_path=config["unix_socket_path"], **common)
    return redis.Redis(host=config["host"], port=config["port"], db=config.get("db", 0), **common)


@contextlib.contextmanager
def _swept(url: str, prefix: str, cluster: bool = False) -> Iterator[None]:
    try:
        yield
    finally:
        servers.sweep_redis_prefix(url, prefix, cluster=cluster)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _PrivateServer:
    """A throwaway redis-server on a free loopback port and a Unix socket."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.socket = str(workdir / "redis.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--unixsocket",
                self.socket,
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                if os.path.exists(self.socket):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("the private redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def private_server() -> Iterator[_PrivateServer]:
    # Unix socket paths are limited to ~100 bytes: use a short directory.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cfr") as short:
        server = _PrivateServer(Path(short))
        try:
            yield server
        finally:
            server.kill()


# --------------------------------------------------------------------------- conformance


class _RedisSuite(StoreTests):
    cluster = False

    def server_url(self, request: pytest.FixtureRequest) -> str:
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _redis_server(self, request: pytest.FixtureRequest, unique_name: str) -> Iterator[None]:
        self._url = self.server_url(request)
        self._prefix = f"{unique_name}:"
        with _swept(self._url, self._prefix, self.cluster):
            yield

    def make_store(self, **options: Any) -> BaseContextStore:
        if self.cluster:
            options.setdefault("cluster", True)
        return RedisContextStore.from_url(
            self._url, prefix=self._prefix, namespace=f"s{uuid.uuid4().hex[:8]}", **options
        )

    def reopen_store(self, store: BaseContextStore) -> BaseContextStore:
        assert isinstance(store, RedisContextStore)
        return RedisContextStore(**{**store._config(), "namespace": store.namespace})


class TestRedisStore(_RedisSuite):
    def server_url(self, request: pytest.FixtureRequest) -> str:
        return str(request.getfixturevalue("redis_url"))


class TestRedisClusterStore(_RedisSuite):
    cluster = True

    def server_url(self, request: pytest.FixtureRequest) -> str:
        return str(request.getfixturevalue("redis_cluster_url"))


class TestRedisStoreWithTTL(TestRedisStore):
    """The suite again with a store TTL (every write goes through the SET ... PX paths)."""

    def make_store(self, **options: Any) -> BaseContextStore:
        options.setdefault("ttl", 600)
        return super().make_store(**options)


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_state_machine(request: pytest.FixtureRequest, unique_name: str, topology: str) -> None:
    cluster = topology == "cluster"
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    prefix = f"{unique_name}:"

    def make_store() -> BaseContextStore:
        return RedisContextStore.from_url(
            url, prefix=prefix, namespace=uuid.uuid4().hex[:8], **({"cluster": True} if cluster else {})
        )

    with _swept(url, prefix, cluster):
        run_state_machine(make_store, max_examples=20, stateful_step_count=20)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def url(redis_url: str, unique_name: str) -> Iterator[str]:
    """The test server's URL with this test's own key prefix (swept afterwards)."""
    with _swept(redis_url, f"{unique_name}:"):
        yield f"{redis_url.partition('?')[0]}?prefix={unique_name}:"


@pytest.fixture
def store(url: str) -> Iterator[RedisContextStore]:
    with RedisContextStore.from_url(url) as s:
        yield s


@pytest.fixture
def cluster_url(redis_cluster_url: str, unique_name: str) -> Iterator[str]:
    with _swept(redis_cluster_url, f"{unique_name}:", cluster=True):
        yield f"{redis_cluster_url.partition('?')[0]}?prefix={unique_name}:&cluster=1"


@pytest.fixture
def cluster_store(cluster_url: str) -> Iterator[RedisContextStore]:
    with RedisContextStore.from_url(cluster_url) as s:
        yield s


def _raw_value(store: RedisContextStore, key: Any) -> str | None:
    """The JSON text stored for ``key``, read with plain redis-py."""
    raw = store._engine.execute(store._kp + encode_key(key), (b"GET", store._kp + encode_key(key)))
    return None if raw is None else raw.decode("utf-8")


def _put_raw(store: RedisContextStore, key: Any, text: bytes) -> None:
    k = store._kp + encode_key(key)
    store._engine.execute(k, (b"SET", k, text))


# --------------------------------------------------------------------------- URLs and options


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost", {"host": "localhost", "port": 6379, "ssl": False}),
        ("redis://h:6380/3", {"host": "h", "port": 6380, "db": 3, "ssl": False}),
        ("redis://:s%40cret@h/2", {"host": "h", "port": 6379, "db": 2, "password": "s@cret", "ssl": False}),
        ("redis://alice:pw@h:1/0", {"host": "h", "port": 1, "db": 0, "username": "alice", "password": "pw"}),
        ("rediss://h:6390", {"host": "h", "port": 6390, "ssl": True}),
        ("REDIS://[::1]:7000/4", {"host": "::1", "port": 7000, "db": 4}),
        ("redis+cluster://a:7000", {"host": "a", "port": 7000, "cluster": True, "ssl": False}),
        (
            "rediss+cluster://a:7000,b:7001,c",
            {"cluster": True, "ssl": True, "startup_nodes": [("b", 7001), ("c", 6379)]},
        ),
        ("unix:///run/redis.sock", {"unix_socket_path": "/run/redis.sock"}),
        ("redis+unix:///tmp/r%20s.sock", {"unix_socket_path": "/tmp/r s.sock"}),
        (
            "unix://bob:pw@/tmp/r.sock",
            {"unix_socket_path": "/tmp/r.sock", "username": "bob", "password": "pw"},
        ),
    ],
)
def test_parse_url(url: str, expected: dict[str, Any]) -> None:
    parsed = RedisContextStore._parse_url(url)
    for name, value in expected.items():
        assert parsed[name] == value, name


@pytest.mark.parametrize(
    "url",
    [
        "redis://h/notadb",
        "redis://h:port/0",
        "redis://a:1,b:2/0",
        "unix://",
        "unix://host/x.sock",
        "sqlite:///x",
        "redis:h",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ContextConfigurationError):
        RedisContextStore._parse_url(url)


@pytest.mark.parametrize(
    "options",
    [
        {"port": 0},
        {"port": "6379"},
        {"db": -1},
        {"retries": -1},
        {"ttl": 0},
        {"ttl": float("inf")},
        {"socket_timeout": -1},
        {"prefix": 5},
        {"cluster": True, "db": 1},
        {"cluster": True, "unix_socket_path": "/tmp/x.sock"},
        {"namespace": "bad\ud800"},
        {"max_connections": 0},
        {"password": 123},
    ],
)
def test_bad_options_are_refused_before_connecting(options: dict[str, Any]) -> None:
    with pytest.raises(ContextConfigurationError):
        RedisContextStore("127.0.0.1", **{"port": _free_port(), **options})


def test_open_by_url_with_options(redis_url: str, unique_name: str) -> None:
    base = redis_url.partition("?")[0]
    with _swept(redis_url, f"{unique_name}:"):
        options = "namespace=a/b&max_value_size=100&ttl=60&retries=1&socket_timeout=2.5"
        url = f"{base}?prefix={unique_name}:&{options}"
        with open_store(url) as s:
            assert type(s) is RedisContextStore
            assert s.namespace == "a/b" and s.max_value_size == 100 and s.ttl == 60.0
            config = s._config()
            assert config["retries"] == 1 and config["socket_timeout"] == 2.5
            assert config["prefix"] == f"{unique_name}:"
            s.set("k", {"v": 1})
            assert s.get("k") == {"v": 1}
        with open_store(url, namespace="a/b", ttl=None) as s:  # keyword options override
            assert s.ttl is None and s.get("k") == {"v": 1}
        with pytest.raises(ContextConfigurationError, match="unknown option"):
            open_store(f"{base}?colour=red")


def test_schemes_are_registered() -> None:
    from context_framework.registry import _extras, available_schemes

    for scheme in ("redis", "rediss", "unix", "redis+unix", "redis+cluster", "rediss+cluster"):
        assert scheme in available_schemes()
        assert _extras[scheme] == "redis"


def test_missing_redis_extra_names_it() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from context_framework import open_store\n"
        "try:\n    open_store('redis://localhost')\n"
        "except ImportError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert MissingDependencyError.__name__ in out and "context-framework[redis]" in out


def test_lazy_exports() -> None:
    import context_framework
    import context_framework.context_store as context_store

    assert context_framework.RedisContextStore is RedisContextStore
    assert context_store.RedisContextStore is RedisContextStore


# --------------------------------------------------------------------------- credentials


def test_password_never_in_repr_or_errors() -> None:
    secret = "pw-" + uuid.uuid4().hex
    port = _free_port()  # nothing listens there
    url = f"redis://carol:{secret}@127.0.0.1:{port}/0?retries=0&socket_timeout=1"
    with pytest.raises(ContextStoreError) as info:
        open_store(url)
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert "carol" in str(info.value)


@pytest.fixture
def acl_user(redis_url: str) -> Iterator[tuple[str, str]]:
    """A Redis ACL user with a random password, deleted afterwards."""
    client = _raw_client(redis_url)
    name, password = f"cftest_{uuid.uuid4().hex[:8]}", "pw-" + uuid.uuid4().hex
    try:
        client.execute_command("ACL", "SETUSER", name, "on", f">{password}", "~*", "+@all")
    except redis.exceptions.ResponseError as exc:
        client.close()
        pytest.skip(f"cannot create an ACL user on the test server: {exc}")
    try:
        yield name, password
    finally:
        client.execute_command("ACL", "DELUSER", name)
        client.close()


def test_authentication(acl_user: tuple[str, str], redis_url: str, unique_name: str) -> None:
    name, password = acl_user
    config = RedisContextStore._parse_url(redis_url.partition("?")[0])
    common = {
        "host": config["host"],
        "port": config["port"],
        "db": config.get("db", 0),
        "prefix": f"{unique_name}:",
    }
    wrong = "wrong-" + uuid.uuid4().hex
    start = time.monotonic()
    with pytest.raises(ContextStoreError) as info:
        RedisContextStore(username=name, password=wrong, **common)
    assert time.monotonic() - start < 5  # an authentication failure is not retried
    message = str(info.value)
    assert f"authentication failed for user {name!r}" in message
    assert f"{config['host']}:{config['port']}" in message
    assert wrong not in message and password not in message
    assert isinstance(info.value.__cause__, redis.exceptions.RedisError)
    with (
        _swept(redis_url, f"{unique_name}:"),
        RedisContextStore(username=name, password=password, **common) as good,
    ):
        good.set("k", {"v": 1})
        assert password not in repr(good) and name in repr(good)
        clone = pickle.loads(pickle.dumps(good))  # the password survives pickling
        try:
            assert clone.get("k") == {"v": 1}
            assert password not in repr(clone)
        finally:
            clone.close()


# --------------------------------------------------------------------------- failures


def test_server_down_is_a_fast_store_error() -> None:
    port = _free_port()
    for retries in (0, 2):
        start = time.monotonic()
        with pytest.raises(ContextStoreError) as info:
            RedisContextStore("127.0.0.1", port, retries=retries, socket_timeout=1)
        elapsed = time.monotonic() - start
        assert elapsed < 3, elapsed
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message and "open" in message
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
        assert not isinstance(info.value, redis.exceptions.RedisError)
        if retries:
            assert "after 3 attempts" in message


def test_server_going_away_and_coming_back(private_server: _PrivateServer) -> None:
    store = RedisContextStore("127.0.0.1", private_server.port, retries=1, socket_timeout=2)
    try:
        store.set("k", {"v": 1})
        private_server.kill()
        for op, call in (
            ("get", lambda: store.get("k")),
            ("set", lambda: store.set("k", {"v": 2})),
            ("increment", lambda: store.increment("k", "v")),
            ("count", lambda: store.count()),
        ):
            with pytest.raises(ContextStoreError) as info:
                call()
            assert f"127.0.0.1:{private_server.port}" in str(info.value) and op in str(info.value)
            assert isinstance(info.value.__cause__, redis.exceptions.RedisError)
        private_server.start()  # same port; the data is gone (no persistence)
        assert store.get("k") is None  # reconnected on its own
        assert store.increment("k", "v") == 1
    finally:
        store.close()


def test_increment_on_a_connection_the_server_closed_is_resent(private_server: _PrivateServer) -> None:
    # A restart closes the kept connection; increment (not idempotent) must notice that
    # before sending, reconnect, and apply exactly once.
    store = RedisContextStore("127.0.0.1", private_server.port, retries=2, socket_timeout=2)
    try:
        assert store.increment("k", "n") == 1
        private_server.kill()
        private_server.start()  # nothing happened on the store meanwhile
        assert store.increment("k", "n") == 1  # the data went with the old server
        assert store.increment("k", "n") == 2
        assert store.delete("k") is True
    finally:
        store.close()


def test_connection_lost_mid_batch_reports_applied_chunks(
    private_server: _PrivateServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import context_framework.redis_store as module

    store = RedisContextStore("127.0.0.1", private_server.port, retries=1, socket_timeout=2)
    original = module._Engine.run
    calls = []

    def run(self: Any, commands: Any, idempotent: bool) -> Any:
        calls.append(len(commands))
        if len(calls) == 4:
            private_server.kill()  # the server dies after 3 chunks were written
        return original(self, commands, idempotent)

    monkeypatch.setattr(module._Engine, "run", run)
    try:
        with pytest.raises(ContextStoreError) as info:
            store.set_many([(("row", i), {"i": i}) for i in range(10_000)])
        message = str(info.value)
        assert "set_many: 3 of 10 chunks (3,000 of 10,000 entries) were written" in message
        assert f"127.0.0.1:{private_server.port}" in message
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
    finally:
        store.close()


def test_corrupt_stored_values_are_store_errors(store: RedisContextStore) -> None:
    _put_raw(store, "bad", b"not json")
    _put_raw(store, "list", b"[1,2]")
    with pytest.raises(ContextStoreError, match="not valid JSON"):
        store.get("bad")
    with pytest.raises(ContextStoreError):
        store.get_many(["bad"])
    for key in ("bad", "list"):
        with pytest.raises(ContextStoreError, match="not a JSON object"):
            store.update(key, {"a": 1})
        with pytest.raises(ContextStoreError, match="not a JSON object"):
            store.increment(key, "n")
    # a key of another type at our address is a store error, not a driver exception
    k = store._kp + encode_key("hash")
    store._engine.execute(k, (b"HSET", k, b"f", b"v"))
    with pytest.raises(ContextStoreError, match="WRONGTYPE") as info:
        store.get("hash")
    assert isinstance(info.value.__cause__, redis.exceptions.ResponseError)


def test_foreign_key_under_the_prefix_is_reported(store: RedisContextStore) -> None:
    store.set("ok", {"v": 1})
    k = store._kp + b"\x99garbage"
    store._engine.execute(k, (b"SET", k, b"{}"))
    with pytest.raises(ContextStoreError, match="not a context key"):
        store.list_keys()


# --------------------------------------------------------------------------- layout, scans, types


def test_layout_prefix_namespace_key_and_json(store: RedisContextStore, url: str) -> None:
    from context_framework.keys import encode_namespace

    store.with_namespace("a/b").set(("row", 1), {"x": [1, "é"], "f": 1.5})
    client = _raw_client(url)
    try:
        prefix = store._config()["prefix"].encode()
        raw = prefix + encode_namespace("a/b") + encode_key(("row", 1))
        assert client.get(raw) == '{"x":[1,"é"],"f":1.5}'.encode()
        assert client.ttl(raw) == -1
    finally:
        client.close()


def test_types_intact_from_list_keys_and_scan(store: RedisContextStore) -> None:
    keys = [
        ("row", 1),
        ("row", "1"),
        ("row", 1.0),
        ("row", True),
        ("row", None),
        ("row",),
        "row",
        1,
        b"\x00*?[]\\",
    ]
    for i, key in enumerate(keys):
        store.set(key, {"i": i})
    listed = {encode_key(k): k for k in store.list_keys()}
    assert len(listed) == len(keys)
    for key in keys:
        got = listed[encode_key(key)]
        assert got == key and type(got) is type(key)
        if isinstance(key, tuple):
            assert [type(p) for p in got] == [type(p) for p in key]
    assert sorted(map(encode_key, store.scan(("row",)))) == sorted(map(encode_key, keys[:6]))
    assert store.count((b"\x00*?[]\\",)) == 0
    assert store.get(b"\x00*?[]\\") == {"i": 8}


def test_glob_metacharacters_in_prefixes_are_literal(url: str) -> None:
    base = url.partition("?")[0]
    tag = url.partition("prefix=")[2]
    with (
        RedisContextStore.from_url(base, prefix=f"{tag}[a-z]*?\\") as odd,
        RedisContextStore.from_url(base, prefix=f"{tag}ab\\") as plain,
    ):
        odd.with_namespace("n*").set(("k*", "[x]"), {"v": 1})
        plain.with_namespace("n*").set(("k*", "[x]"), {"v": 2})
        odd.set(("k?",), {"v": 3})
        assert odd.with_namespace("n*").list_keys() == [("k*", "[x]")]
        assert odd.with_namespace("n").count() == 0
        assert odd.count(("k?",)) == 1 and odd.count(("k*",)) == 0
        assert plain.with_namespace("n*").list_keys(("k*",)) == [("k*", "[x]")]
        assert plain.count() == 0
        assert odd.with_namespace("n*").clear() == 1 and plain.with_namespace("n*").get(("k*", "[x]")) == {
            "v": 2
        }
        odd.clear()
        plain.with_namespace("n*").clear()


def test_scan_pages_and_streaming(store: RedisContextStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import context_framework.redis_store as module

    monkeypatch.setattr(module, "_SCAN_COUNT", 7)
    monkeypatch.setattr(module, "_CHUNK", 13)
    store.set_many([(("row", i), {"i": i}) for i in range(300)])
    store.set_many([(("col", i), {"i": i}) for i in range(10)])
    assert sorted(store.scan(("row",))) == [("row", i) for i in range(300)]
    assert sorted(store.items(("col",))) == [(("col", i), {"i": i}) for i in range(10)]
    assert store.count() == 310
    assert store.get_many([("row", i) for i in range(-5, 305)]) == [
        {"i": i} if 0 <= i < 300 else None for i in range(-5, 305)
    ]
    it = store.scan(("row",))
    first = next(it)
    store.delete(("row", 299) if first != ("row", 299) else ("row", 0))  # deleting while scanning is fine
    assert len(list(it)) >= 298
    assert store.clear(("row",)) == 299
    assert store.delete_many([("col", i) for i in range(20)] * 2) == 10
    assert store.count() == 0


def test_views_share_one_pool(store: RedisContextStore) -> None:
    a = store.with_namespace("a")
    assert a._engine is store._engine
    a.set("k", {"v": 1})
    assert store.get("k") is None and a.get("k") == {"v": 1}
    a.close()
    assert not store.closed and store._engine is not None
    store.set("k", {"v": 0})
    assert store.get("k") == {"v": 0}


# --------------------------------------------------------------------------- TTL


def test_store_ttl_applies_to_every_write(url: str) -> None:
    with RedisContextStore.from_url(url, ttl=1.0) as s:
        s.set("a", {"v": 1})
        s.set_many([("b", {"v": 2}), ("c", {"v": 3})])
        s.update("d", {"v": 4})
        s.increment("e", "n")
        for key in "abcde":
            left = s.time_to_live(key)
            assert left is not None and 0.5 < left <= 1.0, (key, left)
        time.sleep(0.6)
        s.update("a", {"w": 1})  # a write restarts the TTL
        s.increment("b", "n")
        time.sleep(0.7)  # c, d, e were written 1.3 s ago; a and b 0.7 s ago
        assert s.get_many(list("abcde")) == [{"v": 1, "w": 1}, {"v": 2, "n": 1}, None, None, None]
        time.sleep(0.6)
        assert s.count() == 0


def test_expire_and_time_to_live(store: RedisContextStore) -> None:
    store.set("k", {"n": 1})
    assert store.time_to_live("k") is None
    assert store.expire("k", 60) is True
    left = store.time_to_live("k")
    assert left is not None and 59 < left <= 60
    assert store.update("k", {"m": 2}) == {"n": 1, "m": 2}
    assert store.increment("k", "n") == 2
    left = store.time_to_live("k")
    assert left is not None and left > 59  # update and increment keep the TTL
    assert store.expire("k", None) is True
    assert store.time_to_live("k") is None and store.get("k") == {"n": 2, "m": 2}
    assert store.expire("k", None) is True  # no TTL, but it exists
    store.expire("k", 60)
    store.set("k", {"n": 0})
    assert store.time_to_live("k") is None  # set replaces the entry and its TTL
    assert store.expire("missing", 10) is False and store.expire("missing", None) is False
    store.expire("k", 0.5)
    assert store.get("k") == {"n": 0}
    time.sleep(0.8)
    assert store.get("k") is None and not store.exists("k")
    store.set("k", {"n": 1})
    assert store.expire("k", 0) is True and store.get("k") is None
    with pytest.raises(ContextValueError):
        store.expire("k", "soon")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- exact Lua arithmetic and merge

_BIG = 2**64 - 1


@pytest.mark.parametrize(
    ("start", "by"),
    [
        (2**63, 1),
        (2**63 - 1, 1),
        (_BIG - 1, 1),
        (-(2**63) + 1, -1),
        (2**53, 1),
        (-(2**53) - 1, -(2**53)),
        (-5, _BIG + 4),  # ``by`` itself outside the range, the result within it
        (123456789012345678, -123456789012345678),
        (0, -(2**63)),
        (2.0, 1),
        (1, 2.5),
        (0.1, 0.2),
        (1e308, 1),
        (1e16, 1.0),
        (-0.0, 0),
        (-0.0, -0.0),
        (0, -0.0),
        (_BIG, 0.5),
        (5e-324, 5e-324),
        (1.7976931348623157e308, -1e308),
        (1e-5, 1e-6),
        (123456.789, 1e-7),
    ],
)
def test_increment_is_exact(store: RedisContextStore, start: Any, by: Any) -> None:
    store.set("k", {"before": 'x{"}', "n": start, "after": [1.5, {"z": 2**64 - 1}]})
    expected = apply_increment(store.get("k"), "k", "n", by)
    result = store.increment("k", "n", by)
    assert type(result) is type(expected["n"])
    assert repr(result) == repr(expected["n"])
    assert _raw_value(store, "k") == dumps_json(expected)  # byte for byte what Python would write


@pytest.mark.parametrize(
    ("start", "by", "what"),
    [
        (_BIG, 1, "18446744073709551616"),
        (-(2**63), -1, "-9223372036854775809"),
        (1, _BIG, "outside"),
        (1e308, 1e308, "inf"),
        (-1e308, -1e308, "-inf"),
        (2**63, 2**63, "18446744073709551616"),
    ],
)
def test_increment_out_of_range_changes_nothing(
    store: RedisContextStore, start: Any, by: Any, what: str
) -> None:
    store.set("k", {"n": start, "s": "keep"})
    before = _raw_value(store, "k")
    with pytest.raises(ContextValueError, match="nothing was changed") as info:
        store.increment("k", "n", by)
    assert what in str(info.value) and "'n'" in str(info.value)
    assert isinstance(info.value, ContextSerializationError)  # what the other stores raise
    assert _raw_value(store, "k") == before


def test_increment_non_numbers_are_refused_naming_the_field(store: RedisContextStore) -> None:
    value = {"s": "1", "t": True, "f": False, "z": None, "l": [1], "d": {"a": 1}, "e": ""}
    store.set("k", value)
    for field in value:
        with pytest.raises(ContextValueError, match=f"field '{field}'"):
            store.increment("k", field, 1)
    assert store.get("k") == value


def test_increment_of_a_new_key_and_numpy_by(store: RedisContextStore) -> None:
    np = pytest.importorskip("numpy")
    assert store.increment("new", "n", -(2**63)) == -(2**63)
    assert store.increment("new", "m", np.int64(3)) == 3.0  # as apply_increment: non-int/float -> float
    assert store.get("new") == {"n": -(2**63), "m": 3.0}


_TRICKY_TEXT = [
    '{"a":1}',
    "}",
    "]",
    "[",
    "{",
    '"',
    '\\"',
    "\\",
    "a\\\\",
    ",",
    ":",
    "\n\t",
    "é\u2028",
    "\x00",
    "",
]


def test_update_is_exact_on_tricky_values(store: RedisContextStore) -> None:
    current = {
        **{f"k{i}": t for i, t in enumerate(_TRICKY_TEXT)},
        **{t: i for i, t in enumerate(_TRICKY_TEXT)},
        "nested": {"a": [1, {"b": "}]"}, [], {}], "c": {"d": '"{'}},
        "floats": [1e16, 0.1, -0.0, 5e-324, 1.7976931348623157e308],
        "ints": [2**64 - 1, -(2**63), 2**53 + 1],
        "n": None,
        "t": True,
    }
    store.set("k", current)
    patches: list[dict[str, Any]] = [
        {"n": 1, "new": {"x": "]}"}},
        {'"': "replaced", "}": {"deep": ['"', "\\"]}, "k3": None},
        {},
        {"nested": 2**64 - 1, "floats": 1e308},
        {"é\u2028": [], "\x00": {"\x00": "\x00"}},
    ]
    expected = dict(current)
    for patch in patches:
        expected = {**expected, **patch}
        merged = store.update("k", patch)
        assert json.dumps(merged) == json.dumps(expected)  # same order too
        assert _raw_value(store, "k") == dumps_json(expected)


def test_update_and_increment_check_the_size_server_side(url: str) -> None:
    with RedisContextStore.from_url(url, max_value_size=60) as s:
        s.set("k", {"a": "x" * 40})
        with pytest.raises(ContextValueTooLargeError, match="over this store's max_value_size of 60"):
            s.update("k", {"b": "y" * 10})
        with pytest.raises(ContextValueTooLargeError):
            s.increment("k", "counter_with_a_long_name", 10**15)
        assert s.get("k") == {"a": "x" * 40}
        s.set("k", {"a": "x" * 40, "n": 9})
        assert s.increment("k", "n") == 10
        assert len(_raw_value(s, "k") or "") <= 60


def test_lua_scripts_match_python_on_random_values(store: RedisContextStore) -> None:
    rng = random.Random(20240601)

    def text() -> str:
        return "".join(rng.choice(_TRICKY_TEXT) for _ in range(rng.randint(0, 3)))

    def number() -> Any:
        choice = rng.randint(0, 4)
        if choice == 0:
            return rng.choice([2**63, _BIG, -(2**63), 2**53 + 1, 0, -1, 1e308, 5e-324, -0.0, 0.1, 1e16])
        if choice == 1:
            return rng.randint(-(2**63), 2**64 - 1)
        if choice == 2:
            return rng.randint(-100, 100)
        while True:
            x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
            if math.isfinite(x):
                return x

    def value(depth: int = 0) -> Any:
        choice = rng.randint(0, 6 if depth < 3 else 3)
        if choice == 0:
            return text()
        if choice in (1, 2):
            return number()
        if choice == 3:
            return rng.choice([True, False, None])
        if choice == 4:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {text(): value(depth + 1) for _ in range(rng.randint(0, 3))}

    def record() -> dict[str, Any]:
        return {rng.choice(["a", "n", text()]): value() for _ in range(rng.randint(0, 5))}

    for _ in range(400):
        current = record()
        store.set("k", current)
        if rng.random() < 0.5:
            patch = record()
            expected = {**current, **patch}
            assert json.dumps(store.update("k", patch)) == json.dumps(expected)
            assert _raw_value(store, "k") == dumps_json(expected)
            continue
        field = rng.choice([*current, "n", "absent"])
        by = number()
        try:
            new = apply_increment(current, "k", field, by)
            dumps_json(new)
            if isinstance(new[field], int) and not -(2**63) <= new[field] < 2**64:
                raise OverflowError
        except (ContextValueError, ValueError, OverflowError):
            with pytest.raises(ContextValueError):
                store.increment("k", field, by)
            assert _raw_value(store, "k") == dumps_json(current)
            continue
        got = store.increment("k", field, by)
        assert type(got) is type(new[field]) and repr(got) == repr(new[field])
        assert _raw_value(store, "k") == dumps_json(new)


# --------------------------------------------------------------------------- cluster specifics


def test_cluster_routes_after_a_stale_slot_map(cluster_store: RedisContextStore) -> None:
    from redis.crc import key_slot

    engine = cluster_store._engine
    keys = [("row", i) for i in range(200)]
    cluster_store.set_many([(k, {"i": k[1]}) for k in keys])
    manager = engine.client.nodes_manager
    k0 = cluster_store._kp + encode_key(keys[0])
    slot = key_slot(k0)
    owner = manager.slots_cache[slot][0]
    other = next(n for n in engine.client.get_primaries() if n.name != owner.name)
    # Point every slot at the wrong node: each command gets MOVED, and the map is reloaded.
    for s in list(manager.slots_cache):
        manager.slots_cache[s] = [other]
    assert cluster_store.get(keys[0]) == {"i": 0}
    for s in list(manager.slots_cache):
        manager.slots_cache[s] = [other]
    assert cluster_store.get_many(keys) == [{"i": i} for i in range(200)]
    for s in list(manager.slots_cache):
        manager.slots_cache[s] = [other]
    assert cluster_store.increment(keys[1], "i") == 2
    assert cluster_store.count(("row",)) == 200


def test_cluster_keys_of_one_namespace_span_every_node(cluster_store: RedisContextStore) -> None:
    cluster_store.set_many([(("row", i), {"i": i}) for i in range(300)])
    engine = cluster_store._engine
    counts = []
    pattern = cluster_store._pattern(None)[0]
    for node in engine.scan_nodes():
        n, cursor = 0, b"0"
        while True:
            cursor, page = engine.execute_on(node, (b"SCAN", cursor, b"MATCH", pattern, b"COUNT", b"1000"))
            n += len(page)
            if cursor in (b"0", 0):
                break
        counts.append(n)
    assert sum(counts) == 300 and all(c > 0 for c in counts)
    assert cluster_store.count() == 300
    assert sorted(cluster_store.list_keys()) == [("row", i) for i in range(300)]


# --------------------------------------------------------------------------- processes


def _mp_writer(store: RedisContextStore, worker: int, keys: int, increments: int) -> None:
    """``keys`` distinct keys (half one by one, half in batches), interleaved with increments."""
    chunk, done = 250, 0
    chunks = keys // chunk
    for c in range(chunks):
        lo, hi = c * chunk, (c + 1) * chunk
        if c % 2:
            store.set_many([(("w", worker, i), {"w": worker, "i": i}) for i in range(lo, hi)])
        else:
            for i in range(lo, hi):
                store.set(("w", worker, i), {"w": worker, "i": i})
        target = (c + 1) * increments // chunks
        while done < target:
            store.increment(("counter",), "n")
            done += 1
    store.close()


def _mp_updater(store: RedisContextStore, worker: int, updates: int) -> None:
    for j in range(updates):
        store.update(("shared",), {f"p{worker}": j, f"p{worker}_list": [worker, j, "}{"]})
    store.close()


def _run_processes(target: Callable[..., None], args: list[tuple[Any, ...]]) -> None:
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=target, args=a) for a in args]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * len(procs)


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_processes_lose_no_write(request: pytest.FixtureRequest, topology: str) -> None:
    """4 spawned processes x (5,000 distinct keys + 1,000 increments of one shared counter)."""
    s = request.getfixturevalue("cluster_store" if topology == "cluster" else "store")
    _run_processes(_mp_writer, [(s, w, 5_000, 1_000) for w in range(4)])
    expected = [("w", w, i) for w in range(4) for i in range(5_000)]
    assert s.get_many(expected) == [{"w": k[1], "i": k[2]} for k in expected]
    assert s.count(("w",)) == 20_000
    assert s.get(("counter",)) == {"n": 4_000}


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_processes_updating_one_key_lose_no_field(request: pytest.FixtureRequest, topology: str) -> None:
    s = request.getfixturevalue("cluster_store" if topology == "cluster" else "store")
    s.set(("shared",), {"start": True})
    _run_processes(_mp_updater, [(s, w, 500) for w in range(4)])
    expected: dict[str, Any] = {"start": True}
    for w in range(4):
        expected[f"p{w}"] = 499
        expected[f"p{w}_list"] = [w, 499, "}{"]
    assert s.get(("shared",)) == expected


def _fork_child(store: RedisContextStore, queue: Any) -> None:
    queue.put((store.get("k"), store.increment("k", "n")))
    store.close()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_fork_child_opens_its_own_connections(store: RedisContextStore) -> None:
    store.set("k", {"n": 0})
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    proc = context.Process(target=_fork_child, args=(store, queue))
    proc.start()
    result = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert result == ({"n": 0}, 1)
    assert store.increment("k", "n") == 2  # the parent's connection is unharmed


# --------------------------------------------------------------------------- unix socket and TLS


def test_unix_socket(private_server: _PrivateServer) -> None:
    for scheme in ("unix", "redis+unix"):
        with open_store(f"{scheme}://{private_server.socket}?db=2&namespace=n") as s:
            assert s._config()["unix_socket_path"] == private_server.socket
            assert repr(s) == f"RedisContextStore(unix://{private_server.socket}?db=2, namespace='n')"
            s.set(("row", 1), {"via": scheme})
            assert s.list_keys() == [("row", 1)] and s.get(("row", 1)) == {"via": scheme}
            assert s.clear() == 1
    client = redis.Redis(unix_socket_path=private_server.socket, db=2)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()


def test_tls_url_uses_tls(private_server: _PrivateServer) -> None:
    # A plain server refuses the TLS handshake: the store reports it for the right address.
    start = time.monotonic()
    with pytest.raises(ContextStoreError) as info:
        open_store(f"rediss://127.0.0.1:{private_server.port}/0?retries=0&socket_timeout=0.5")
    assert time.monotonic() - start < 5
    assert f"127.0.0.1:{private_server.port}" in str(info.value)
    assert "rediss://" in str(info.value)


# --------------------------------------------------------------------------- lifecycle


def test_closed_store_and_views(store: RedisContextStore) -> None:
    view = store.with_namespace("v")
    store.set_many([(("row", i), {"i": i}) for i in range(5)])
    scan = store.scan()
    store.close()
    assert view.closed and "closed" in repr(store)
    for target in (store, view):
        with pytest.raises(ContextStoreClosedError):
            target.expire("k", 1)
        with pytest.raises(ContextStoreClosedError):
            target.time_to_live("k")
        with pytest.raises(ContextStoreClosedError):
            target.get_many([])
    with pytest.raises(ContextStoreClosedError):
        next(scan)  # a scan started before closing cannot fetch a page


def test_benchmark_functions_run(redis_url: str) -> None:
    pytest.importorskip("pandas")
    from context_framework.bench import redis_baseline

    report = redis_baseline.measure(redis_url, n=50, batch_n=2_500, repeat=1)
    assert report["per_call"]["ours"]["overall"] > 0 and report["batch"]["raw"]["overall"] > 0
    assert set(report["batch"]["ratio"]) == {"write", "read", "overall"}


def test_cluster_open_failures_are_store_errors(redis_cluster_url: str) -> None:
    config = RedisContextStore._parse_url(redis_cluster_url.partition("?")[0])
    secret = "pw-" + uuid.uuid4().hex
    with pytest.raises(ContextStoreError) as info:
        RedisContextStore(config["host"], config["port"], cluster=True, username="nobody", password=secret)
    assert "authentication failed for user 'nobody'" in str(info.value)
    assert secret not in str(info.value)
    port = _free_port()
    start = time.monotonic()
    with pytest.raises(ContextStoreError) as info:
        RedisContextStore("127.0.0.1", port, cluster=True, retries=1, socket_timeout=1)
    assert time.monotonic() - start < 5
    assert f"127.0.0.1:{port}" in str(info.value) and "open" in str(info.value)
