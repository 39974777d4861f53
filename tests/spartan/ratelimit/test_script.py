"""token_bucket.lua arithmetic at its boundaries, on a real redis-server.

Time is never faked: the tests read Redis `TIME` around a call (the same clock the
script uses) and derive exact expectations from the stored state, or wait and check
behaviour ("after waiting retry_after, the next call passes"), never speed.
"""
from __future__ import annotations

import asyncio
import math

import pytest
from redis.asyncio import Redis

from spartan.ratelimit import RateLimiter, RatePolicy, bucket_key
from spartan.redis_scripts import script
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.on_cluster  # the same behaviour on one Redis and on a Redis Cluster

KEY = bucket_key("alice", "send")


async def take(redis: Redis, rate: float, burst: int, cost: int = 1, key: str = KEY) -> tuple[int, int, float, int]:
    """One script call: (allowed, remaining, retry_after, limit)."""
    allowed, remaining, retry_after, limit = await script(redis, "token_bucket")(
        keys=[key], args=[repr(rate), burst, cost]
    )
    return int(allowed), int(remaining), float(retry_after), int(limit)


async def redis_now(redis: Redis) -> float:
    seconds, micros = await redis.time()
    return seconds + micros / 1e6


async def stored(redis: Redis, key: str = KEY) -> tuple[float, float]:
    """(tokens, ts in seconds) as the script left them."""
    tokens, ts_us = await stored_exactly(redis, key)
    return tokens, ts_us / 1e6


async def stored_exactly(redis: Redis, key: str = KEY) -> tuple[float, int]:
    """(tokens, ts in microseconds), without the rounding of epoch seconds as floats."""
    tokens, ts = await redis.hmget(key, "tokens", "ts")
    return float(tokens), int(ts)


def test_bucket_key_uses_the_user_as_cluster_hash_tag() -> None:
    assert bucket_key("alice", "send") == "sp:rl:{alice}:send"
    assert bucket_key("bob", "receive", prefix="x:") == "x:{bob}:receive"


async def test_fresh_bucket_allows_the_burst_then_rejects(redis: Redis) -> None:
    results = [await take(redis, rate=0.01, burst=3) for _ in range(4)]
    assert [r[:2] for r in results[:3]] == [(1, 2), (1, 1), (1, 0)]
    assert all(r[2] == 0 and r[3] == 3 for r in results[:3])
    allowed, remaining, retry_after, limit = results[3]
    assert (allowed, remaining, limit) == (0, 0, 3)
    assert 99.0 < retry_after <= 100.0  # one token takes 100 s at 0.01/s


async def test_retry_after_is_exact_against_the_redis_clock(redis: Redis) -> None:
    rate = 1.0
    assert (await take(redis, rate, burst=1))[0] == 1
    tokens, drained_at = await stored(redis)
    assert tokens == 0.0
    before = await redis_now(redis)
    allowed, remaining, retry_after, _ = await take(redis, rate, burst=1)
    after = await redis_now(redis)
    assert after - drained_at < 1.0, "the machine stalled for a whole second; expectations below assume less"
    assert (allowed, remaining) == (0, 0)
    # The script saw a time between `before` and `after`; it rounds up to whole ms.
    assert 1.0 / rate - (after - drained_at) - 1e-6 <= retry_after <= 1.0 / rate - (before - drained_at) + 0.001 + 1e-6
    assert retry_after == math.ceil(retry_after * 1000 - 1e-6) / 1000  # millisecond precision


async def test_waiting_retry_after_lets_the_next_call_through(redis: Redis) -> None:
    for _ in range(3):
        while (decision := await take(redis, rate=5.0, burst=1))[0] == 1:
            pass
        assert 0 < decision[2] <= 0.2 + 0.001
        await asyncio.sleep(decision[2])
        assert (await take(redis, rate=5.0, burst=1))[0] == 1


async def test_refill_is_continuous_and_keeps_fractions(redis: Redis) -> None:
    rate = 2.0
    await take(redis, rate, burst=2)
    await take(redis, rate, burst=2)
    tokens_before, drained_us = await stored_exactly(redis)
    await asyncio.sleep(0.75)  # 1.5 tokens' worth
    allowed, remaining, _, _ = await take(redis, rate, burst=2)
    tokens, taken_us = await stored_exactly(redis)
    taken_at = taken_us / 1e6
    expected = min(2.0, tokens_before + (taken_us - drained_us) * rate / 1e6) - 1
    assert allowed == 1
    assert tokens == pytest.approx(expected, abs=1e-9)
    assert remaining == math.floor(tokens)
    if tokens < 1:  # the usual case: about half a token saved up
        before = await redis_now(redis)
        allowed, _, retry_after, _ = await take(redis, rate, burst=2)
        after = await redis_now(redis)
        if after - taken_at < (1 - tokens) / rate:
            assert allowed == 0
            assert (1 - tokens) / rate - (after - taken_at) - 1e-6 <= retry_after
            assert retry_after <= (1 - tokens) / rate - (before - taken_at) + 0.001 + 1e-6


async def test_long_idle_never_refills_above_the_burst(redis: Redis) -> None:
    for _ in range(3):
        await take(redis, rate=20.0, burst=3)
    await asyncio.sleep(0.5)  # ten tokens' worth for a bucket of three
    allowed, remaining, _, _ = await take(redis, rate=20.0, burst=3)
    assert (allowed, remaining) == (1, 2)
    assert (await stored(redis))[0] == 2.0


async def test_lowering_the_burst_takes_effect_at_once(redis: Redis) -> None:
    await take(redis, rate=0.001, burst=10)
    await take(redis, rate=0.001, burst=10)  # eight left under the old burst
    results = [await take(redis, rate=0.001, burst=3) for _ in range(4)]
    assert [r[:2] for r in results] == [(1, 2), (1, 1), (1, 0), (0, 0)]
    assert results[0][3] == 3


async def test_raising_the_burst_grants_nothing_at_once(redis: Redis) -> None:
    await take(redis, rate=0.001, burst=3)  # two left
    results = [await take(redis, rate=0.001, burst=10) for _ in range(3)]
    assert [r[:2] for r in results] == [(1, 1), (1, 0), (0, 0)]
    assert results[2][3] == 10


async def test_raised_burst_fills_up_to_the_new_size_over_time(redis: Redis) -> None:
    for _ in range(3):
        await take(redis, rate=50.0, burst=3)
    await asyncio.sleep(0.2)  # ten tokens' worth
    allowed, remaining, _, limit = await take(redis, rate=50.0, burst=5)
    assert (allowed, remaining, limit) == (1, 4, 5)


async def test_cost_takes_several_tokens_and_rejections_change_nothing(redis: Redis) -> None:
    assert (await take(redis, rate=0.001, burst=5, cost=3))[:2] == (1, 2)
    state = await redis.hgetall(KEY)
    allowed, remaining, retry_after, _ = await take(redis, rate=0.001, burst=5, cost=3)
    assert (allowed, remaining) == (0, 2)
    assert 999.0 < retry_after <= 1000.0  # one more token at 0.001/s
    assert await redis.hgetall(KEY) == state
    assert (await take(redis, rate=0.001, burst=5, cost=2))[:2] == (1, 0)


async def test_cost_above_the_burst_is_never_possible(redis: Redis) -> None:
    assert await take(redis, rate=10.0, burst=2, cost=3) == (0, 2, -1.0, 2)
    limiter = RateLimiter(redis)
    with pytest.raises(ValueError, match="cost"):
        await limiter.check("alice", "send", RatePolicy(rate=10, per_seconds=1, burst=2), cost=3)


async def test_key_expires_once_the_bucket_would_be_full(redis: Redis) -> None:
    await take(redis, rate=1.0, burst=5)  # 4 left: full again in 1 s, TTL 1 + 1
    assert 1 <= await redis.ttl(KEY) <= 2
    for _ in range(4):
        await take(redis, rate=1.0, burst=5)  # empty: full again in 5 s, TTL 5 + 1
    assert 5 <= await redis.ttl(KEY) <= 6
    other = bucket_key("alice", "fast")
    await take(redis, rate=10.0, burst=1, key=other)  # full again in 0.1 s: TTL ceil(0.1) + 1 = 2
    assert 1 <= await redis.ttl(other) <= 2
    await asyncio.sleep(2.3)
    assert await redis.exists(other) == 0
    assert (await take(redis, rate=10.0, burst=1, key=other))[:2] == (1, 0)  # absent key reads as full


async def test_clock_reads_come_from_redis_and_replicate_as_effects(redis_server: RedisServer, redis: Redis) -> None:
    """Redis 7 replicates a script's writes, not the script: TIME before a write is allowed,
    and a replica stores exactly the values the primary computed."""
    replica_server = RedisServer().start()
    replica = Redis.from_url(replica_server.url)
    try:
        await replica.replicaof("127.0.0.1", redis_server.port)
        for _ in range(100):
            if (await replica.info("replication")).get("master_link_status") == "up":
                break
            await asyncio.sleep(0.05)
        await take(redis, rate=3.0, burst=4)
        await take(redis, rate=3.0, burst=4)
        expected = await redis.hgetall(KEY)
        for _ in range(100):
            if await replica.hgetall(KEY) == expected:
                break
            await asyncio.sleep(0.05)
        assert await replica.hgetall(KEY) == expected
        assert await replica.ttl(KEY) > 0
    finally:
        await replica.aclose()
        replica_server.close()


async def test_limiter_decision_matches_the_script(redis: Redis) -> None:
    limiter = RateLimiter(redis)
    policy = RatePolicy(rate=3, per_seconds=30, burst=3)
    decisions = [await limiter.check("bob", "send", policy) for _ in range(4)]
    assert [(d.allowed, d.remaining, d.limit) for d in decisions] == [
        (True, 2, 3), (True, 1, 3), (True, 0, 3), (False, 0, 3)
    ]
    assert decisions[0].retry_after == 0
    assert 9.0 < decisions[3].retry_after <= 10.0
    assert await redis.exists(bucket_key("bob", "send")) == 1
    assert (await limiter.check("bob", "history", policy)).remaining == 2  # one bucket per API
