"""The limiter against a Redis that misbehaves as after a failover: a clock that moved back, a read-only replica.

docs/RATE_LIMITING.md promises that a Redis clock moving back refills nothing until it
moves forward again, and that a read-only replica makes the check UNAVAILABLE (never
"allow everything"). Both run against a real redis-server.
"""
from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from spartan.errors import Unavailable
from spartan.ratelimit.bucket import RateLimiter, bucket_key
from spartan.ratelimit.policy import RatePolicy
from tests.support.redis_server import RedisServer

POLICY = RatePolicy(rate=10, per_seconds=1, burst=3)  # refills the whole burst in 0.3 s


async def redis_now_us(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return seconds * 1_000_000 + micros


async def test_a_clock_that_moved_back_refills_nothing_until_it_moves_forward(redis: Redis) -> None:
    limiter = RateLimiter(redis)
    key = bucket_key("alice", "send")
    assert all([(await limiter.check("alice", "send", POLICY)).allowed for _ in range(3)])
    # The bucket was last written by a primary whose clock ran 60 s ahead of this Redis: to this
    # Redis, its clock has moved back by 60 s.
    ahead_us = await redis_now_us(redis) + 60_000_000
    await redis.hset(key, mapping={"tokens": "0", "ts": str(ahead_us)})
    await asyncio.sleep(0.5)  # on a steady clock this would refill the whole burst
    refused = await limiter.check("alice", "send", POLICY)
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert await redis.hget(key, "ts") == str(ahead_us).encode()  # a refusal changes nothing

    # The clock catches up with the stored time (here: the stored time is moved back to 0.5 s ago).
    await redis.hset(key, "ts", str(await redis_now_us(redis) - 500_000))
    assert (await limiter.check("alice", "send", POLICY)).allowed


async def test_a_read_only_replica_answers_unavailable(redis_server: RedisServer) -> None:
    replica_server = RedisServer().start()
    replica = Redis.from_url(replica_server.url)
    try:
        await replica.replicaof("127.0.0.1", redis_server.port)
        for _ in range(100):
            if (await replica.info("replication")).get("master_link_status") == "up":
                break
            await asyncio.sleep(0.05)
        limiter = RateLimiter(replica)
        for _ in range(2):  # every check, not only the first
            with pytest.raises(Unavailable, match="rate limiter unavailable: ReadOnlyError"):
                await limiter.check("alice", "send", POLICY)
    finally:
        await replica.aclose()
        replica_server.close()
