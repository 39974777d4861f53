"""The small interface every `@lru_cache` store implements, and the values it shares.

`CacheBackend` is what the decorator talks to: four async calls over string keys.
`get` answers `MISSING` (not None) for an absent or expired key, so `None` can be a
cached value. `set` answers how many other entries it evicted to stay within
capacity, which the decorator counts in `spartan_cache_evictions_total`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable


class _Missing:
    """The type of `MISSING`: a key that is absent or expired."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@runtime_checkable
class CacheBackend(Protocol):
    """An LRU store of values under string keys, safe to share between asyncio tasks."""

    maxsize: int

    async def get(self, key: str) -> Any:
        """The value under `key` (now the most recently used), or `MISSING`."""

    async def set(self, key: str, value: Any) -> int:
        """Store `value` under `key` as most recently used; returns entries evicted."""

    async def delete(self, key: str) -> bool:
        """Remove `key`; whether it was there."""

    async def clear(self) -> None:
        """Remove every entry of this cache."""


class CacheInfo(NamedTuple):
    """Counters of one decorated function in this process (`currsize` None if unknown here)."""

    hits: int
    misses: int
    evictions: int
    maxsize: int
    currsize: int | None
