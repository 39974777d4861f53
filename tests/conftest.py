"""Shared fixtures: private Redis servers and a connected async client.

A test marked `on_cluster` (or in a module that says `pytestmark = pytest.mark.on_cluster`)
runs twice: its `redis` is a client of a single redis-server, then of a private Redis
Cluster of 3 primaries and 3 replicas (one per session, emptied before each test), and
the stacks its `stack_factory` builds run on a single redis-server, then on a cluster
of their own (which the test may break). A test that also asks for `redis_server` kills
or restarts that one server, so it runs once.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as RedisClusterClient

from spartan.config import RedisConfig
from spartan.redis_conn import connect_cluster

from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "on_cluster: run with `redis` on a single Redis, then on a Redis Cluster")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    uses_redis = "redis" in metafunc.fixturenames or "stack_factory" in metafunc.fixturenames
    if not uses_redis or getattr(metafunc.module, "PARAMETRIZES_BACKBONE", False):
        return
    clustered = metafunc.definition.get_closest_marker("on_cluster") and "redis_server" not in metafunc.fixturenames
    metafunc.parametrize("backbone", ["single", "cluster"] if clustered else ["single"], indirect=True)


@pytest.fixture
def backbone(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "single")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster().start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def redis(request: pytest.FixtureRequest, backbone: str) -> AsyncIterator[Redis | RedisClusterClient]:
    if backbone == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        client = await connect_cluster(RedisConfig(), cluster.url)
    else:
        client = Redis.from_url(request.getfixturevalue("redis_server").url)
    try:
        yield client  # both clients take the same commands and scripts
    finally:
        await client.aclose()


@pytest.fixture
def stack_factory(tmp_path, backbone):  # type: ignore[no-untyped-def]
    """Build real multi-process stacks: `stack_factory(gateways=2, settings={...})`."""
    from tests.support.stack import Stack

    made: list[tuple[Stack, RedisServer | RedisCluster]] = []

    def make(gateways: int = 2, settings: dict[str, str] | None = None, appendonly: bool = False,
             clock_offsets: dict[str, str] | None = None, replicas: int = 1) -> Stack:
        redis_server = RedisCluster().start() if backbone == "cluster" else RedisServer(appendonly=appendonly).start()
        stack = Stack(tmp_path / f"stack{len(made)}", redis_server, gateways=gateways,  # type: ignore[arg-type]
                      replicas=replicas,
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
