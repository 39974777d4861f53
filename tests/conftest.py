"""Shared fixtures: private Redis servers and a connected async client."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from tests.support.redis_server import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def stack_factory(tmp_path):  # type: ignore[no-untyped-def]
    """Build real multi-process stacks: `stack_factory(gateways=2, settings={...})`."""
    from tests.support.stack import Stack

    made: list[tuple[Stack, RedisServer]] = []

    def make(gateways: int = 2, settings: dict[str, str] | None = None, appendonly: bool = False,
             clock_offsets: dict[str, str] | None = None, replicas: int = 1) -> Stack:
        redis_server = RedisServer(appendonly=appendonly).start()
        stack = Stack(tmp_path / f"stack{len(made)}", redis_server, gateways=gateways, replicas=replicas,
                      settings=settings, clock_offsets=clock_offsets)
        made.append((stack, redis_server))
        return stack.start()

    yield make
    for stack, redis_server in made:
        stack.stop()
        redis_server.close()


@pytest.fixture
async def client_factory(tmp_path):  # type: ignore[no-untyped-def]
    """Headless clients with keys under the test's folder; closed at the end."""
    from spartan.client.headless import HeadlessClient

    made: list[HeadlessClient] = []

    async def make(user: str, addresses: list[str], **kwargs) -> HeadlessClient:  # type: ignore[no-untyped-def]
        client = HeadlessClient(user, addresses, str(tmp_path / "keys"), **kwargs)
        made.append(client)
        return await client.start()

    yield make
    for client in made:
        await client.close()


@pytest.fixture
def keys(tmp_path):  # type: ignore[no-untyped-def]
    """The folder `client_factory` keeps keys in (for a second device's copy or the CLI)."""
    return tmp_path / "keys"
