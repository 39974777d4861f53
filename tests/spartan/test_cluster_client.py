"""The services' Redis Cluster client on a private cluster: a burst of calls larger than the pool waits for
connections instead of failing (redis-py's cluster client fails them), for commands and pipelines alike."""
from __future__ import annotations

import asyncio

from spartan.config import RedisConfig
from spartan.redis_conn import connect, connect_cluster
from tests.support.redis_cluster import RedisCluster

POOL = 4  # connections per node; the burst is fifty times that


async def test_a_burst_larger_than_the_pool_waits_for_connections(redis_cluster: RedisCluster) -> None:
    redis_cluster.flush()
    client = await connect_cluster(RedisConfig(pool_size=POOL), redis_cluster.url)
    try:
        counts = await asyncio.gather(*(client.incr(f"sp:test:{{{i % 7}}}") for i in range(50 * POOL)))
        assert sorted(counts)[-1] >= 50 * POOL // 7 and len(counts) == 50 * POOL

        async def piped(i: int) -> list[int]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.incr(f"sp:test:{{{i % 7}}}")
                pipe.incr(f"sp:test:{{{i % 5}}}")
                return await pipe.execute()

        assert len(await asyncio.gather(*(piped(i) for i in range(50 * POOL)))) == 50 * POOL
    finally:
        await client.aclose()


async def test_the_url_names_every_node_and_a_dead_one_is_passed_over(redis_cluster: RedisCluster) -> None:
    url = redis_cluster.url.replace("redis+cluster://", "redis+cluster://127.0.0.1:1,")  # nothing listens on 1
    client = connect(RedisConfig(), url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()
