"""One bounded memo for the header code's memoized pieces whose inputs are not hashable arguments.

:func:`functools.lru_cache` serves functions of hashable arguments; the composition memoizes
pieces (reduced keywords, encoded sensor and segment HDUs) whose key the caller builds from values
(never ``id()``), so an equal input finds its entry whatever object carries it and a changed input
never finds a stale one. They need the same bound and eviction with an explicit key: this. Its
bound can also be raised after it is made (the per-HDU memos hold a number of headers of the
largest header composed, see :data:`header.compose.MEMO_HEADERS`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, TypeVar

V = TypeVar("V")


class BoundedMemo(OrderedDict[Hashable, V]):
    """At most ``size`` values by key; when a new one is put beyond that, the oldest goes first.

    A lookup is the dictionary's own ``get`` (one probe, in C): an LSSTCam header looks up some 500
    memoized pieces, and refreshing an entry on every hit, as an LRU does, cost 0.2 ms a header
    for no better hit rate (each header's new pieces are put after the ones it reused)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a memo holds at least one entry, not {size}")
        super().__init__()
        self.size = size

    def put(self, key: Hashable, value: V) -> V:
        """Memoize ``value`` under ``key`` and return it, dropping the oldest entries beyond the bound."""
        self[key] = value
        while len(self) > self.size:
            self.popitem(last=False)
        return value
