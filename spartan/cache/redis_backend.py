"""Shared LRU store for `@lru_cache` in Redis: one cache seen by every replica.

Exact and atomic: each get, set and delete is one Lua script (`cache_*.lua`) over
four keys that share the hash tag `{<name>}` (so Redis Cluster keeps one cache in
one slot):

    sp:c:{<name>}:lru    zset    entry key -> use tick (the LRU order)
    sp:c:{<name>}:val    hash    entry key -> value bytes
    sp:c:{<name>}:exp    hash    entry key -> expiry, ms since the Unix epoch
    sp:c:{<name>}:tick   string  INCR counter, the LRU clock

Ticks come from INCR rather than wall time, so the order is exact even for uses in
the same millisecond; expiry uses Redis `TIME`, so replicas never disagree on
clocks. Values must be bytes or str: serialize with the decorator's `encode` /
`decode` (JSON, protobuf, ...). Pickle is deliberately not offered: a shared Redis
must never be able to make a replica run code.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions
from redis.asyncio import Redis

from spartan.cache.backend import MISSING
from spartan.errors import Unavailable
from spartan.redis_scripts import script

_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class RedisBackend:
    """An exact LRU of at most `maxsize` entries in Redis, entries expiring `ttl` seconds after set."""

    def __init__(self, redis: Redis, *, name: str, maxsize: int = 128, ttl: float | None = None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive (or None for no expiry)")
        if not name or "{" in name or "}" in name:
            raise ValueError(f"cache name {name!r} must be non-empty and free of braces")
        self.redis = redis
        self.name = name
        self.maxsize = maxsize
        self.ttl = ttl
        prefix = f"sp:c:{{{name}}}:"
        self.lru_key, self.values_key, self.expiry_key, self.tick_key = (
            prefix + part for part in ("lru", "val", "exp", "tick")
        )
        self._ttl_ms = 0 if ttl is None else max(1, round(ttl * 1000))
        self._get = script(redis, "cache_get")
        self._set = script(redis, "cache_set")
        self._delete = script(redis, "cache_delete")

    @property
    def _keys(self) -> list[str]:
        return [self.lru_key, self.values_key, self.expiry_key, self.tick_key]

    async def get(self, key: str) -> Any:
        value = await self._run(self._get(keys=self._keys, args=[key]))
        return MISSING if value is None else value

    async def set(self, key: str, value: Any) -> int:
        if not isinstance(value, (bytes, str)):
            raise TypeError(
                f"cache {self.name!r} stores bytes or str, got {type(value).__name__}: "
                "pass encode=/decode= to @lru_cache"
            )
        return int(await self._run(self._set(keys=self._keys, args=[key, value, self.maxsize, self._ttl_ms])))

    async def delete(self, key: str) -> bool:
        return bool(await self._run(self._delete(keys=self._keys[:3], args=[key])))

    async def clear(self) -> None:
        await self._run(self.redis.delete(*self._keys))

    async def size(self) -> int:
        """Entries held now (expired ones included until read or evicted)."""
        return int(await self._run(self.redis.zcard(self.lru_key)))

    async def keys(self) -> list[str]:
        """Keys from least to most recently used."""
        members = await self._run(self.redis.zrange(self.lru_key, 0, -1))
        return [m.decode() if isinstance(m, bytes) else m for m in members]

    async def _run(self, call: Any) -> Any:
        try:
            return await call
        except _REDIS_DOWN as error:
            raise Unavailable(f"cache {self.name!r} unavailable: {error}") from error
