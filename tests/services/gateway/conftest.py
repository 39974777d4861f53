"""Fixtures of the gateway's unit tests: the client a gateway builds and a started pub/sub hub, on the
test's private redis-server."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.gateway.hub import PubSubHub
from spartan import redis_conn
from spartan.config import RedisConfig
from tests.support.redis_server import RedisServer


@pytest.fixture
async def gateway_redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """The client a gateway builds (bounded pool, its retry policy), on the private server."""
    client = redis_conn.connect(RedisConfig(url=redis_server.url))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def hub(gateway_redis: Redis) -> AsyncIterator[PubSubHub]:
    hub = PubSubHub(gateway_redis)
    hub.start()
    await asyncio.wait_for(hub.connected.wait(), 15)
    try:
        yield hub
    finally:
        await hub.close()
