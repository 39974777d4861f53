"""Redis clients for the services: one bounded blocking pool per process.

redis-py's default asyncio pool raises `MaxConnectionsError` past its size under
concurrency; a `BlockingConnectionPool` makes callers wait for a free connection
instead, so a burst of RPCs queues rather than fails. Connection errors surface as
`redis.exceptions.ConnectionError`/`TimeoutError`, which handlers map to UNAVAILABLE.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

from spartan.config import RedisConfig


def connect(settings: RedisConfig, url: str | None = None) -> Redis:
    """A client on a bounded pool; `url` overrides `settings.url`."""
    pool = BlockingConnectionPool.from_url(
        url or settings.url,
        max_connections=settings.pool_size,
        timeout=settings.timeout_seconds,
        socket_timeout=settings.timeout_seconds,
        socket_connect_timeout=settings.timeout_seconds,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=2),
        protocol=2,  # RESP3's push handler formats a debug string for every pub/sub message
    )
    return Redis(connection_pool=pool)


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
