"""Opening stores by URL: schemes, options, registration, entry points."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from context_framework import registry
from context_framework.base_store import BaseContextStore
from context_framework.exceptions import ContextConfigurationError, ContextError
from context_framework.in_memory_context_store import InMemoryContextStore
from context_framework.registry import (
    ENTRY_POINT_GROUP,
    available_schemes,
    open_store,
    register_store,
)


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees (and may change) a private copy of the registry."""
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    monkeypatch.setattr(registry, "_entry_points_loaded", registry._entry_points_loaded)
    yield


class DummyStore(InMemoryContextStore):
    """A registrable store class with one extra URL option."""

    scheme = "dummy"
    url_options = {"flag": bool, "ratio": float}  # noqa: RUF012

    def __init__(self, *, flag: bool = False, ratio: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flag = flag
        self.ratio = ratio


# --------------------------------------------------------------------------- memory://


@pytest.mark.parametrize("url", ["memory://", "mem://", "MEMORY://", "memory:///"])
def test_open_memory_store(url: str) -> None:
    store = open_store(url)
    assert isinstance(store, InMemoryContextStore)
    assert store.namespace == ""
    store.set(("row", 1), {"a": 1})
    assert store.get(("row", 1)) == {"a": 1}
    store.close()


def test_each_open_is_a_new_store() -> None:
    first = open_store("memory://")
    second = open_store("memory://")
    first.set("k", {"a": 1})
    assert second.get("k") is None


def test_query_options_are_coerced() -> None:
    store = open_store("memory://?namespace=team/a&max_value_size=100")
    assert store.namespace == "team/a"
    assert store.max_value_size == 100
    assert type(store.max_value_size) is int
    assert open_store("memory://?max_value_size=none").max_value_size is None
    assert open_store("memory://?max_value_size=null").max_value_size is None
    assert open_store("memory://?namespace=").namespace == ""


def test_keyword_options_override_the_query() -> None:
    store = open_store("memory://?namespace=a&max_value_size=100", namespace="b", max_value_size=5)
    assert store.namespace == "b"
    assert store.max_value_size == 5


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memory://?max_value_size=big", "max_value_size='big' is not a valid int"),
        ("memory://?max_value_size=0", "max_value_size must be a positive int"),
        ("memory://?max_value_size=-5", "max_value_size must be a positive int"),
        ("memory://?colour=blue", "unknown option 'colour'"),
    ],
)
def test_bad_query_options(url: str, message: str) -> None:
    with pytest.raises(ContextConfigurationError) as info:
        open_store(url)
    assert message in str(info.value)


def test_unknown_option_error_lists_accepted_options() -> None:
    with pytest.raises(ContextConfigurationError) as info:
        open_store("memory://?colour=blue")
    assert "max_value_size" in str(info.value) and "namespace" in str(info.value)


def test_from_url_on_the_class() -> None:
    store = InMemoryContextStore.from_url("memory://?namespace=x")
    assert store.namespace == "x"


# --------------------------------------------------------------------------- bad URLs and schemes


@pytest.mark.parametrize("url", ["", "memory", "memory:", "/tmp/ctx.db", "ctx.db", None, 42])
def test_bad_url(url: Any) -> None:
    with pytest.raises(ContextConfigurationError, match="store URL looks like"):
        open_store(url)


def test_unknown_scheme_lists_known_schemes() -> None:
    with pytest.raises(ContextConfigurationError) as info:
        open_store("nosuchdb://host/db")
    message = str(info.value)
    assert "'nosuchdb'" in message
    for scheme in ("memory", "mem", "sqlite"):
        assert scheme in message
    assert isinstance(info.value, ContextError) and isinstance(info.value, ValueError)


def test_available_schemes() -> None:
    schemes = available_schemes()
    assert schemes == sorted(schemes)
    assert {"memory", "mem", "sqlite"} <= set(schemes)


# --------------------------------------------------------------------------- register_store


def test_register_store_class() -> None:
    register_store("dummy", DummyStore)
    assert "dummy" in available_schemes()
    store = open_store("dummy://?flag=yes&ratio=0.5&namespace=n")
    assert type(store) is DummyStore
    assert store.flag is True
    assert store.ratio == 0.5
    assert store.namespace == "n"
    assert open_store("DUMMY://?flag=off").flag is False
    with pytest.raises(ContextConfigurationError, match="flag='maybe' is not a valid bool"):
        open_store("dummy://?flag=maybe")
    with pytest.raises(ContextConfigurationError, match="not a valid float"):
        open_store("dummy://?ratio=half")


def test_register_store_by_import_path_is_lazy() -> None:
    register_store("lazy", "test_registry:DummyStore")
    assert registry._registry["lazy"] == "test_registry:DummyStore"
    store = open_store("lazy://")
    assert type(store).__name__ == "DummyStore"
    assert registry._registry["lazy"] is type(store)  # resolved once, then cached


def test_register_store_twice_needs_replace() -> None:
    register_store("dummy", DummyStore)
    register_store("dummy", DummyStore)  # the same target again is fine
    with pytest.raises(ContextConfigurationError, match="already registered") as info:
        register_store("dummy", InMemoryContextStore)
    assert "replace=True" in str(info.value)
    with pytest.raises(ContextConfigurationError, match="already registered"):
        register_store("memory", DummyStore)
    register_store("dummy", InMemoryContextStore, replace=True)
    assert type(open_store("dummy://")) is InMemoryContextStore
    register_store("Memory", DummyStore, replace=True)  # schemes are case-insensitive
    assert type(open_store("memory://")) is DummyStore


@pytest.mark.parametrize("scheme", ["", "my scheme", "a/b", "x:y", "\u00e9", "1db", "+x", None])
def test_register_store_rejects_bad_schemes(scheme: Any) -> None:
    with pytest.raises(ContextConfigurationError, match="invalid URL scheme"):
        register_store(scheme, DummyStore)


def test_register_store_accepts_rfc3986_schemes() -> None:
    for scheme in ("my-store", "db+driver", "x.y", "s3"):
        register_store(scheme, DummyStore)
        assert type(open_store(f"{scheme}://")) is DummyStore


def test_registered_target_without_from_url() -> None:
    register_store("plain", object)
    with pytest.raises(ContextConfigurationError, match="no from_url"):
        open_store("plain://")


def test_unimportable_target_raises_import_error() -> None:
    register_store("broken", "no_such_module_for_context_tests:Store")
    with pytest.raises(ImportError):
        open_store("broken://")


# --------------------------------------------------------------------------- entry points


@pytest.fixture
def third_party_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed-looking distribution that registers ``thirdparty://`` by entry point."""
    (tmp_path / "ctx_thirdparty_store.py").write_text(
        textwrap.dedent(
            """
            from context_framework.in_memory_context_store import InMemoryContextStore

            class ThirdPartyStore(InMemoryContextStore):
                scheme = "thirdparty"
            """
        )
    )
    dist = tmp_path / "ctx_thirdparty-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ctx-thirdparty\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "thirdparty = ctx_thirdparty_store:ThirdPartyStore\n"
        "memory = ctx_thirdparty_store:ThirdPartyStore\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ctx_thirdparty_store", raising=False)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    return tmp_path


def test_entry_point_registers_a_scheme(third_party_dist: Path) -> None:
    assert "ctx_thirdparty_store" not in sys.modules
    assert "thirdparty" in available_schemes()
    assert "ctx_thirdparty_store" not in sys.modules  # listed without importing it
    store = open_store("thirdparty://?namespace=x")
    assert type(store).__name__ == "ThirdPartyStore"
    assert isinstance(store, BaseContextStore)
    assert store.namespace == "x"


def test_entry_point_cannot_take_over_a_builtin_scheme(third_party_dist: Path) -> None:
    available_schemes()
    assert type(open_store("memory://")) is InMemoryContextStore


def test_entry_points_are_loaded_for_an_unknown_scheme(third_party_dist: Path) -> None:
    # No available_schemes() call first: resolving an unknown scheme loads them.
    store = open_store("thirdparty://")
    assert type(store).__name__ == "ThirdPartyStore"


def test_entry_points_via_monkeypatched_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    calls: list[str] = []

    class FakeEntryPoint:
        name = "Fake"
        value = "test_registry:DummyStore"

    def fake_entry_points(*, group: str) -> list[FakeEntryPoint]:
        calls.append(group)
        return [FakeEntryPoint()]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    assert "fake" in available_schemes()
    assert type(open_store("fake://")).__name__ == "DummyStore"
    available_schemes()
    assert calls == [ENTRY_POINT_GROUP]  # loaded once


# --------------------------------------------------------------------------- wrapper layers by URL


def test_buffered_prefix_and_options_stack_a_buffer(tmp_path: Any) -> None:
    from context_framework.wrappers import BufferedStore

    store = open_store("buffered+memory://")
    assert isinstance(store, BufferedStore) and store.max_items == 1000
    store.close()
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}?buffer=5&flush_interval=0.5&namespace=n")
    assert isinstance(store, BufferedStore)
    assert (store.max_items, store.flush_interval, store.namespace) == (5, 0.5, "n")
    store.close()
    store = open_store("memory://", buffer=7)  # keyword options too
    assert isinstance(store, BufferedStore) and store.max_items == 7
    store.close()
    assert type(open_store("memory://?buffer=0")).__name__ == "InMemoryContextStore"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("buffered+buffered+memory://", "appears twice"),
        ("memory://?buffer=lots", "not a valid int"),
        ("memory://?buffer=-1", "must be >= 0"),
        ("memory://?flush_interval=0", "flush_interval must be a positive"),
        ("buffered+nosuch://", "no store is registered for URL scheme 'nosuch'"),
    ],
)
def test_bad_wrapper_urls(url: str, match: str) -> None:
    with pytest.raises(ContextConfigurationError, match=match):
        open_store(url)
