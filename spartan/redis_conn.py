"""Redis clients for the services: one bounded blocking pool per process, or a Redis Cluster client.

redis-py's default asyncio pool raises `MaxConnectionsError` past its size under
concurrency; a `BlockingConnectionPool` makes callers wait for a free connection
instead, so a burst of RPCs queues rather than fails. Connection errors surface as
`redis.exceptions.ConnectionError`/`TimeoutError`, which handlers map to UNAVAILABLE.

A Redis Cluster is named by a `redis+cluster://host:port[,host:port…]` URL (any reachable
node is enough to find the others). Every key the services build carries its owner's
hash tag so each script and transaction touches one slot, and every channel is a
sharded channel in the slot of the script that publishes on it
(tests/integration/test_one_slot_per_call.py): the stores take either client, and
their tests run on both.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

from spartan.config import REDIS_CLUSTER_SCHEME, RedisConfig

# A cluster node that died takes its address with it: a connect there is not refused, it hangs
# (measured in compose: a SYN to a killed container's address waits out any timeout). The
# cluster client tries the node again on each retry until the slot map names its replica, so
# each try must give up quickly; a connect on a LAN takes milliseconds.
CLUSTER_CONNECT_TIMEOUT_SECONDS = 1.0


def connect(settings: RedisConfig, url: str | None = None) -> Redis:
    """A client on a bounded pool, or of a Redis Cluster for a `redis+cluster://` URL; `url` overrides
    `settings.url`. Typed as `Redis`: the commands and scripts the stores use exist on both clients."""
    url = url or settings.url
    if url.startswith(REDIS_CLUSTER_SCHEME):
        return cast(Redis, _cluster_client(settings, url))
    return Redis(connection_pool=BlockingConnectionPool.from_url(url, **_pool_options(settings)))


def _pool_options(settings: RedisConfig) -> dict[str, object]:
    return {
        "max_connections": settings.pool_size,
        "timeout": settings.timeout_seconds,
        "socket_timeout": settings.timeout_seconds,
        "socket_connect_timeout": settings.timeout_seconds,
        "health_check_interval": 15,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=2),
        "protocol": 2,  # RESP3's push handler formats a debug string for every pub/sub message
    }


class BoundedRedisCluster(RedisCluster):
    """A cluster client whose callers wait for a free connection instead of failing.

    redis-py's cluster client raises `MaxConnectionsError` when more commands are in
    flight to one node than its pool holds (it has no blocking pool), which a burst of
    sends turns into failed calls. Here at most `pool_size` commands and pipelines are in
    flight at once, all nodes together, so no node's pool is ever exceeded: a burst queues.
    """

    def __init__(self, *args: Any, pool_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "max_connections": pool_size})
        self._in_flight = asyncio.Semaphore(pool_size)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._in_flight:
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def bounded(*args: Any, **kwargs: Any) -> Any:
            async with self._in_flight:
                return await execute(*args, **kwargs)

        pipe.execute = bounded  # type: ignore[method-assign]
        return pipe


def _cluster_client(settings: RedisConfig, url: str) -> RedisCluster:
    nodes = []
    for address in urlsplit(url).netloc.split(","):
        host, _, port = address.rpartition(":")
        nodes.append(ClusterNode(host or "127.0.0.1", int(port or 6379)))
    return BoundedRedisCluster(
        startup_nodes=nodes,
        pool_size=settings.pool_size,
        socket_timeout=settings.timeout_seconds,
        socket_connect_timeout=min(settings.timeout_seconds, CLUSTER_CONNECT_TIMEOUT_SECONDS),
        protocol=2,  # as `connect`
    )


def is_cluster(redis: Redis | RedisCluster) -> bool:
    return isinstance(redis, RedisCluster)


async def connect_cluster(settings: RedisConfig, url: str) -> RedisCluster:
    """A Redis Cluster client whose slot map is read before it is handed out.

    redis-py reads the map on the first command; commands that arrive together on a new
    client then race that read and fail on half-made connections, so services read it
    once before anything else (`cli_common.wait_for_redis`), and so does this.
    """
    client = _cluster_client(settings, url)
    await client.initialize()
    return client


def node_client(cluster: RedisCluster, host: str, port: int) -> Redis:
    """A plain client of one cluster node, with the cluster client's timeouts (for its pub/sub)."""
    options = cluster.get_default_node().connection_kwargs if cluster.get_default_node() else {}
    timeout = options.get("socket_timeout", 5.0)
    connect = options.get("socket_connect_timeout", CLUSTER_CONNECT_TIMEOUT_SECONDS)
    return Redis(host=host, port=port, socket_timeout=timeout, socket_connect_timeout=connect, protocol=2)


def without_retries(redis: Redis) -> Redis:
    """A client on its own pool, like `redis`'s, whose connections never retry or reconnect by themselves.

    For pub/sub: redis-py retries a failed read by reconnecting and resubscribing on its
    own, so a short Redis restart would pass unnoticed while messages published before
    the resubscribe reach nobody. The owner must see every drop to report the gap.
    """
    pool = redis.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0), "retry_on_error": []}
    return Redis(connection_pool=ConnectionPool(connection_class=pool.connection_class, max_connections=2, **kwargs))


def text(value: bytes | str) -> str:
    """A reply as text: the clients return bytes (no decode_responses, so payloads stay bytes)."""
    return value.decode() if isinstance(value, bytes) else value
