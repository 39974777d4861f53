"""The project's own `@lru_cache` decorator and the stores behind it.

    from spartan.cache import lru_cache, RedisBackend, json_codec

`MemoryBackend` keeps entries in the process; `RedisBackend` shares them between
replicas (values as bytes: pass `encode`/`decode`, e.g. `**json_codec`). Both are
exact LRUs with optional TTL behind the `CacheBackend` protocol.
"""

from __future__ import annotations

import json
from typing import Any

from spartan.cache.backend import MISSING, CacheBackend, CacheInfo
from spartan.cache.decorator import CachedFunction, default_key, lru_cache
from spartan.cache.memory import MemoryBackend
from spartan.cache.redis_backend import RedisBackend


def json_encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def json_decode(data: bytes | str) -> Any:
    return json.loads(data)


json_codec: dict[str, Any] = {"encode": json_encode, "decode": json_decode}

__all__ = [
    "MISSING",
    "CacheBackend",
    "CacheInfo",
    "CachedFunction",
    "MemoryBackend",
    "RedisBackend",
    "default_key",
    "json_codec",
    "json_decode",
    "json_encode",
    "lru_cache",
]
