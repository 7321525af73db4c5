"""The protocol every adapter implements: context attached to parts of one data structure."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .keys import Key

__all__ = ["ContextAwareDataStructure"]


@runtime_checkable
class ContextAwareDataStructure(Protocol):
    """A data structure whose parts (identified by keys) carry context metadata."""

    def add_context(self, key: Key, metadata: dict[str, Any]) -> None:
        """Attach ``metadata`` to the part named by ``key`` (replacing what was there)."""

    def get_context(self, key: Key) -> dict[str, Any] | None:
        """The metadata of ``key``, or ``None`` when it has none."""

    def remove_context(self, key: Key) -> bool:
        """Remove the metadata of ``key``; return whether there was any."""

    def list_context_keys(self) -> list[Key]:
        """Every key that carries metadata, types intact."""
