"""Store URLs: strict decoding, passwords never shown, clear errors for bad URLs and options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from context_framework import open_store
from context_framework.cli import main
from context_framework.db_store import DBContextStore
from context_framework.exceptions import ContextConfigurationError, ContextError, ContextStoreError
from context_framework.redis_store import RedisContextStore
from context_framework.sqlite_store import SQLiteContextStore
from context_framework.wrappers.sharded import ShardedStore

# --------------------------------------------------------------------------- 4: undecodable parts


def test_undecodable_sqlite_namespace_cannot_reach_another_namespace(tmp_path: Path) -> None:
    """``%FF%FE`` and ``%C0%C1`` both decoded to U+FFFD U+FFFD: B read and cleared A's keys."""
    db = tmp_path / "ctx.db"
    with SQLiteContextStore(db, namespace="\ufffd\ufffd") as a:
        a.set(("row", 1), {"owner": "A"})
        for option in ("%FF%FE", "%C0%C1"):
            with pytest.raises(ContextConfigurationError, match=r"namespace.*UTF-8"):
                b = open_store(f"sqlite:///{db}?namespace={option}")
                b.clear()
                b.close()
        assert a.get(("row", 1)) == {"owner": "A"}


def test_undecodable_redis_prefix_cannot_reach_another_prefix(redis_url: str, unique_name: str) -> None:
    base = redis_url.partition("?")[0]
    a = RedisContextStore.from_url(base, prefix=f"{unique_name}\ufffd\ufffd:")
    try:
        a.set(("row", 1), {"owner": "A"})
        for option in ("%FF%FE", "%C0%C1"):
            with pytest.raises(ContextConfigurationError, match=r"prefix.*UTF-8"):
                b = open_store(f"{base}?prefix={unique_name}{option}:")
                b.clear()
                b.close()
        assert a.get(("row", 1)) == {"owner": "A"}
    finally:
        a.clear()
        a.close()


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("redis://%FF@127.0.0.1:1/0?retries=0", "user name"),
        ("redis://u:%C0%C1@127.0.0.1:1/0?retries=0", "password"),
        ("redis://%FF%FE:1/0?retries=0", "host"),
        ("unix:///tmp/%FF.sock?retries=0", "socket path"),
        ("redis+cluster://127.0.0.1:1,%FF:2?retries=0", "host"),
        ("sharded+redis://u:%FF@127.0.0.1:1,127.0.0.1:2/0?retries=0", "password"),
        ("sqlite:///%FF%FE.db", "path"),
        ("postgresql://%FF@127.0.0.1:1/db", "user name"),
        ("postgresql://u:%FF@127.0.0.1:1/db", "password"),
        ("postgresql://u@%FF:1/db", "host"),
        ("mysql://u@127.0.0.1:1/%C0%C1", "database"),
        ("memory://?namespace=%FF", "namespace"),
        ("memory://?buffer=%FF", "buffer"),
        ("memory://?%FF=1", "option name"),
    ],
)
def test_undecodable_url_parts_are_refused(url: str, part: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ContextConfigurationError) as info:
        open_store(url).close()
    assert part in str(info.value) and "UTF-8" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no file made for an undecodable SQLite path


# --------------------------------------------------------------------------- 5: passwords never shown

SECRETS = ("s3cr3tPW", "s3cr%40tPW", "s3cr@tPW", "s3cr:tPW", "s3cr%3AtPW")

BAD_URLS = [
    "redis://u:{pw}@h:abc/0",
    "redis://u:{pw}@h:6379/abc",
    "redis://u:{pw}@h1,h2/0",
    "unix://u:{pw}@",
    "redis+cluster://u:{pw}@h1:abc",
    "sharded+redis://u:{pw}@h1:abc,h2/0",
    "sqlite://u:{pw}@host/x.db",
    "redis://u:{pw}@[::1/0",
    "redis://u:{pw}@[zz]:6379/0",
    "redis://u:{pw}@h:99999/0",
    "redis://u:{pw}@h/0?colour=red",
    "redis://u:{pw}@h/0?ttl=soon",
    "rediss://u:{pw}@h/0?ssl_cert_reqs=bogus",
    "postgresql://u:{pw}@h:abc/db",
    "postgresql://u:{pw}@[::1:5432/test",
    "postgresql://u:{pw}@h/a/b",
    "postgresql://u:{pw}@h",
    "mysql://u:{pw}@h:abc/db",
    "mysql://u:{pw}@h:3306",
    "memory://u:{pw}@x",
    "buffered+cached+redis://u:{pw}@h:abc/0",
]


def _assert_hidden(text: str) -> None:
    for fragment in ("s3cr", "tPW"):
        assert fragment not in text, text


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("template", BAD_URLS)
def test_open_store_errors_never_show_the_password(template: str, secret: str) -> None:
    url = template.format(pw=secret)
    with pytest.raises(ContextConfigurationError) as info:
        open_store(url)
    _assert_hidden(str(info.value))
    _assert_hidden(repr(info.value))


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize(
    ("opener", "template"),
    [
        (RedisContextStore.from_url, "redis://u:{pw}@h:abc/0"),
        (RedisContextStore.from_url, "redis://u:{pw}@h:6379/abc"),
        (RedisContextStore.from_url, "redis://u:{pw}@h1,h2/0"),
        (RedisContextStore.from_url, "unix://u:{pw}@"),
        (RedisContextStore.from_url, "redis+cluster://u:{pw}@h1:abc"),
        (RedisContextStore.from_url, "memory://u:{pw}@h"),
        (SQLiteContextStore.from_url, "sqlite://u:{pw}@host/x.db"),
        (DBContextStore, "postgresql://u:{pw}@h:abc/db"),
        (DBContextStore, "postgresql://u:{pw}@[::1:5432/test"),
        (DBContextStore, "mysql://u:{pw}@h/a/b"),
        (DBContextStore, "postgresql://u:{pw}@h/db?tabel=x"),
        (DBContextStore.from_url, "postgresql://u:{pw}@h"),
        (ShardedStore.from_url, "sharded+redis://u:{pw}@h1:abc,h2/0"),
        (ShardedStore.from_url, "redis+cluster://u:{pw}@h1,h2"),
        (ShardedStore.from_url, "redis://u:{pw}@h1/0"),
        (lambda url: ShardedStore.from_urls([url, "memory://"]), "redis://u:{pw}@h:abc/0"),
    ],
)
def test_constructor_errors_never_show_the_password(opener: Any, template: str, secret: str) -> None:
    with pytest.raises(ContextConfigurationError) as info:
        opener(template.format(pw=secret))
    _assert_hidden(str(info.value))


def test_bench_json_never_shows_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = "redis://u:s3cr3tPW@h:abc/0"
    code = main(["bench", "--redis-url", url, "--stores", "redis", "--json", "--repeat", "1", "--ops", "10"])
    out, err = capsys.readouterr()
    assert code == 0
    _assert_hidden(out + err)
    notes = json.loads(out)["notes"]
    assert any("redis://u:***@h:abc/0" in note for note in notes), notes


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("template", BAD_URLS[:8])
def test_checkpoint_cli_never_shows_the_password(
    template: str, secret: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = template.format(pw=secret)
    assert main(["export", url, str(tmp_path / "out.jsonl")]) == 2
    assert main(["copy", "memory://", url]) == 2
    out, err = capsys.readouterr()
    _assert_hidden(out + err)
    assert "***" in err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:pw@h:1/0", "redis://u:***@h:1/0"),
        ("redis://:pw@h/0", "redis://:***@h/0"),
        ("redis://u@h/0", "redis://u@h/0"),
        ("redis://u:p@w@h/0?prefix=a@b", "redis://u:***@h/0?prefix=a@b"),
        ("redis://u:p:w@h/0", "redis://u:***@h/0"),
        ("redis://u:p#w@h/0", "redis://u:***@h/0"),
        ("redis://u:p/w@h/0", "redis://u:***@h/0"),
        ("redis://u:p%40w@h/0", "redis://u:***@h/0"),
        ("redis://h/0?password=pw&db=1", "redis://h/0?password=***&db=1"),
        ("sqlite:///home/me@work/ctx.db", "sqlite:///home/me@work/ctx.db"),
        ("unix://:pw@/tmp/r.sock", "unix://:***@/tmp/r.sock"),
        ("memory://", "memory://"),
        ("not a url", "not a url"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    from context_framework.urls import mask_url

    assert mask_url(url) == shown


def test_mask_secrets_in_free_text() -> None:
    from context_framework.urls import mask_secrets

    text = "from redis://u:a'b@h1/0 to 'postgresql://v:c%40d@h2/db' and \"mysql://w:e@f@h3/x\""
    masked = mask_secrets(text, ["redis://u:a'b@h1/0"])
    assert masked == "from redis://u:***@h1/0 to 'postgresql://v:***@h2/db' and \"mysql://w:***@h3/x\""
    # a known password is hidden wherever it appears: raw, percent-encoded, decoded, escaped
    url = "redis://u:p%40ss%27w@h/0"
    for shown in ("p%40ss%27w", "p@ss'w", repr("p@ss'w"), json.dumps("p@ss'w")):
        assert "ss" not in mask_secrets(f"error: {shown}", [url])
    assert mask_secrets("nothing to hide", []) == "nothing to hide"


# --------------------------------------------------------------------------- 6: clear errors, not raw ones


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://[::1/0", "not closed"),
        ("postgresql://u@[::1:5432/test", "not closed"),
        ("redis://[zz]:6379/0", "not an IPv6 address"),
        ("redis://[127.0.0.1]:6379/0", "not an IPv6 address"),
        ("redis://[::1]x:6379/0", "after ']'"),
        ("redis://h]:6379/0", "brackets"),
        ("mysql://u@[::1]:x/test", "port"),
        ("redis://h:0/0", "port"),
        ("redis://h:65536/0", "port"),
        ("redis://h:+1/0", "port"),
        ("redis://h:6379/+1", "database number"),
        ("rediss://127.0.0.1:1/0?ssl_cert_reqs=bogus", "ssl_cert_reqs"),
        ("postgresql://127.0.0.1:5432", "postgresql://user@host:5432/DBNAME"),
        ("postgresql://127.0.0.1:5432/", "postgresql://user@host:5432/DBNAME"),
        ("postgres://u@h", "postgresql://user@host:5432/DBNAME"),
        ("memory://u:pw@x", "://?namespace="),
        ("memory://x", "://?namespace="),
        ("mem://x/y", "://?namespace="),
    ],
)
def test_bad_urls_raise_a_configuration_error(url: str, message: str) -> None:
    with pytest.raises(ContextConfigurationError) as info:
        open_store(url).close()
    assert message in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://a..b/0?retries=0",
        "redis+cluster://127.0.0.1:1,.x:2?retries=0",
        "postgresql://u@a..b:1/x",
        "mysql://u@-x-.." + "y" * 64 + ":1/x",
    ],
)
def test_hosts_and_passwords_the_drivers_cannot_take_are_configuration_errors(url: str) -> None:
    """These raised a raw UnicodeError (IDNA) from inside the drivers."""
    with pytest.raises(ContextConfigurationError):
        open_store(url).close()
    with pytest.raises(ContextConfigurationError, match="not a host name"):
        RedisContextStore("a..b", 1, startup_nodes=None)
    with pytest.raises(ContextConfigurationError, match="not a host name"):
        RedisContextStore("127.0.0.1", 1, cluster=True, startup_nodes=[("x..", 2)])


def test_ssl_cert_reqs_is_checked_by_the_constructor_before_connecting() -> None:
    with pytest.raises(ContextConfigurationError, match="ssl_cert_reqs"):
        RedisContextStore("127.0.0.1", 1, ssl=True, ssl_cert_reqs="bogus")


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("redis://[::1]:7000/4", "::1", 7000),
        ("redis://[::1]/0", "::1", 6379),
        ("redis://[fe80::1%25eth0]:7000/0", "fe80::1%eth0", 7000),
        ("redis://u:p@w@h:1/0", "h", 1),
        ("redis://u:p:w@h:2/0", "h", 2),
        ("redis://u:p#w@h:3/0", "h", 3),
    ],
)
def test_valid_hosts_still_parse(url: str, host: str, port: int) -> None:
    parsed = RedisContextStore._parse_url(url)
    assert (parsed["host"], parsed["port"]) == (host, port)


def test_ipv6_and_special_passwords_in_sql_urls() -> None:
    from context_framework.db_store import _Target

    target = _Target("postgresql://u:p@ss:w@[::1]:5433/test")
    assert (target.host, target.port, target.password, target.database) == ("::1", 5433, "p@ss:w", "test")
    assert target.safe_url() == "postgresql://u@[::1]:5433/test"


def test_memory_url_forms_still_open() -> None:
    for url in ("memory://", "memory:///", "mem://?namespace=a", "MEMORY://?max_value_size=5"):
        open_store(url).close()


_SCHEMES = [
    "memory", "mem", "sqlite", "redis", "rediss", "unix", "redis+unix", "redis+cluster",
    "postgresql", "postgres", "mysql", "mariadb", "sharded+redis", "buffered+memory", "cached+sqlite",
]  # fmt: skip
_HOSTS = [
    "127.0.0.1:1", "[::1]:1", "127.0.0.1:1,127.0.0.1:2", "127.0.0.1:abc", "[::1:1", "[zz]:1",
    "[127.0.0.1]:1", "127.0.0.1:99999", "]", "[", "127.0.0.1:1,", ",127.0.0.1:1", ":1", "[]:1",
]  # fmt: skip
_JUNK = st.text(alphabet="%:/@[]?&=#,+ .aZ9\u00e9\ufffd", max_size=8)
_FUZZ_PW = "Zq7Zq"  # a password no message has any other reason to contain
_FUZZ_USERS = ["u:{}@", ":{}@", "u:{}@x@", "u:{}:x@", "u:{}%40x@", "u:{}#x@", "u:{}/x@"]
_QUERIES = ["", "?retries=0", "?namespace=%FF", "?namspace=a", "?ttl=x", "?buffer=-1", "?password={}"]


@st.composite
def _url_ish(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(_SCHEMES))
    user = draw(st.sampled_from(["", "u@", *(f.format(_FUZZ_PW) for f in _FUZZ_USERS)]))
    query = draw(st.sampled_from(_QUERIES) | _JUNK).format(_FUZZ_PW)
    if scheme.endswith(("memory", "mem", "sqlite")):
        # SQLite: file names relative to the test's folder only (no '/', no '.', nothing after but a query)
        host = draw(st.sampled_from(["", "x", "127.0.0.1:1"]) | _JUNK.filter(lambda j: not j.startswith("/")))
        path = draw(st.text(alphabet="%Fa0_-", max_size=6))
        query = query if query.startswith("?") else f"?{query}"
    else:
        host = draw(st.sampled_from(_HOSTS) | _JUNK.map(lambda j: "127.0.0.1:1" + j))
        path = draw(st.sampled_from(["", "0", "test", "abc", "a/b", "%FF"]) | _JUNK)
    return f"{scheme}://{user}{host}/{path}{query}" if path or draw(st.booleans()) else f"{scheme}://{user}{host}"


def _fast(url: str) -> dict[str, Any]:
    """Keyword options that make a connection attempt to a closed port fail at once."""
    scheme = url.partition("://")[0]
    if "redis" in scheme or "unix" in scheme:
        return {"retries": 0, "socket_timeout": 0.5}
    if scheme.startswith(("postgres", "mysql", "mariadb")):
        return {"connect_timeout": 1}
    return {}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=_url_ish())
def test_fuzzed_urls_raise_only_context_errors_and_hide_passwords(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        store = open_store(url, **_fast(url))
    except ContextError as exc:
        text = f"{exc} {exc!r}"
        assert "q7Z" not in text and "7Zq" not in text, text
    else:
        store.close()


# --------------------------------------------------------------------------- clearer errors


@pytest.mark.parametrize(
    ("url", "suggestion"),
    [
        ("sqlite:///{db}?namspace=a", "namespace"),
        ("sqlite:///{db}?bufer=10", "buffer"),
        ("memory://?cache_tll=5", "cache_ttl"),
        ("memory://?flush_intervall=1", "flush_interval"),
        ("redis://127.0.0.1:1/0?prefx=a", "prefix"),
        ("postgresql://127.0.0.1:1/x?tabel=t", "table"),
    ],
)
def test_misspelled_option_suggests_the_close_match(url: str, suggestion: str, tmp_path: Path) -> None:
    with pytest.raises(ContextConfigurationError) as info:
        open_store(url.format(db=tmp_path / "ctx.db"))
    message = str(info.value)
    assert f"did you mean {suggestion!r}?" in message
    for wrapper_option in ("buffer", "cache", "cache_ttl", "flush_interval"):
        assert wrapper_option in message


def test_db_store_constructor_suggests_the_close_match_too() -> None:
    with pytest.raises(ContextConfigurationError, match="did you mean 'pool_size'"):
        DBContextStore("postgresql://127.0.0.1:1/x?poolsize=2")


def test_unknown_option_without_a_close_match_lists_the_options() -> None:
    with pytest.raises(ContextConfigurationError) as info:
        open_store("memory://?colour=blue")
    assert "did you mean" not in str(info.value)
    assert "namespace" in str(info.value) and "buffer" in str(info.value)


def test_sqlite_missing_folder_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "no" / "such" / "dir"
    with pytest.raises(ContextStoreError) as info:
        open_store(f"sqlite:///{folder}/ctx.db")
    assert f"the folder '{folder}' does not exist" in str(info.value)


def test_sqlite_path_that_is_a_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ContextStoreError) as info:
        SQLiteContextStore(tmp_path)
    assert f"'{tmp_path}' is a folder" in str(info.value)
