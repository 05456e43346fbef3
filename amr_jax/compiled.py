"""Compiled programs held by the caller that reuses them, never by a module.

A run that localizes several systems on one split, a predictor answering many queries, a
streamed split processed chunk by chunk or an ablation that pretrains and fine-tunes the same
model compiles each program once by passing one `CompiledCache` to the functions it calls.
Two runs that do not share a cache share nothing: a program compiled for one configuration can
never be picked up by another, whatever the keys forget. Keys are built by the functions that
compile (they know what their program depends on); the cache only stores.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from typing import Any


class CompiledCache:
    """Least-recently-used map from a program's key to the compiled program.

    Args:
      max_entries: entries kept (the least recently used is dropped first); 0 keeps all.
    """

    def __init__(self, max_entries: int = 0):
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()

    def get_or_build(self, key: Hashable, build: Callable[[], Any]) -> tuple[Any, bool]:
        """`(program, built)`: the cached program, or `build()`'s result stored under `key`."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key], False
        program = build()
        self._entries[key] = program
        while self.max_entries and len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return program, True

    def items(self) -> list[tuple[Hashable, Any]]:
        """(key, program) pairs, least recently used first."""
        return list(self._entries.items())

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
