"""Does `HistoryStore.read_cached` pay? Requests/s and latency of history reads with and without it.

    python3 -m bench.history_read [--requests 2000] [--concurrency 16] [--rounds 3]

Starts its own redis-server on a free loopback port (never the machine's shared one),
fills conversations with messages, then runs the same bounded read workload through
`read` (one Lua call that transfers the log, parsed in Python) and `read_cached`
(a small "touch" Lua call, then the in-process LRU; a miss adds the full read).
Scenarios vary the history size and how often the conversation changes between reads
(appends make the next read of that conversation miss). Prints one table; it only
reports numbers, it asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis

from bench.stack import PrivateRedis
from bench.summary import format_table, percentile
from spartan import naming
from spartan.history_store import HistoryStore
from spartan.v1 import pb


@dataclass(frozen=True)
class Scenario:
    name: str
    messages: int       # messages held per conversation
    body_bytes: int     # size of each message body (ciphertext in the product)
    conversations: int  # conversations read at random
    append_ratio: float  # share of operations that are appends (they invalidate)
    requests_scale: float = 1.0  # big histories get fewer requests so a run stays short


SCENARIOS = [
    Scenario("20 msgs x 64 B, read-only", 20, 64, 50, 0.0),
    Scenario("100 msgs x 256 B, read-only", 100, 256, 50, 0.0),
    Scenario("100 msgs x 256 B, 10% appends", 100, 256, 50, 0.10),
    Scenario("100 msgs x 256 B, 50% appends", 100, 256, 50, 0.50),
    Scenario("1000 msgs x 256 B, read-only", 1000, 256, 20, 0.0, requests_scale=0.25),
]


@dataclass
class Result:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    hit_ratio: float | None


async def fill(store: HistoryStore, scenario: Scenario) -> list[str]:
    conversations = [naming.group_conversation(f"bench{i}") for i in range(scenario.conversations)]
    body = bytes(scenario.body_bytes)
    for conversation in conversations:
        await asyncio.gather(*(
            store.append(pb.Message(id=f"{conversation}-{n}", kind=pb.CHAT, sender="alice",
                                    conversation=conversation, body=body))
            for n in range(scenario.messages)
        ))
    return conversations


async def run_workload(store: HistoryStore, scenario: Scenario, conversations: list[str],
                       read: Callable[[str], Awaitable[pb.HistoryResponse]],
                       requests: int, concurrency: int, seed: int) -> Result:
    rng = random.Random(seed)
    plan = [(rng.random() < scenario.append_ratio, rng.choice(conversations)) for _ in range(requests)]
    body = bytes(scenario.body_bytes)
    latencies: list[float] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(plan):
            is_append, conversation = plan[next_index]
            next_index += 1
            if is_append:
                await store.append(pb.Message(id="b", kind=pb.CHAT, sender="bob",
                                              conversation=conversation, body=body))
                continue
            began = time.perf_counter()
            response = await read(conversation)
            latencies.append(time.perf_counter() - began)
            assert len(response.messages) == scenario.messages

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Result(
        requests_per_second=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        hit_ratio=None,
    )


async def measure(url: str, scenario: Scenario, requests: int, concurrency: int,
                  rounds: int) -> tuple[Result, Result]:
    """Median (by requests/s) of `rounds` alternating runs of `read` and `read_cached`."""
    redis = Redis(connection_pool=BlockingConnectionPool.from_url(url, max_connections=concurrency + 4))
    requests = max(100, int(requests * scenario.requests_scale))
    try:
        await redis.flushall()
        store = HistoryStore(redis, per_conversation=scenario.messages, max_conversations=10_000,
                             max_read_limit=max(scenario.messages, 1000), read_cache_size=4096)
        conversations = await fill(store, scenario)
        await run_workload(store, scenario, conversations, store.read, 200, concurrency, seed=0)  # warm up
        plain_runs: list[Result] = []
        cached_runs: list[Result] = []
        for round_number in range(rounds):
            seed = round_number + 1
            plain_runs.append(await run_workload(store, scenario, conversations, store.read, requests,
                                                 concurrency, seed))
            info_before = store._read_at.cache_info()
            cached = await run_workload(store, scenario, conversations, store.read_cached, requests,
                                        concurrency, seed)
            info_after = store._read_at.cache_info()
            hits = info_after.hits - info_before.hits
            lookups = hits + info_after.misses - info_before.misses
            cached.hit_ratio = hits / lookups if lookups else 0.0
            cached_runs.append(cached)
        return median_run(plain_runs), median_run(cached_runs)
    finally:
        await redis.aclose()


def median_run(runs: list[Result]) -> Result:
    return sorted(runs, key=lambda run: run.requests_per_second)[len(runs) // 2]


def print_table(rows: list[tuple[Scenario, Result, Result]], requests: int, concurrency: int,
                rounds: int) -> None:
    print(f"history reads: {requests} operations per run (x0.25 for 1000 msgs), {concurrency} concurrent tasks, "
          f"one process, redis-server on loopback; median of {rounds} alternating runs")
    header = ["scenario", "read req/s", "p50 ms", "p99 ms", "cached req/s", "p50 ms", "p99 ms", "hits", "speedup"]
    print(format_table(header, [
        [scenario.name, f"{plain.requests_per_second:.0f}", f"{plain.p50_ms:.2f}", f"{plain.p99_ms:.2f}",
         f"{cached.requests_per_second:.0f}", f"{cached.p50_ms:.2f}", f"{cached.p99_ms:.2f}",
         f"{(cached.hit_ratio or 0) * 100:.0f}%", f"{cached.requests_per_second / plain.requests_per_second:.2f}x"]
        for scenario, plain, cached in rows]))


async def main_async(requests: int, concurrency: int, rounds: int) -> None:
    with PrivateRedis() as server:
        rows = []
        for scenario in SCENARIOS:
            plain, cached = await measure(server.url, scenario, requests, concurrency, rounds)
            rows.append((scenario, plain, cached))
        print_table(rows, requests, concurrency, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="operations per run (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per scenario (default 3)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent tasks (default 16)")
    arguments = parser.parse_args()
    asyncio.run(main_async(arguments.requests, arguments.concurrency, arguments.rounds))


if __name__ == "__main__":
    main()
