"""The limiter against a Redis that misbehaves: a clock that moved back, a read-only replica, a data set still
loading, a reply that never came.

docs/RATE_LIMITING.md promises that a Redis clock moving back refills nothing until it
moves forward again, and that a read-only replica makes the check UNAVAILABLE (never
"allow everything"). Both run against a real redis-server.
"""
from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError, ConnectionError

from spartan.config import RedisConfig
from spartan.errors import Unavailable
from spartan.ratelimit.bucket import RateLimiter, bucket_key
from spartan.ratelimit.policy import RatePolicy
from spartan.redis_conn import connect
from tests.support.ports import free_port
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


async def test_a_redis_still_loading_its_data_answers_unavailable(tmp_path: Path) -> None:
    """A Redis restarted with a data set to load answers LOADING for a while: the check is UNAVAILABLE."""
    source = RedisServer(directory=tmp_path).start()
    filler = Redis.from_url(source.url)
    for start in range(0, 100_000, 10_000):  # enough keys that loading, slowed below, lasts seconds
        await filler.mset({f"k{n}": "v" for n in range(start, start + 10_000)})
    await filler.save()
    await filler.aclose()
    source.kill()
    port = free_port()
    # key-load-delay (µs per key) makes the load last about 5 s; small event intervals let it answer meanwhile.
    loading = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "",
         "--key-load-delay", "50", "--loading-process-events-interval-bytes", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    redis = connect(RedisConfig(timeout_seconds=1.0), f"redis://127.0.0.1:{port}/0")
    try:
        for _ in range(100):
            try:
                await redis.ping()
                pytest.fail("the data set loaded before the check could run; the test needs a slower load")
            except BusyLoadingError:
                break
            except ConnectionError:
                await asyncio.sleep(0.05)  # not listening yet
        limiter = RateLimiter(redis)
        for _ in range(2):
            with pytest.raises(Unavailable, match="rate limiter unavailable: BusyLoadingError"):
                await limiter.check("alice", "send", POLICY)
        assert (await redis.info("persistence"))["loading"] == 1, "the refusals came while still loading"
    finally:
        await redis.aclose()
        loading.kill()
        loading.wait()


async def test_a_lost_reply_can_cost_a_call_never_grant_one(redis_server: RedisServer) -> None:
    """A check whose reply never came (Redis stalled past the timeout) is UNAVAILABLE; when Redis wakes up
    the command may still run and take its token, but no call was let through for it."""
    redis = connect(RedisConfig(timeout_seconds=0.3), redis_server.url)
    limiter = RateLimiter(redis)
    key = bucket_key("alice", "send")
    try:
        assert (await limiter.check("alice", "send", POLICY)).allowed  # the bucket exists, 2 tokens left
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(Unavailable, match="rate limiter unavailable"):
                await limiter.check("alice", "send", POLICY)
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.1)  # the stalled command (and redis-py's retries of it) now run
        tokens = float(await redis.hget(key, "tokens") or 0)
        # Refill since then is at most rate x elapsed; the stalled check took at least its token back out.
        assert tokens <= POLICY.burst - 1, tokens
        decided = await limiter.check("alice", "send", POLICY)
        assert decided.remaining <= POLICY.burst - 1  # never more than before: nothing was granted
    finally:
        await redis.aclose()
