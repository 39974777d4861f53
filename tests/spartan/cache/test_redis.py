"""RedisBackend on a real redis-server: exact eviction order, TTL, namespaces, sharing between replicas."""
from __future__ import annotations

import asyncio
import functools

import pytest
from redis.asyncio import Redis

from spartan.cache import MISSING, RedisBackend, json_codec, lru_cache
from spartan.errors import Unavailable
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.on_cluster  # the same behaviour on one Redis and on a Redis Cluster


async def test_eviction_order_is_exact_least_recently_used(redis: Redis) -> None:
    backend = RedisBackend(redis, name="order", maxsize=3)
    for key in "abc":
        assert await backend.set(key, key.upper()) == 0
    assert await backend.get("a") == b"A"
    assert await backend.set("d", b"D") == 1  # b is the least recently used
    assert await backend.keys() == ["c", "a", "d"]
    assert await backend.get("b") is MISSING
    assert await backend.set("c", b"C2") == 0  # overwrite: no eviction, c refreshed
    assert await backend.keys() == ["a", "d", "c"]
    assert await backend.set("e", b"E") == 1
    assert await backend.keys() == ["d", "c", "e"]
    assert await backend.get("c") == b"C2"
    assert await backend.size() == 3
    assert await redis.hlen(backend.values_key) == 3


async def test_empty_values_are_values(redis: Redis) -> None:
    backend = RedisBackend(redis, name="empty", maxsize=2)
    await backend.set("k", b"")
    assert await backend.get("k") == b""


async def test_ttl_uses_redis_time(redis: Redis) -> None:
    backend = RedisBackend(redis, name="ttl", maxsize=4, ttl=0.2)
    await backend.set("short", b"1")
    assert await backend.get("short") == b"1"
    await asyncio.sleep(0.35)
    assert await backend.get("short") is MISSING
    assert await backend.size() == 0
    assert await redis.hlen(backend.expiry_key) == 0


async def test_setting_without_ttl_clears_an_earlier_expiry(redis: Redis) -> None:
    short = RedisBackend(redis, name="mixed", maxsize=4, ttl=0.1)
    forever = RedisBackend(redis, name="mixed", maxsize=4)
    await short.set("k", b"short")
    await forever.set("k", b"forever")
    await asyncio.sleep(0.2)
    assert await short.get("k") == b"forever"


async def test_delete_clear_and_namespaces(redis: Redis) -> None:
    first = RedisBackend(redis, name="first", maxsize=4)
    second = RedisBackend(redis, name="second", maxsize=4)
    await first.set("k", b"1")
    await second.set("k", b"2")
    assert await first.delete("k") is True
    assert await first.delete("k") is False
    assert await second.get("k") == b"2"
    await second.set("j", b"3")
    await first.set("x", b"4")
    await second.clear()
    assert await second.size() == 0
    assert await first.get("x") == b"4"


async def test_values_must_be_bytes_or_str(redis: Redis) -> None:
    backend = RedisBackend(redis, name="typed", maxsize=2)
    with pytest.raises(TypeError, match="encode="):
        await backend.set("k", {"not": "bytes"})


def test_names_with_braces_are_refused(redis: Redis) -> None:
    with pytest.raises(ValueError, match="braces"):
        RedisBackend(redis, name="a{b}", maxsize=2)


async def test_replicas_share_entries_through_the_decorator(redis_server: RedisServer) -> None:
    computed: list[str] = []
    clients = [Redis.from_url(redis_server.url) for _ in range(2)]
    try:
        def replica(client: Redis):  # noqa: ANN202 - a decorated function per replica
            @lru_cache(maxsize=8, name="shared_profiles", backend=functools.partial(RedisBackend, client),
                       key=lambda user: user, **json_codec)
            async def profile(user: str) -> dict[str, object]:
                computed.append(user)
                return {"user": user, "groups": ["team"]}

            return profile

        first, second = replica(clients[0]), replica(clients[1])
        assert await first("alice") == {"user": "alice", "groups": ["team"]}
        assert await second("alice") == {"user": "alice", "groups": ["team"]}
        assert computed == ["alice"]
        assert second.cache_info().hits == 1 and second.cache_info().currsize is None
        await second.invalidate("alice")
        await first("alice")
        assert computed == ["alice", "alice"]
    finally:
        for client in clients:
            await client.aclose()


async def test_eviction_counter_through_the_decorator(redis: Redis) -> None:
    @lru_cache(maxsize=2, name="redis_evictions", backend=functools.partial(RedisBackend, redis),
               key=str, encode=str, decode=int)
    async def parse(x: int) -> int:
        return x

    for x in (1, 2, 3, 1):
        assert await parse(x) == x
    assert parse.cache_info().evictions == 2
    assert parse.cache_info().misses == 4


def test_a_plain_function_cannot_use_redis(redis: Redis) -> None:
    with pytest.raises(TypeError, match="MemoryBackend"):
        @lru_cache(backend=RedisBackend(redis, name="sync", maxsize=2))
        def plain() -> str:
            return ""


async def test_redis_down_is_unavailable(redis_server: RedisServer, redis: Redis) -> None:
    backend = RedisBackend(redis, name="down", maxsize=2)
    await backend.set("k", b"v")
    redis_server.kill()
    with pytest.raises(Unavailable, match="cache 'down' unavailable"):
        await backend.get("k")
