"""In-process LRU store for `@lru_cache`: O(1) get/put on an OrderedDict, optional TTL.

Each operation runs without awaiting, so it is atomic with respect to other asyncio
tasks; a lock makes the synchronous methods safe from threads too (sync functions
decorated with `@lru_cache` call them directly). Expiry is checked on access against
an injectable monotonic clock, so tests can move time by hand. Expired entries still
occupy capacity until they are read or pushed out as least recently used.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from spartan.cache.backend import MISSING


class MemoryBackend:
    """An exact LRU of at most `maxsize` entries; entries expire `ttl` seconds after they were set."""

    def __init__(
        self, maxsize: int = 128, ttl: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive (or None for no expiry)")
        self.maxsize = maxsize
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        """Keys from least to most recently used (expired ones included until touched)."""
        with self._lock:
            return list(self._entries)

    def get_now(self, key: str) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return MISSING
            value, expires_at = entry
            if expires_at <= self._clock():
                del self._entries[key]
                return MISSING
            self._entries.move_to_end(key)
            return value

    def set_now(self, key: str, value: Any) -> int:
        expires_at = self._clock() + self.ttl if self.ttl is not None else float("inf")
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self._entries[key] = (value, expires_at)
                return 0
            self._entries[key] = (value, expires_at)
            evicted = 0
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
                evicted += 1
            return evicted

    def delete_now(self, key: str) -> bool:
        with self._lock:
            return self._entries.pop(key, None) is not None

    def clear_now(self) -> None:
        with self._lock:
            self._entries.clear()

    async def get(self, key: str) -> Any:
        return self.get_now(key)

    async def set(self, key: str, value: Any) -> int:
        return self.set_now(key, value)

    async def delete(self, key: str) -> bool:
        return self.delete_now(key)

    async def clear(self) -> None:
        self.clear_now()
