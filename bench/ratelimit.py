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
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from spartan.config import RedisConfig
from spartan.ratelimit import RateLimiter, RatePolicy, rate
from spartan.redis_conn import connect
from spartan.v1 import pb, rpc

ALWAYS_ALLOWS = RatePolicy(rate=1e9, per_seconds=1, burst=1_000_000_000)
ALWAYS_REJECTS = RatePolicy(rate=1, per_seconds=86400, burst=1)


class PrivateRedis:
    """A throwaway redis-server on a free loopback port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.directory = Path(tempfile.mkdtemp(prefix="spartan-bench-redis-"))
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.close()
        raise SystemExit("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


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
    cuts = statistics.quantiles(latencies, n=100)
    return Row(name, concurrency, len(latencies), len(latencies) / elapsed, cuts[49] * 1e6, cuts[98] * 1e6)


class BenchServicer(rpc.SpartanServicer):
    def __init__(self, limiter: RateLimiter) -> None:
        self.rate_limiter = limiter
        self.rate_policies = {"*": ALWAYS_ALLOWS}

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
    header = f"{'operation':<28} {'tasks':>5} {'ops':>6} {'ops/s':>9} {'p50 µs':>8} {'p99 µs':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row.name:<28} {row.concurrency:>5} {row.operations:>6} {row.per_second:>9.0f} "
              f"{row.p50_us:>8.0f} {row.p99_us:>8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=5000, help="limiter checks per row")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent tasks for the parallel rows")
    parser.add_argument("--calls", type=int, default=3000, help="gRPC calls per row")
    args = parser.parse_args()
    print_table(asyncio.run(run(args.checks, args.concurrency, args.calls)))


if __name__ == "__main__":
    main()
