"""What does a rate-limit check cost? Checks/s and latency of `RateLimiter.check` and `@rate`.

    python3 -m bench.ratelimit [--checks 5000] [--concurrency 50] [--calls 3000]

Starts its own redis-server on a free loopback port (never the machine's shared one)
and measures, in one process:

- a Redis PING round trip (the floor any check pays),
- `RateLimiter.check` when it allows (script writes) and when it rejects (no write),
  sequentially and with `--concurrency` tasks sharing one bounded pool,
- a unary grpc.aio call on loopback with and without `@rate`, so the difference is
  what the decorator adds to a handler.

Prints one table; it only reports numbers, it asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from bench.stack import PrivateRedis
from bench.summary import format_table, percentile
from spartan.config import RedisConfig
from spartan.ratelimit import RateLimiter, RateLimits, RatePolicy, rate
from spartan.redis_conn import connect
from spartan.v1 import pb, rpc

ALWAYS_ALLOWS = RatePolicy(rate=1e9, per_seconds=1, burst=1_000_000_000)
ALWAYS_REJECTS = RatePolicy(rate=1, per_seconds=86400, burst=1)


@dataclass(frozen=True)
class Row:
    name: str
    concurrency: int
    operations: int
    per_second: float
    p50_us: float
    p99_us: float


async def measure(name: str, operation: Callable[[], Awaitable[object]], total: int, concurrency: int) -> Row:
    """Run `operation` `total` times from `concurrency` tasks; latency includes waiting for a connection."""
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await operation()
            latencies.append(time.perf_counter() - started)

    for _ in range(min(200, total // 10)):  # warm-up: script loaded, connections open
        await operation()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Row(name, concurrency, len(latencies), len(latencies) / elapsed, percentile(latencies, 0.50) * 1e6,
               percentile(latencies, 0.99) * 1e6)


class BenchServicer(rpc.SpartanServicer):
    def __init__(self, limiter: RateLimiter) -> None:
        self.limits = RateLimits(limiter, {"*": ALWAYS_ALLOWS})

    async def ListUsers(self, request: pb.ListUsersRequest, context: grpc.aio.ServicerContext) -> pb.ListUsersResponse:
        return pb.ListUsersResponse()

    @rate("send")
    async def SendMsg(self, request: pb.Message, context: grpc.aio.ServicerContext) -> pb.SendAck:
        return pb.SendAck(id=request.id)


async def run(checks: int, concurrency: int, calls: int) -> list[Row]:
    redis_server = PrivateRedis()
    redis = connect(RedisConfig(pool_size=64), redis_server.url)
    limiter = RateLimiter(redis)
    server = grpc.aio.server()
    rpc.add_SpartanServicer_to_server(BenchServicer(limiter), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = rpc.SpartanStub(channel)
    counter = 0

    async def allowed_check() -> object:
        nonlocal counter
        counter += 1
        return await limiter.check(f"user{counter % 1000}", "send", ALWAYS_ALLOWS)

    async def rejected_check() -> object:
        return await limiter.check("flooder", "send", ALWAYS_REJECTS)

    rows: list[Row] = []
    try:
        for tasks in (1, concurrency):
            rows.append(await measure("redis PING (floor)", redis.ping, checks, tasks))
            rows.append(await measure("check, allowed (writes)", allowed_check, checks, tasks))
            rows.append(await measure("check, rejected (no write)", rejected_check, checks, tasks))
        for tasks in (1, concurrency):
            rows.append(await measure("gRPC unary, no @rate", lambda: stub.ListUsers(pb.ListUsersRequest()),
                                      calls, tasks))
            rows.append(await measure("gRPC unary, @rate", lambda: stub.SendMsg(pb.Message(id="m")), calls, tasks))
    finally:
        await channel.close()
        await server.stop(None)
        await redis.aclose()
        redis_server.close()
    return rows


def print_table(rows: list[Row]) -> None:
    print(format_table(["operation", "tasks", "ops", "ops/s", "p50 µs", "p99 µs"], [
        [row.name, str(row.concurrency), str(row.operations), f"{row.per_second:.0f}", f"{row.p50_us:.0f}",
         f"{row.p99_us:.0f}"] for row in rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=5000, help="limiter checks per row")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent tasks for the parallel rows")
    parser.add_argument("--calls", type=int, default=3000, help="gRPC calls per row")
    args = parser.parse_args()
    print_table(asyncio.run(run(args.checks, args.concurrency, args.calls)))


if __name__ == "__main__":
    main()
