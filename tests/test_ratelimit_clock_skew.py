"""The limiter is exact across processes whose clocks disagree by minutes, and under concurrency.

Each check's arithmetic and clock live in one Lua script on Redis, so the bound
below must hold whatever the callers' clocks say. Several OS processes, each with
its process clock shifted by `faketime` (or, where that tool is missing, with
`time.time`/`time.monotonic` shifted inside the process), hammer one user's bucket
at the same time through `RateLimiter.check`.

The bound. Let W be the span of Redis time from the first process's start reading
(`TIME`, taken before its first check) to the last process's end reading (taken
after its last check). Every check the script evaluated fell inside W. The bucket
starts full (`burst` tokens) and refills at `rate` tokens per second, never above
`burst`, so

    allowed <= burst + rate * W                      (exact; no slack needed)

While the callers hammer without pause the bucket never sits full, so no refill is
lost, and when they stop it holds less than one token plus what accrued since the
last check. Refill also accrues in the small gaps between the start reading and the
first check and between the last check and the end reading, so

    allowed >= burst + rate * W - 1 - rate * GAP_SECONDS

where GAP_SECONDS generously covers those round trips and scheduling delays. Both
bounds are about counting, not speed: a slower machine makes fewer checks but the
same tokens.

Run as `python3 -m tests.test_ratelimit_clock_skew '<json>'` the module is the child
process that hammers and prints its counts as JSON.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from spartan.config import RedisConfig
from spartan.ratelimit import RateLimiter, RatePolicy
from spartan.redis_conn import connect
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
GAP_SECONDS = 0.25
CLOCK_OFFSETS_SECONDS = (-420.0, 0.0, 300.0)  # seven minutes behind, on time, five minutes ahead
POLICY = RatePolicy(rate=20, per_seconds=1, burst=10)


@dataclass(frozen=True)
class HammerResult:
    allowed: int
    checks: int
    start_us: int
    end_us: int


async def redis_time_us(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return seconds * 1_000_000 + micros


async def hammer(
    limiter: RateLimiter, user: str, api: str, policy: RatePolicy, seconds: float, tasks: int
) -> HammerResult:
    """`tasks` concurrent loops calling `check` for `seconds` of this process's clock."""
    allowed = 0
    checks = 0
    start_us = await redis_time_us(limiter.redis)
    deadline = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal allowed, checks
        while time.monotonic() < deadline:
            decision = await limiter.check(user, api, policy)
            checks += 1
            allowed += decision.allowed

    await asyncio.gather(*(loop() for _ in range(tasks)))
    end_us = await redis_time_us(limiter.redis)
    return HammerResult(allowed, checks, start_us, end_us)


def assert_within_bound(policy: RatePolicy, results: Sequence[HammerResult]) -> None:
    window = (max(r.end_us for r in results) - min(r.start_us for r in results)) / 1e6
    allowed = sum(r.allowed for r in results)
    ceiling = policy.burst + policy.tokens_per_second * window
    floor = ceiling - 1 - policy.tokens_per_second * GAP_SECONDS
    assert allowed <= ceiling + 1e-6, f"{allowed} allowed in {window:.3f}s, more than {ceiling:.2f}"
    assert allowed >= floor, f"{allowed} allowed in {window:.3f}s, fewer than {floor:.2f}"
    assert sum(r.checks for r in results) > allowed, "the callers never ran into the limit"


# --- child process -----------------------------------------------------------------


async def child_main(settings: dict[str, object]) -> None:
    redis = connect(RedisConfig(pool_size=64, timeout_seconds=5.0), str(settings["url"]))
    limiter = RateLimiter(redis)
    policy = RatePolicy(**settings["policy"])  # type: ignore[arg-type]
    await limiter.check("warm-up", "warm-up", policy)  # script loaded, connections open
    print(json.dumps({"ready": True, "clock": time.time()}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    result = await hammer(
        limiter, str(settings["user"]), str(settings["api"]), policy,
        float(settings["seconds"]), int(settings["tasks"]),  # type: ignore[arg-type]
    )
    print(json.dumps(result.__dict__), flush=True)
    await redis.aclose()


def shift_process_clock(offset: float) -> None:
    """Fallback when faketime is not installed: shift this process's clocks by `offset` seconds."""
    real_time, real_monotonic = time.time, time.monotonic
    time.time = lambda: real_time() + offset  # type: ignore[assignment]
    time.monotonic = lambda: real_monotonic() + offset  # type: ignore[assignment]


# --- tests -------------------------------------------------------------------------


def start_child(url: str, offset: float, seconds: float, tasks: int) -> subprocess.Popen[str]:
    settings = {
        "url": url, "user": "alice", "api": "send", "seconds": seconds, "tasks": tasks,
        "policy": {"rate": POLICY.rate, "per_seconds": POLICY.per_seconds, "burst": POLICY.burst},
    }
    command = [sys.executable, "-m", "tests.test_ratelimit_clock_skew", json.dumps(settings)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    faketime = shutil.which("faketime")
    if faketime is not None:
        command = [faketime, "-f", f"{offset:+.0f}s", *command]
    else:
        env["RATELIMIT_TEST_CLOCK_OFFSET"] = repr(offset)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def read_json_line(child: subprocess.Popen[str]) -> dict[str, object]:
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, f"child exited early with code {child.wait()}"
    return json.loads(line)


def test_processes_with_skewed_clocks_share_one_exact_bucket(redis_server: RedisServer) -> None:
    children = [start_child(redis_server.url, offset, seconds=3.0, tasks=8) for offset in CLOCK_OFFSETS_SECONDS]
    try:
        readies = [read_json_line(child) for child in children]
        now = time.time()
        for offset, ready in zip(CLOCK_OFFSETS_SECONDS, readies):
            assert abs(float(ready["clock"]) - now - offset) < 30, "the child's clock was not shifted"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [HammerResult(**read_json_line(child)) for child in children]  # type: ignore[arg-type]
        assert [child.wait(timeout=30) for child in children] == [0] * len(children)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert all(r.allowed > 0 for r in results), "every process should win some tokens"
    assert_within_bound(POLICY, results)


async def test_concurrent_checks_grant_exactly_the_burst(redis_server: RedisServer) -> None:
    redis = connect(RedisConfig(pool_size=32), redis_server.url)  # bounded: 400 callers queue for 32 connections
    limiter = RateLimiter(redis)
    policy = RatePolicy(rate=1, per_seconds=3600, burst=50)
    try:
        decisions = await asyncio.gather(*(limiter.check("bob", "send", policy) for _ in range(400)))
    finally:
        await redis.aclose()
    granted = [d for d in decisions if d.allowed]
    assert len(granted) == 50
    assert sorted(d.remaining for d in granted) == list(range(50))  # each token handed out once
    assert all(d.retry_after > 0 for d in decisions if not d.allowed)


async def test_concurrent_tasks_in_one_process_stay_within_the_bound(redis: Redis) -> None:
    limiter = RateLimiter(redis)
    policy = RatePolicy(rate=20, per_seconds=1, burst=5)
    result = await hammer(limiter, "carol", "send", policy, seconds=2.0, tasks=50)
    assert_within_bound(policy, [result])


if __name__ == "__main__":
    if "RATELIMIT_TEST_CLOCK_OFFSET" in os.environ:
        shift_process_clock(float(os.environ["RATELIMIT_TEST_CLOCK_OFFSET"]))
    asyncio.run(child_main(json.loads(sys.argv[1])))
