"""Exceptions raised by context-framework.

Every error the library raises derives from :class:`ContextError`, so one
``except ContextError`` catches them all. Driver exceptions (``sqlite3``,
redis-py, database drivers) never leak raw: they are wrapped in a
:class:`ContextStoreError` whose ``__cause__`` is the original exception.
No message, log line or ``repr`` ever contains a password.

The tree::

    ContextError
    ├── ContextKeyError (also a KeyError)
    │   ├── UnsupportedKeyError ......... the key cannot be encoded (bad type, bad part)
    │   └── LabelNotFoundError .......... an adapter key names a column/row/partition that is not there
    ├── ContextSerializationError (also a TypeError) ... metadata is not JSON-compatible
    │   └── ContextValueTooLargeError ... encoded metadata exceeds ``max_value_size``
    ├── ContextValueError (also a ValueError) .......... e.g. ``increment`` on a non-numeric field
    ├── ContextConfigurationError (also a ValueError) .. bad URL, unknown scheme, bad option
    ├── MissingDependencyError (also an ImportError) ... an optional extra is not installed
    └── ContextStoreError ............... the backend failed; ``__cause__`` holds the driver error
        ├── ContextStoreClosedError ..... the store was closed
        ├── ContextStoreBusyError ....... the backend stayed locked/busy past the timeout
        ├── ContextSchemaError .......... the stored schema is from an unknown/newer version
        └── ContextWritesRefusedError ... buffered writes the store refused when they were sent
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ContextConfigurationError",
    "ContextError",
    "ContextKeyError",
    "ContextSchemaError",
    "ContextSerializationError",
    "ContextStoreBusyError",
    "ContextStoreClosedError",
    "ContextStoreError",
    "ContextValueError",
    "ContextValueTooLargeError",
    "ContextWritesRefusedError",
    "LabelNotFoundError",
    "MissingDependencyError",
    "UnsupportedKeyError",
]


class ContextError(Exception):
    """Root of every exception raised by context-framework."""


class ContextKeyError(ContextError, KeyError):
    """A context key is invalid or does not name a part of the data."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnsupportedKeyError(ContextKeyError, TypeError):
    """A key (or one of its parts) has a type or value the key codec cannot encode."""


class LabelNotFoundError(ContextKeyError):
    """An adapter key names a column, row or partition that the data does not have."""


class ContextSerializationError(ContextError, TypeError):
    """Metadata cannot be stored: it is not a JSON-compatible dict."""


class ContextValueTooLargeError(ContextSerializationError):
    """Encoded metadata is larger than the store's ``max_value_size``."""


class ContextValueError(ContextError, ValueError):
    """An operation does not fit the stored value (e.g. incrementing a string field)."""


class ContextConfigurationError(ContextError, ValueError):
    """A store URL, option or registration is invalid."""


class MissingDependencyError(ContextError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    @classmethod
    def for_extra(cls, extra: str, module: str) -> MissingDependencyError:
        return cls(
            f"{module!r} is required for this feature: "
            f"pip install 'context-framework[{extra}]'"
        )


class ContextStoreError(ContextError):
    """The storage backend failed. The driver's exception is kept as ``__cause__``."""


class ContextStoreClosedError(ContextStoreError):
    """An operation was attempted on a closed store."""


class ContextStoreBusyError(ContextStoreError):
    """The backend stayed locked or busy for longer than the configured timeout."""


class ContextSchemaError(ContextStoreError):
    """The backend holds a schema this version of the library cannot use."""


class ContextWritesRefusedError(ContextStoreError):
    """Writes held back (by ``BufferedStore``) that the store refused when they were sent.

    Retrying cannot store them, so they were dropped; the other writes were sent.
    ``refused`` holds ``(key, error)`` pairs; ``__cause__`` is the first error.
    """

    def __init__(self, message: str, refused: list[tuple[Any, BaseException]] | None = None) -> None:
        super().__init__(message)
        self.refused: list[tuple[Any, BaseException]] = list(refused or ())
