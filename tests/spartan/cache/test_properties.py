"""Property tests: both cache backends behave like a plain reference LRU over random operations."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from spartan.cache import MISSING, MemoryBackend, RedisBackend, lru_cache
from tests.support.redis_server import RedisServer


class ReferenceLRU:
    """The obvious model: a list of keys from least to most recently used, and their values."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.order: list[str] = []
        self.values: dict[str, bytes] = {}

    def get(self, key: str) -> Any:
        if key not in self.values:
            return MISSING
        self.order.remove(key)
        self.order.append(key)
        return self.values[key]

    def set(self, key: str, value: bytes) -> int:
        if key in self.values:
            self.order.remove(key)
        self.order.append(key)
        self.values[key] = value
        evicted = 0
        while len(self.order) > self.maxsize:
            del self.values[self.order.pop(0)]
            evicted += 1
        return evicted

    def delete(self, key: str) -> bool:
        if key not in self.values:
            return False
        self.order.remove(key)
        del self.values[key]
        return True


KEYS = st.sampled_from(["a", "b", "c", "d", "e", "f"])
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("get"), KEYS),
        st.tuples(st.just("set"), KEYS, st.binary(max_size=6)),
        st.tuples(st.just("delete"), KEYS),
    ),
    max_size=40,
)


async def run_against_model(backend: Any, maxsize: int, operations: list[tuple[Any, ...]]) -> list[str]:
    model = ReferenceLRU(maxsize)
    for operation in operations:
        name, *arguments = operation
        expected = getattr(model, name)(*arguments)
        actual = await getattr(backend, name)(*arguments)
        assert actual == expected, f"{operation} answered {actual!r}, the model {expected!r}"
    return model.order


@settings(max_examples=60, deadline=None)
@given(maxsize=st.integers(min_value=1, max_value=5), operations=OPERATIONS)
def test_memory_backend_matches_the_reference(maxsize: int, operations: list[tuple[Any, ...]]) -> None:
    backend = MemoryBackend(maxsize=maxsize)
    order = asyncio.run(run_against_model(backend, maxsize, operations))
    assert backend.keys() == order


@pytest.fixture(scope="module")
def shared_redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


def test_redis_backend_matches_the_reference(shared_redis_server: RedisServer) -> None:
    @settings(max_examples=60, deadline=None)
    @given(maxsize=st.integers(min_value=1, max_value=5), operations=OPERATIONS)
    def check(maxsize: int, operations: list[tuple[Any, ...]]) -> None:
        async def scenario() -> None:
            client = Redis.from_url(shared_redis_server.url)
            try:
                backend = RedisBackend(client, name="property", maxsize=maxsize)
                await backend.clear()
                order = await run_against_model(backend, maxsize, operations)
                assert await backend.keys() == order
                assert await client.hlen(backend.values_key) == len(order)
            finally:
                await client.aclose()

        asyncio.run(scenario())

    check()


@settings(max_examples=60, deadline=None)
@given(
    maxsize=st.integers(min_value=1, max_value=4),
    calls=st.lists(st.tuples(st.sampled_from(["call", "invalidate"]), st.integers(0, 5)), max_size=30),
)
def test_decorator_computes_exactly_when_the_reference_misses(maxsize: int, calls: list[tuple[str, int]]) -> None:
    async def scenario() -> None:
        computed: list[int] = []

        @lru_cache(maxsize=maxsize, name="property_decorator")
        async def triple(x: int) -> int:
            computed.append(x)
            return 3 * x

        model = ReferenceLRU(maxsize)
        expected_computations: list[int] = []
        for action, x in calls:
            key = repr((x,))
            if action == "invalidate":
                await triple.invalidate(x)
                model.delete(key)
                continue
            assert await triple(x) == 3 * x
            if model.get(key) is MISSING:
                expected_computations.append(x)
                model.set(key, b"")
        assert computed == expected_computations

    asyncio.run(scenario())
