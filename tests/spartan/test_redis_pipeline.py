"""AutoPipeline against a real redis-server: replies reach the right callers, failures are contained.

The send path's rate check and append go through one `AutoPipeline`, so a reply
handed to the wrong caller would acknowledge the wrong message. These tests issue
many concurrent commands and check every caller's own answer, then break Redis in
each way the service meets (error replies, flushed scripts, a killed server, a
frozen server, callers that give up) and check the pipeline both fails the right
commands and works again afterwards.
"""
from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from spartan.config import RedisConfig
from spartan.redis_conn import connect
from spartan.redis_pipeline import AutoPipeline
from spartan.redis_scripts import script
from tests.support.redis_server import RedisServer


@pytest.fixture
async def pipeline(redis_server: RedisServer) -> AsyncIterator[AutoPipeline]:
    client = connect(RedisConfig(timeout_seconds=1.0), redis_server.url)
    pipe = AutoPipeline(client)
    try:
        yield pipe
    finally:
        await pipe.aclose()
        await client.aclose()


async def test_concurrent_callers_each_get_their_own_reply(pipeline: AutoPipeline) -> None:
    replies = await asyncio.gather(*(pipeline.execute("ECHO", f"call-{i}") for i in range(500)))
    assert replies == [f"call-{i}".encode() for i in range(500)]


async def test_concurrent_commands_share_one_connection(pipeline: AutoPipeline, redis: Redis) -> None:
    ids = await asyncio.gather(*(pipeline.execute("CLIENT", "ID") for _ in range(50)))
    assert len(set(ids)) == 1
    clients = await redis.client_list()
    assert sum(1 for client in clients if int(client["id"]) == ids[0]) == 1


async def test_an_error_reply_fails_only_its_own_command(pipeline: AutoPipeline, redis: Redis) -> None:
    await redis.set("text", "x")
    calls = [pipeline.execute("ECHO", "before"), pipeline.execute("LPUSH", "text", "y"),
             pipeline.execute("INCR", "counter"), pipeline.execute("ECHO", "after")]
    before, wrong_type, counter, after = await asyncio.gather(*calls, return_exceptions=True)
    assert (before, counter, after) == (b"before", 1, b"after")
    assert isinstance(wrong_type, redis_errors.ResponseError) and "WRONGTYPE" in str(wrong_type)


async def test_scripts_are_loaded_again_after_a_flush(pipeline: AutoPipeline, redis: Redis) -> None:
    bucket = script(pipeline, "token_bucket")
    assert (await bucket(keys=["sp:rl:{a}:send"], args=["1.0", 5, 1]))[0] == 1
    await redis.script_flush()
    results = await asyncio.gather(*(bucket(keys=["sp:rl:{a}:send"], args=["1.0", 5, 1]) for _ in range(3)))
    assert [result[0] for result in results] == [1, 1, 1]
    assert (await redis.hget("sp:rl:{a}:send", "tokens")).startswith(b"1")  # 5 - 4 calls, plus a little refill


async def test_a_caller_that_gives_up_does_not_shift_the_replies(pipeline: AutoPipeline) -> None:
    slow = asyncio.create_task(pipeline.execute("BLPOP", "empty", "0.3"))  # holds the connection 0.3 s
    await asyncio.sleep(0.05)
    queued = [asyncio.create_task(pipeline.execute("ECHO", f"q{i}")) for i in range(5)]
    await asyncio.sleep(0.05)
    slow.cancel()
    queued[2].cancel()
    assert await asyncio.gather(*queued[:2], *queued[3:]) == [b"q0", b"q1", b"q3", b"q4"]
    assert await pipeline.execute("ECHO", "next") == b"next"


async def test_a_killed_redis_fails_calls_then_they_work_again_after_restart(
        pipeline: AutoPipeline, redis_server: RedisServer) -> None:
    assert await pipeline.execute("SET", "k", "v")
    redis_server.kill()
    with pytest.raises(redis_errors.ConnectionError):
        await pipeline.execute("GET", "k")
    redis_server.start()
    assert await pipeline.execute("PING") == b"PONG"
    assert await pipeline.execute("ECHO", "back") == b"back"


async def test_a_redis_restarted_between_calls_costs_no_failed_call(pipeline: AutoPipeline,
                                                                   redis_server: RedisServer) -> None:
    assert await pipeline.execute("ECHO", "before") == b"before"
    redis_server.restart()
    assert await pipeline.execute("ECHO", "after") == b"after"
    await asyncio.sleep(0.2)
    closes = pipeline_failures()
    redis_server.restart()
    await asyncio.sleep(0.5)
    assert pipeline_failures() == closes + 1  # the reader noticed the close while idle, before any call
    assert await pipeline.execute("ECHO", "again") == b"again"


def pipeline_failures() -> float:
    return REGISTRY.get_sample_value("spartan_redis_errors_total", {"operation": "pipeline"}) or 0.0


async def test_a_frozen_redis_times_out_every_call_in_flight(pipeline: AutoPipeline,
                                                             redis_server: RedisServer) -> None:
    assert await pipeline.execute("PING")
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(pipeline.execute("ECHO", str(i)) for i in range(10)), return_exceptions=True), 15)
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert all(isinstance(result, redis_errors.TimeoutError) for result in results), results
    assert await pipeline.execute("ECHO", "thawed") == b"thawed"


async def test_a_closed_pipeline_refuses_calls_and_returns_its_connection(redis_server: RedisServer) -> None:
    client = connect(RedisConfig(timeout_seconds=1.0), redis_server.url)
    pipe = AutoPipeline(client)
    await pipe.execute("PING")
    await pipe.aclose()
    with pytest.raises(redis_errors.ConnectionError):
        await pipe.execute("PING")
    assert await client.ping()  # the pool still has its connections
    await client.aclose()
