"""The limiter is exact across processes whose clocks disagree by minutes, and under concurrency.

Each check's arithmetic and clock live in one Lua script on Redis, so the bound
below must hold whatever the callers' clocks say. Several OS processes, each with
its process clock shifted by `faketime` (or, where that tool is missing, with
`time.time`/`time.monotonic` shifted inside the process), hammer one user's bucket
at the same time through `RateLimiter.check`.

The bound. The window starts at t0, when the test takes the whole burst in one
check (cost = burst), reading t0 from the bucket's stored `ts` (Redis time). Let W
run from t0 to the last caller's end reading (`TIME` after its last check): every
check fell inside W. Refill is `rate` tokens per second of Redis time and nothing
else creates tokens, so, counting the burst taken at t0,

    allowed <= burst + rate * W                          (exact)

For the other side let A run from t0 to the last accepted check (the bucket's
stored `ts` at the end) and let `left` be the tokens the bucket kept then (stored
`tokens`; below one, since callers kept getting rejected). The bucket was empty at
t0 and can only lose refill by filling up to the burst, which takes burst/rate = 2
seconds without a check, far longer than any pause while callers hammer. So all
refill up to the last accepted check was either handed out or is `left`:

    allowed >= burst + rate * A - left                   (exact up to float rounding)

Neither bound depends on speed: a slower or busier machine makes fewer checks but
hands out the same tokens. (Writing them with T = W and `left` < 1 gives the
familiar burst + rate*T - 1 <= allowed <= burst + rate*T, less the refill accrued
between the last accepted check and the end reading.)

Run as `python3 -m tests.spartan.ratelimit.test_clock_skew '<json>'` the module is the child
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
from spartan.ratelimit import RateLimiter, RatePolicy, bucket_key
from spartan.redis_conn import connect
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[3]
CLOCK_OFFSETS_SECONDS = (-420.0, 0.0, 300.0)  # seven minutes behind, on time, five minutes ahead
POLICY = RatePolicy(rate=20, per_seconds=1, burst=40)  # refilling it takes 2 s without a check


@dataclass(frozen=True)
class HammerResult:
    allowed: int
    checks: int
    end_us: int  # Redis time after this caller's last check
    last_accept_us: int  # the bucket's stored ts, read right after the end
    tokens_left: float  # the bucket's stored tokens, read with it


async def redis_time_us(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return seconds * 1_000_000 + micros


async def take_whole_burst(limiter: RateLimiter, user: str, api: str, policy: RatePolicy) -> int:
    """Empty the fresh bucket in one check; returns its Redis time in µs (t0)."""
    decision = await limiter.check(user, api, policy, cost=policy.burst)
    assert decision.allowed and decision.remaining == 0
    return int(await limiter.redis.hget(bucket_key(user, api), "ts"))


async def hammer(
    limiter: RateLimiter, user: str, api: str, policy: RatePolicy, seconds: float, tasks: int
) -> HammerResult:
    """`tasks` concurrent loops calling `check` for `seconds` of this process's clock."""
    allowed = 0
    checks = 0
    await asyncio.gather(*(limiter.redis.ping() for _ in range(tasks)))  # open the connections first
    deadline = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal allowed, checks
        while time.monotonic() < deadline:
            decision = await limiter.check(user, api, policy)
            checks += 1
            allowed += decision.allowed

    await asyncio.gather(*(loop() for _ in range(tasks)))
    end_us = await redis_time_us(limiter.redis)
    tokens, ts = await limiter.redis.hmget(bucket_key(user, api), "tokens", "ts")
    return HammerResult(allowed, checks, end_us, int(ts), float(tokens))


def assert_within_bound(policy: RatePolicy, t0_us: int, results: Sequence[HammerResult]) -> None:
    final = max(results, key=lambda r: r.last_accept_us)  # the latest reading sees every accepted check
    window = (max(r.end_us for r in results) - t0_us) / 1e6
    accepting = (final.last_accept_us - t0_us) / 1e6
    allowed = policy.burst + sum(r.allowed for r in results)
    ceiling = policy.burst + policy.tokens_per_second * window
    floor = policy.burst + policy.tokens_per_second * accepting - final.tokens_left
    described = f"{allowed} allowed in {window:.3f}s (last accepted at {accepting:.3f}s, {final.tokens_left:.3f} left)"
    assert allowed <= ceiling + 1e-6, f"{described}: more than {ceiling:.3f}"
    assert allowed >= floor - 1e-6, f"{described}: fewer than {floor:.3f}"
    assert final.tokens_left < 1, "callers stopped being rejected: they did not hammer"
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
    command = [sys.executable, "-m", "tests.spartan.ratelimit.test_clock_skew", json.dumps(settings)]
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
        t0_us = asyncio.run(take_whole_burst_from(redis_server.url, "alice", "send", POLICY))
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
    assert_within_bound(POLICY, t0_us, results)


async def take_whole_burst_from(url: str, user: str, api: str, policy: RatePolicy) -> int:
    redis = connect(RedisConfig(), url)
    try:
        return await take_whole_burst(RateLimiter(redis), user, api, policy)
    finally:
        await redis.aclose()


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
    policy = RatePolicy(rate=20, per_seconds=1, burst=40)
    t0_us = await take_whole_burst(limiter, "carol", "send", policy)
    result = await hammer(limiter, "carol", "send", policy, seconds=2.0, tasks=50)
    assert_within_bound(policy, t0_us, [result])


if __name__ == "__main__":
    if "RATELIMIT_TEST_CLOCK_OFFSET" in os.environ:
        shift_process_clock(float(os.environ["RATELIMIT_TEST_CLOCK_OFFSET"]))
    asyncio.run(child_main(json.loads(sys.argv[1])))
