"""Row annotations: one stored metadata dict plus a compact set of the rows it covers.

Storage layout, in the adapter's namespace of the store (every value a JSON dict)::

    ("annotation",)                          index: {annotation id: revision, or None once removed}
    ("annotation", id)                       head: metadata, row count, how rows are identified,
                                             index fingerprint, revision, number of chunks
    ("annotation", id, "rows", rev, n)       chunk n of the row set of revision ``rev``
                                             (see :mod:`.row_sets`; bytes as base64 text)

Ids are ULIDs (26 characters, Crockford base32: a millisecond timestamp then
random bits, monotonic within a process), so sorting ids sorts annotations
by creation time, across processes too (to the millisecond).

Writes publish last, so a reader never sees a half-written row set: the
chunks go in one ``set_many``, then the head, then the id is merged into the
index with the store's atomic ``update``. A rewrite (rows removed) writes its
chunks under a new revision, then the head, then the index, and only then
deletes the old chunks; a reader that loses that race re-reads the head.
Removal unpublishes first (the index entry becomes ``None``), then deletes.
Tombstones are compacted once there are many of them.

Rows are identified by **label** on an integer index (so annotations follow
the labels when rows are dropped, reordered or appended) and by **position**
otherwise; a positional annotation records a fingerprint of the index
(length and a hash of up to 1,024 evenly spaced labels) and refuses to be read
against an index that does not match it (:class:`AnnotationIndexError`).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from ..base_store import ContextStore
from ..exceptions import (
    ContextError,
    ContextSchemaError,
    ContextStoreError,
    ContextValueError,
    ContextValueTooLargeError,
)
from ..keys import encode_key, normalize_key
from ..values import DEFAULT_MAX_VALUE_SIZE, check_size, dumps_json, loads_json, prepare_value
from . import row_sets
from .base_adapter import ANNOTATION_KIND
from .row_sets import RowSet

__all__ = [
    "INDEX_KEY",
    "KIND",
    "Annotation",
    "AnnotationIndexError",
    "AnnotationStore",
    "index_fingerprint",
    "new_annotation_id",
]

KIND = ANNOTATION_KIND
INDEX_KEY: tuple[str] = (KIND,)
FORMAT = 1
BY_LABEL, BY_POSITION = "label", "position"
# Raw bytes of row-set data per chunk (base64 makes it 4/3 larger), below max_value_size.
_CHUNK_BYTES = 192 * 1024
_HEAD_ROOM = 512  # the chunk's JSON around its data
_COMPACT_AFTER = 256  # tombstones in the index before it is compacted
_RETRIES = 3
_SAMPLE = 1024


class AnnotationIndexError(ContextValueError):
    """A positional annotation was made over a different index than the frame's."""


# --------------------------------------------------------------------------- ids

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_id_lock = threading.Lock()
_last: tuple[int, int, int] = (0, 0, 0)  # pid, milliseconds, random part


def new_annotation_id() -> str:
    """A new ULID: sorts by creation time; strictly increasing within a process."""
    global _last
    with _id_lock:
        pid, ms = os.getpid(), time.time_ns() // 1_000_000
        rand = int.from_bytes(os.urandom(10), "big")
        last_pid, last_ms, last_rand = _last
        if pid == last_pid and ms <= last_ms:  # same millisecond (or clock went back)
            ms, rand = last_ms, last_rand + 1
            if rand >> 80:
                ms, rand = ms + 1, 0
        _last = (pid, ms, rand)
    value = (ms << 80) | rand
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def id_time(annotation_id: str) -> datetime:
    """When an annotation was made (UTC), from its id."""
    ms = 0
    for ch in annotation_id[:10]:
        ms = ms * 32 + _CROCKFORD.index(ch)
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


# --------------------------------------------------------------------------- index fingerprints


def index_fingerprint(index: pd.Index) -> dict[str, Any]:
    """Length and a hash of up to 1,024 evenly spaced labels: cheap, deterministic across processes."""
    n = len(index)
    digest = hashlib.sha256()
    if n:
        positions = np.unique(np.linspace(0, n - 1, num=min(n, _SAMPLE)).astype(np.int64))
        for label in index.take(positions).tolist():
            try:
                part = encode_key(normalize_key(label))
            except ContextError:
                part = repr(label).encode("utf-8", "backslashreplace")
            digest.update(len(part).to_bytes(4, "big"))
            digest.update(part)
    return {"length": n, "sample": digest.hexdigest()[:32]}


# --------------------------------------------------------------------------- one annotation


@dataclass(frozen=True, eq=False)
class Annotation:
    """One annotation as loaded by an adapter (metadata private: use :meth:`metadata_copy`)."""

    id: str
    rev: str
    metadata: dict[str, Any]
    rows: RowSet
    by: str
    index: dict[str, Any] | None
    chunks: int
    nested: str | None = field(default=None, repr=False)  # JSON of the metadata if not flat

    @classmethod
    def make(cls, ann_id: str, head: Mapping[str, Any], rows: RowSet) -> Annotation:
        metadata = dict(head["metadata"])
        flat = all(type(v) is not dict and type(v) is not list for v in metadata.values())
        return cls(
            ann_id,
            head["rev"],
            metadata,
            rows,
            head["by"],
            head.get("index"),
            int(head["chunks"]),
            None if flat else dumps_json(metadata),
        )

    @property
    def by_label(self) -> bool:
        return self.by == BY_LABEL

    def metadata_copy(self) -> dict[str, Any]:
        """A fresh, independent copy of the metadata."""
        if self.nested is None:
            return self.metadata.copy()
        return loads_json(self.nested)  # type: ignore[no-any-return]

    def info(self) -> dict[str, Any]:
        """What :meth:`PandasContextAdapter.list_annotations` shows of it."""
        return {
            "id": self.id,
            "metadata": self.metadata_copy(),
            "rows": len(self.rows),
            "by": self.by,
            "created": id_time(self.id),
        }

    def check_index(self, fingerprint: Mapping[str, Any]) -> None:
        """Raise :class:`AnnotationIndexError` if a positional annotation does not fit the index."""
        if self.index is not None and dict(self.index) != dict(fingerprint):
            raise AnnotationIndexError(
                f"annotation {self.id!r} identifies rows by position and was made over a "
                f"DataFrame index of {self.index.get('length')} rows that this frame's index "
                f"({fingerprint.get('length')} rows) does not match; annotations on a non-integer "
                "index apply only to an equal index. Restore the index, or remove the annotation "
                f"with adapter.remove_annotation({self.id!r})"
            )


def _head(
    metadata: dict[str, Any], rows: RowSet, by: str, index: Any, rev: str, chunks: int
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "metadata": metadata,
        "rows": len(rows),
        "by": by,
        "index": index,
        "rev": rev,
        "chunks": chunks,
    }


def _new_rev() -> str:
    return os.urandom(6).hex()


def _chunk_key(ann_id: str, rev: str, n: int) -> tuple[str, str, str, str, int]:
    return (KIND, ann_id, "rows", rev, n)


# --------------------------------------------------------------------------- the store side


class AnnotationStore:
    """Reads and writes annotations in one store (namespace view)."""

    def __init__(self, store: ContextStore) -> None:
        self.store = store
        max_size = getattr(store, "max_value_size", DEFAULT_MAX_VALUE_SIZE)
        self.max_value_size: int | None = max_size if isinstance(max_size, int) else None

    def chunk_bytes(self) -> int:
        """Raw row-set bytes per chunk so that a chunk's JSON stays within ``max_value_size``."""
        if self.max_value_size is None:
            return _CHUNK_BYTES
        budget = (self.max_value_size - _HEAD_ROOM) * 3 // 4
        if budget < 64:
            raise ContextValueError(
                f"this store's max_value_size ({self.max_value_size} bytes) is too small to hold "
                "row annotations; use add_row_context(..., per_row=True)"
            )
        return min(_CHUNK_BYTES, budget)

    def prepare(self, metadata: Any) -> dict[str, Any]:
        """Validate metadata as the store would (a private copy), before anything is written."""
        return prepare_value(metadata, self.max_value_size)

    # ------------------------------------------------------------------ writes

    def write(self, metadata: dict[str, Any], rows: RowSet, by: str, index: Any) -> Annotation:
        """Store a new annotation (``metadata`` already prepared); return it."""
        rev = _new_rev()
        chunks = rows.encode(self.chunk_bytes())
        head = _head(metadata, rows, by, index, rev, len(chunks))
        self._check_head(head)
        ann_id = new_annotation_id()
        self._publish_rows(ann_id, rev, chunks, head)
        self._update_index({ann_id: rev})
        return Annotation.make(ann_id, head, rows)

    def rewrite(self, ann: Annotation, rows: RowSet) -> Annotation | None:
        """Replace the row set of ``ann``; remove it when ``rows`` is empty."""
        if not rows:
            self.remove(ann.id)
            return None
        rev = _new_rev()
        chunks = rows.encode(self.chunk_bytes())
        head = _head(ann.metadata, rows, ann.by, ann.index, rev, len(chunks))
        self._publish_rows(ann.id, rev, chunks, head)
        self._update_index({ann.id: rev})
        self.store.delete_many([_chunk_key(ann.id, ann.rev, n) for n in range(ann.chunks)])
        return Annotation.make(ann.id, head, rows)

    def remove(self, ann_id: str) -> bool:
        """Unpublish, then delete the head and chunks; return whether it existed."""
        head = self.store.get((KIND, ann_id))
        index = self._update_index({ann_id: None})
        keys: list[Any] = [(KIND, ann_id)]
        if isinstance(head, Mapping) and isinstance(head.get("chunks"), int):
            keys += [_chunk_key(ann_id, str(head.get("rev")), n) for n in range(head["chunks"])]
        self.store.delete_many(keys)
        if sum(1 for v in index.values() if v is None) > _COMPACT_AFTER:
            self._compact()
        return head is not None

    def _check_head(self, head: dict[str, Any]) -> None:
        try:
            check_size(dumps_json(head), self.max_value_size)
        except ContextValueTooLargeError as exc:
            raise ContextValueTooLargeError(
                f"the annotation's metadata is too large to store with its header ({exc})"
            ) from None

    def _publish_rows(
        self, ann_id: str, rev: str, chunks: list[dict[str, Any]], head: dict[str, Any]
    ) -> None:
        if chunks:
            self.store.set_many([(_chunk_key(ann_id, rev, n), c) for n, c in enumerate(chunks)])
        self.store.set((KIND, ann_id), head)

    def _update_index(self, patch: dict[str, Any]) -> dict[str, Any]:
        update = getattr(self.store, "update", None)
        if update is not None:
            return update(INDEX_KEY, patch)  # type: ignore[no-any-return]
        merged = {**(self.store.get(INDEX_KEY) or {}), **patch}  # pragma: no cover - minimal stores
        self.store.set(INDEX_KEY, merged)  # pragma: no cover
        return merged  # pragma: no cover

    def _compact(self) -> None:
        """Drop tombstones (and ids without a head) from the index.

        An id merged in between our read and our write would be lost, so the
        heads are listed afterwards and any that went missing is merged back.
        """
        index = self.store.get(INDEX_KEY) or {}
        live = [k for k, v in index.items() if v is not None]
        heads = self.store.get_many([(KIND, k) for k in live])
        compacted = {k: index[k] for k, h in zip(live, heads) if h is not None}
        self.store.set(INDEX_KEY, compacted)
        gone = {k for k, v in index.items() if v is None}
        keys: list[Any] = self.store.list_keys(INDEX_KEY)
        found = {str(key[1]) for key in keys if type(key) is tuple and len(key) == 2}
        missing = sorted(found - set(compacted) - gone)
        if missing:
            restored = self.store.get_many([(KIND, k) for k in missing])
            patch: dict[str, Any] = {k: h["rev"] for k, h in zip(missing, restored) if isinstance(h, Mapping)}
            if patch:
                self._update_index(patch)

    # ------------------------------------------------------------------ reads

    def load(self, cached: Mapping[str, Annotation]) -> tuple[Annotation, ...]:
        """Every published annotation in creation order, reusing ``cached`` ones still current."""
        index = self.store.get(INDEX_KEY) or {}
        live = sorted(k for k, v in index.items() if v is not None)
        if not live:
            return ()
        out: dict[str, Annotation] = {}
        todo = []
        for ann_id in live:
            ann = cached.get(ann_id)
            if ann is not None and ann.rev == index[ann_id]:
                out[ann_id] = ann
            else:
                todo.append(ann_id)
        for _ in range(_RETRIES):
            if not todo:
                break
            todo = self._load_heads(todo, out)
        return tuple(out[k] for k in live if k in out)

    def _load_heads(self, ids: list[str], out: dict[str, Annotation]) -> list[str]:
        """Load ``ids`` into ``out``; return the ids whose chunks changed under us (retry those)."""
        heads = self.store.get_many([(KIND, k) for k in ids])
        wanted: list[tuple[str, dict[str, Any]]] = []
        keys: list[Any] = []
        for ann_id, head in zip(ids, heads):
            if head is None:
                continue  # removed since the index was read
            head = _check_head_format(ann_id, head)
            wanted.append((ann_id, head))
            keys += [_chunk_key(ann_id, head["rev"], n) for n in range(head["chunks"])]
        values = iter(self.store.get_many(keys)) if keys else iter(())
        retry = []
        for ann_id, head in wanted:
            chunks = [next(values) for _ in range(head["chunks"])]
            if any(c is None for c in chunks):
                retry.append(ann_id)  # rewritten or removed meanwhile
                continue
            try:
                rows = row_sets.decode(chunks)  # type: ignore[arg-type]
            except ValueError as exc:
                raise ContextStoreError(f"annotation {ann_id!r} has a corrupt row set: {exc}") from None
            if len(rows) != head["rows"]:
                raise ContextStoreError(
                    f"annotation {ann_id!r} says it covers {head['rows']} rows, its row set has {len(rows)}"
                )
            out[ann_id] = Annotation.make(ann_id, head, rows)
        return retry


def _check_head_format(ann_id: str, head: Mapping[str, Any]) -> dict[str, Any]:
    fmt = head.get("format")
    if isinstance(fmt, int) and fmt > FORMAT:
        raise ContextSchemaError(
            f"annotation {ann_id!r} was written in format {fmt}, newer than this library's "
            f"({FORMAT}); upgrade context-framework to read it"
        )
    ok = (
        fmt == FORMAT
        and isinstance(head.get("metadata"), dict)
        and head.get("by") in (BY_LABEL, BY_POSITION)
        and isinstance(head.get("rev"), str)
        and isinstance(head.get("chunks"), int)
        and isinstance(head.get("rows"), int)
    )
    if not ok:
        raise ContextStoreError(f"annotation {ann_id!r} has a malformed header: {dict(head)!r:.200}")
    return dict(head)
