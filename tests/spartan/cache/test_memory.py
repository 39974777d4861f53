"""MemoryBackend and the @lru_cache decorator in one process: order, capacity, TTL, sharing, metrics."""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from spartan.cache import MISSING, CacheInfo, MemoryBackend, lru_cache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counter(metric: str, cache: str) -> float:
    return REGISTRY.get_sample_value(metric, {"cache": cache}) or 0.0


async def test_get_makes_an_entry_most_recently_used_and_capacity_evicts_the_least() -> None:
    backend = MemoryBackend(maxsize=3)
    for key in "abc":
        assert await backend.set(key, key.upper()) == 0
    assert await backend.get("a") == "A"
    assert await backend.set("d", "D") == 1  # b is the least recently used
    assert backend.keys() == ["c", "a", "d"]
    assert await backend.get("b") is MISSING
    assert await backend.set("c", "C2") == 0  # overwriting evicts nothing and refreshes c
    assert backend.keys() == ["a", "d", "c"]
    assert await backend.get("c") == "C2"


async def test_none_is_a_value_and_missing_is_falsy() -> None:
    backend = MemoryBackend(maxsize=2)
    await backend.set("k", None)
    assert await backend.get("k") is None
    assert await backend.get("other") is MISSING
    assert not MISSING


async def test_delete_and_clear() -> None:
    backend = MemoryBackend(maxsize=4)
    await backend.set("a", 1)
    await backend.set("b", 2)
    assert await backend.delete("a") is True
    assert await backend.delete("a") is False
    assert backend.keys() == ["b"]
    await backend.clear()
    assert len(backend) == 0


async def test_ttl_expires_entries_on_the_injected_clock() -> None:
    clock = FakeClock()
    backend = MemoryBackend(maxsize=4, ttl=10, clock=clock)
    await backend.set("a", 1)
    clock.now += 9.999
    assert await backend.get("a") == 1  # reading does not extend the lifetime
    clock.now += 0.001
    assert await backend.get("a") is MISSING
    assert len(backend) == 0
    await backend.set("a", 2)  # setting again starts a new lifetime
    clock.now += 5
    assert await backend.get("a") == 2


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        MemoryBackend(maxsize=0)
    with pytest.raises(ValueError):
        MemoryBackend(ttl=0)


async def test_decorator_caches_and_invalidates_one_entry() -> None:
    calls: list[int] = []

    @lru_cache(maxsize=2, name="test_invalidate")
    async def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert [await square(2), await square(2), await square(3)] == [4, 4, 9]
    assert calls == [2, 3]
    await square.invalidate(2)
    assert await square(2) == 4
    assert await square(3) == 9
    assert calls == [2, 3, 2]
    assert square.cache_info() == CacheInfo(hits=2, misses=3, evictions=0, maxsize=2, currsize=2)
    await square(4)  # evicts 2 (3 was used more recently)
    assert square.cache_info().evictions == 1
    await square.cache_clear()
    assert square.cache_info().currsize == 0


async def test_ttl_through_the_decorator() -> None:
    clock = FakeClock()
    calls = 0

    @lru_cache(backend=MemoryBackend(maxsize=8, ttl=1, clock=clock), name="test_ttl")
    async def value() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert [await value(), await value()] == [1, 1]
    clock.now += 1
    assert await value() == 2


async def test_concurrent_callers_of_a_missing_key_share_one_computation() -> None:
    started: dict[int, int] = {}
    release = asyncio.Event()

    @lru_cache(maxsize=16, name="test_single_flight")
    async def slow(x: int) -> list[int]:
        started[x] = started.get(x, 0) + 1
        await release.wait()
        return [x]

    callers = [asyncio.create_task(slow(i % 4)) for i in range(40)]
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*callers)
    assert started == {0: 1, 1: 1, 2: 1, 3: 1}
    assert results == [[i % 4] for i in range(40)]
    assert slow.cache_info().misses == 40 and slow.cache_info().currsize == 4
    assert await slow(1) == [1]
    assert slow.cache_info().hits == 1


async def test_joiners_receive_the_decoded_value_and_the_starter_its_own() -> None:
    release = asyncio.Event()

    @lru_cache(name="test_codec_joiners", encode=lambda v: tuple(v), decode=lambda e: list(e))
    async def compute() -> list[int]:
        await release.wait()
        return [1, 2]

    starter = asyncio.create_task(compute())
    await asyncio.sleep(0)
    joiner = asyncio.create_task(compute())
    await asyncio.sleep(0)
    release.set()
    first, second = await asyncio.gather(starter, joiner)
    assert first == second == [1, 2]
    assert first is not second
    second.append(3)
    assert await compute() == [1, 2]


async def test_failures_are_shared_but_not_cached() -> None:
    attempts = 0
    release = asyncio.Event()

    @lru_cache(name="test_failures")
    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        await release.wait()
        if attempts == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    callers = [asyncio.create_task(flaky()) for _ in range(5)]
    await asyncio.sleep(0.01)
    release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert attempts == 1
    assert await flaky() == "ok"
    assert attempts == 2


async def test_a_cancelled_caller_does_not_cancel_the_shared_computation() -> None:
    release = asyncio.Event()
    runs = 0

    @lru_cache(name="test_cancel")
    async def compute() -> str:
        nonlocal runs
        runs += 1
        await release.wait()
        return "done"

    first = asyncio.create_task(compute())
    await asyncio.sleep(0)
    second = asyncio.create_task(compute())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await second == "done"
    assert first.cancelled()
    assert await compute() == "done"
    assert runs == 1


async def test_invalidate_during_a_computation_keeps_its_result_out_of_the_cache() -> None:
    release = asyncio.Event()
    version = 1

    @lru_cache(name="test_invalidate_race")
    async def read() -> int:
        seen = version
        await release.wait()
        return seen

    pending = asyncio.create_task(read())
    await asyncio.sleep(0.01)  # the computation has read version 1 and waits
    version = 2
    await read.invalidate()  # the value being computed is already outdated
    release.set()
    assert await pending == 1
    assert await read() == 2


async def test_methods_are_cached_per_instance_arguments() -> None:
    class Directory:
        def __init__(self, prefix: str) -> None:
            self.prefix = prefix
            self.lookups = 0

        def __repr__(self) -> str:
            return f"Directory({self.prefix!r})"

        @lru_cache(maxsize=8, name="test_methods")
        async def lookup(self, user: str) -> str:
            self.lookups += 1
            return self.prefix + user

    one, two = Directory("1:"), Directory("2:")
    assert [await one.lookup("a"), await two.lookup("a"), await one.lookup("a")] == ["1:a", "2:a", "1:a"]
    assert (one.lookups, two.lookups) == (1, 1)
    await one.lookup.invalidate("a")
    assert await one.lookup("a") == "1:a"
    assert await two.lookup("a") == "2:a"
    assert (one.lookups, two.lookups) == (2, 1)
    assert Directory.lookup.cache_info().currsize == 2


def test_plain_functions_are_supported() -> None:
    calls = 0

    @lru_cache(maxsize=2, name="test_sync")
    def double(x: int) -> int:
        nonlocal calls
        calls += 1
        return 2 * x

    assert [double(1), double(1), double(2), double(3), double(1)] == [2, 2, 4, 6, 2]
    assert calls == 4  # 1 was evicted by 3
    double.invalidate(3)
    double.cache_clear()
    assert double.cache_info().currsize == 0
    assert double.__name__ == "double"


async def test_custom_key_function() -> None:
    @lru_cache(name="test_key", key=lambda user, *, verbose=False: user.lower())
    async def profile(user: str, *, verbose: bool = False) -> str:
        return f"{user}/{verbose}"

    assert await profile("Alice") == "Alice/False"
    assert await profile("ALICE", verbose=True) == "Alice/False"


async def test_metrics_are_registered_once_and_labelled_by_cache_name() -> None:
    hits_before = counter("spartan_cache_hits_total", "test_metrics")
    decorated = []
    for _ in range(3):  # creating decorators again must not register the metrics again
        @lru_cache(maxsize=1, name="test_metrics")
        async def identity(x: int) -> int:
            return x

        decorated.append(identity)
    identity = decorated[-1]
    misses_before = counter("spartan_cache_misses_total", "test_metrics")
    evictions_before = counter("spartan_cache_evictions_total", "test_metrics")
    await identity(1)
    await identity(1)
    await identity(2)
    assert counter("spartan_cache_hits_total", "test_metrics") == hits_before + 1
    assert counter("spartan_cache_misses_total", "test_metrics") == misses_before + 2
    assert counter("spartan_cache_evictions_total", "test_metrics") == evictions_before + 1


async def test_concurrent_backend_use_keeps_capacity_and_consistency() -> None:
    backend = MemoryBackend(maxsize=10)

    async def worker(n: int) -> None:
        for i in range(200):
            key = f"k{(n * 7 + i) % 25}"
            await backend.set(key, key)
            value = await backend.get(key)
            assert value in (key, MISSING)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(n) for n in range(20)))
    assert len(backend) == 10
    for key in backend.keys():
        assert await backend.get(key) == key
