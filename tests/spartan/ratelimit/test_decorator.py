"""`@rate` through a real grpc.aio server and a real redis-server.

The test servicer stacks decorators the way the gateway does: the project's error
plumbing (`spartan.rpc.handlers`) outside, then authentication (here: the user
named in the `x-user` metadata), then `@rate`, then the handler body.
"""
from __future__ import annotations

import functools
import signal
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from spartan.config import Config, ConfigError, RateConfig, RedisConfig
from spartan.context import current_user
from spartan.errors import RateLimited, from_rpc_error, trailers_of
from spartan.ratelimit import (
    DEFAULT_API,
    RateLimiter,
    RateLimits,
    RatePolicy,
    bucket_key,
    policies_from_config,
    policy_for,
    rate,
)
from spartan.redis_conn import connect
from spartan.rpc.handlers import stream, unary
from spartan.v1 import pb, rpc
from tests.support.redis_server import RedisServer

USERS = ["alice", "bob", "carol"]
LIMITED_CONFIG = Config(
    users=USERS,
    rate=RateConfig(rate=2, per_seconds=60, apis={"history": {"rate": 5.0, "per_seconds": 60.0}}),
)


def authenticated_from_metadata(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Stand-in for the gateway's auth step: sets `current_user` before the inner handler runs."""

    def user_of(context: grpc.aio.ServicerContext) -> str:
        return dict(context.invocation_metadata() or ()).get("x-user", "")

    if inspect.isasyncgenfunction(handler):
        @functools.wraps(handler)
        async def streaming(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            current_user.set(user_of(context))
            async for item in handler(self, request, context):
                yield item

        return streaming

    @functools.wraps(handler)
    async def single(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        current_user.set(user_of(context))
        return await handler(self, request, context)

    return single


class LimitedSpartan(rpc.SpartanServicer):
    def __init__(self, limiter: RateLimiter, policies: dict[str, RatePolicy]) -> None:
        self.limits = RateLimits(limiter, policies)
        self.bodies_run = 0

    @unary("Spartan")
    @authenticated_from_metadata
    @rate("send")
    async def SendMsg(self, request: pb.Message, context: grpc.aio.ServicerContext) -> pb.SendAck:
        self.bodies_run += 1
        return pb.SendAck(id=request.id)

    @unary("Spartan")
    @authenticated_from_metadata
    @rate("history")
    async def GetHistory(self, request: pb.HistoryRequest, context: grpc.aio.ServicerContext) -> pb.HistoryResponse:
        return pb.HistoryResponse()

    @unary("Spartan")
    @authenticated_from_metadata
    @rate("list_users", limit=1, period=60)
    async def ListUsers(
        self, request: pb.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListUsersResponse:
        return pb.ListUsersResponse()

    @unary("Spartan")
    @rate("challenge", limit=2, period=60)  # no login yet: limited per peer address
    async def GetChallenge(self, request: pb.ChallengeRequest, context: grpc.aio.ServicerContext) -> pb.Challenge:
        return pb.Challenge()

    @stream("Spartan")
    @authenticated_from_metadata
    @rate("receive")
    async def ReceiveMsg(self, request: pb.Message, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Message]:
        for text in ("one", "two", "three"):
            yield pb.Message(text=text)


class Running:
    def __init__(self, server: grpc.aio.Server, target: str, servicer: LimitedSpartan) -> None:
        self.server = server
        self.target = target
        channel = grpc.aio.insecure_channel(target)
        self.channel = channel
        self.stub = rpc.SpartanStub(channel)
        self.servicer = servicer


async def start(redis_url: str, cfg: Config) -> Running:
    limiter = RateLimiter(connect(RedisConfig(timeout_seconds=1.0), redis_url))
    servicer = LimitedSpartan(limiter, policies_from_config(cfg))
    server = grpc.aio.server()
    rpc.add_SpartanServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return Running(server, f"127.0.0.1:{port}", servicer)


async def stop(running: Running) -> None:
    await running.channel.close()
    await running.server.stop(None)
    await running.servicer.limits.limiter.redis.aclose()


@pytest.fixture
async def limited(redis_server: RedisServer) -> AsyncIterator[Running]:
    running = await start(redis_server.url, LIMITED_CONFIG)
    try:
        yield running
    finally:
        await stop(running)


def as_user(user: str) -> tuple[tuple[str, str], ...]:
    return (("x-user", user),)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_rejection_is_resource_exhausted_with_retry_trailers(limited: Running) -> None:
    rejections_before = sample("spartan_rate_limit_rejections_total", api="send")
    allowed_before = sample("spartan_rate_limit_checks_total", api="send", result="allowed")
    for n in range(2):
        ack = await limited.stub.SendMsg(pb.Message(id=f"m{n}"), metadata=as_user("alice"))
        assert ack.id == f"m{n}"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await limited.stub.SendMsg(pb.Message(id="m2"), metadata=as_user("alice"))
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details().startswith("rate limit exceeded for send: try again in ")
    trailers = trailers_of(error)
    assert 29.0 < float(trailers["retry-after"]) <= 30.0  # one token per 30 s
    assert trailers["ratelimit-limit"] == "2"
    assert trailers["ratelimit-remaining"] == "0"
    rebuilt = from_rpc_error(error)
    assert isinstance(rebuilt, RateLimited) and rebuilt.retry_after == float(trailers["retry-after"])
    assert limited.servicer.bodies_run == 2, "a rejected call must not run the handler"
    assert sample("spartan_rate_limit_rejections_total", api="send") == rejections_before + 1
    assert sample("spartan_rate_limit_checks_total", api="send", result="allowed") == allowed_before + 2


async def test_each_user_has_an_own_bucket(limited: Running) -> None:
    for _ in range(2):
        await limited.stub.SendMsg(pb.Message(), metadata=as_user("alice"))
    with pytest.raises(grpc.aio.AioRpcError):
        await limited.stub.SendMsg(pb.Message(), metadata=as_user("alice"))
    for _ in range(2):
        await limited.stub.SendMsg(pb.Message(), metadata=as_user("bob"))


async def test_per_api_override_and_separate_buckets_per_api(limited: Running) -> None:
    for _ in range(5):
        await limited.stub.GetHistory(pb.HistoryRequest(), metadata=as_user("carol"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await limited.stub.GetHistory(pb.HistoryRequest(), metadata=as_user("carol"))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailers_of(caught.value)["ratelimit-limit"] == "5"
    assert caught.value.details().startswith("rate limit exceeded for history")
    for _ in range(2):  # "send" uses the default policy and its own bucket
        await limited.stub.SendMsg(pb.Message(), metadata=as_user("carol"))


async def test_decorator_arguments_override_the_config(limited: Running) -> None:
    await limited.stub.ListUsers(pb.ListUsersRequest(), metadata=as_user("alice"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await limited.stub.ListUsers(pb.ListUsersRequest(), metadata=as_user("alice"))
    assert trailers_of(caught.value)["ratelimit-limit"] == "1"
    assert 59.0 < float(trailers_of(caught.value)["retry-after"]) <= 60.0


async def test_streams_are_checked_once_when_they_start(limited: Running) -> None:
    for _ in range(2):
        received = [m.text async for m in limited.stub.ReceiveMsg(pb.Message(), metadata=as_user("bob"))]
        assert received == ["one", "two", "three"]  # three messages, one token
    call = limited.stub.ReceiveMsg(pb.Message(), metadata=as_user("bob"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pytest.fail("a rejected stream must not deliver anything")
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry-after" in trailers_of(caught.value)


async def test_anonymous_calls_share_a_bucket_per_peer_host(limited: Running, redis: Redis) -> None:
    await limited.stub.GetChallenge(pb.ChallengeRequest())
    async with grpc.aio.insecure_channel(
        limited.target,  # a second connection, from another local port
        options=[("grpc.use_local_subchannel_pool", 1)],
    ) as other:
        await rpc.SpartanStub(other).GetChallenge(pb.ChallengeRequest())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rpc.SpartanStub(other).GetChallenge(pb.ChallengeRequest())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await redis.exists(bucket_key("peer:ipv4:127.0.0.1", "challenge")) == 1


async def test_disabled_limiting_checks_nothing(redis_server: RedisServer, redis: Redis) -> None:
    running = await start(redis_server.url, Config(users=USERS, rate=RateConfig(enabled=False)))
    try:
        for _ in range(10):
            await running.stub.SendMsg(pb.Message(), metadata=as_user("alice"))
        assert await redis.keys("sp:rl:*") == []
    finally:
        await stop(running)


async def test_redis_down_rejects_as_unavailable_and_recovers(redis_server: RedisServer, limited: Running) -> None:
    await limited.stub.SendMsg(pb.Message(), metadata=as_user("alice"))
    errors_before = sample("spartan_rate_limit_checks_total", api="send", result="error")
    redis_server.kill()
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await limited.stub.SendMsg(pb.Message(), metadata=as_user("alice"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details().startswith("rate limiter unavailable")
    assert limited.servicer.bodies_run == 1, "calls must not pass while the limiter cannot decide"
    assert sample("spartan_rate_limit_checks_total", api="send", result="error") == errors_before + 2
    redis_server.start()  # same port, empty data set
    ack = await limited.stub.SendMsg(pb.Message(id="back"), metadata=as_user("alice"))
    assert ack.id == "back"
    assert limited.servicer.bodies_run == 2


# --- policy resolution (config -> policies) -------------------------------------------


def test_seed_setting_applies_when_no_general_rate_is_set() -> None:
    policies = policies_from_config(Config(users=USERS, max_call_per_30_seconds_per_user=3))
    assert policies == {DEFAULT_API: RatePolicy(rate=3, per_seconds=30, burst=3)}
    assert policy_for(policies, "send") == RatePolicy(rate=3, per_seconds=30, burst=3)
    assert policies[DEFAULT_API].tokens_per_second == pytest.approx(0.1)


def test_general_form_wins_over_the_seed_setting() -> None:
    cfg = Config(users=USERS, max_call_per_30_seconds_per_user=3, rate=RateConfig(rate=15, per_seconds=1, burst=0))
    assert policy_for(policies_from_config(cfg), "send") == RatePolicy(rate=15, per_seconds=1, burst=15)
    cfg = Config(users=USERS, rate=RateConfig(rate=0.5, per_seconds=1, burst=0))
    assert policy_for(policies_from_config(cfg), "send").burst == 1  # rounded up, at least one
    cfg = Config(users=USERS, rate=RateConfig(rate=15, per_seconds=1, burst=40))
    assert policy_for(policies_from_config(cfg), "send").burst == 40


def test_api_overrides_inherit_what_they_leave_out() -> None:
    cfg = Config(
        users=USERS,
        rate=RateConfig(rate=10, per_seconds=60, burst=20, apis={
            "send": {"rate": 4.0}, "history": {"burst": 7.0}, "login": {"rate": 1.0, "per_seconds": 5.0, "burst": 3.0},
        }),
    )
    policies = policies_from_config(cfg)
    assert policy_for(policies, "send") == RatePolicy(rate=4, per_seconds=60, burst=4)
    assert policy_for(policies, "history") == RatePolicy(rate=10, per_seconds=60, burst=7)
    assert policy_for(policies, "login") == RatePolicy(rate=1, per_seconds=5, burst=3)
    assert policy_for(policies, "other") == RatePolicy(rate=10, per_seconds=60, burst=20)


def test_disabled_config_yields_no_policy() -> None:
    policies = policies_from_config(Config(users=USERS, rate=RateConfig(enabled=False, apis={"send": {"rate": 1.0}})))
    assert policies == {} and policy_for(policies, "send") is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"rat": 1.0}, "unknown setting: rate.apis.send.rat"),
        ({"rate": 0.0}, "rate.apis.send.rate: must be greater than zero"),
        ({"per_seconds": -1.0}, "rate.apis.send.per_seconds: must be greater than zero"),
        ({"burst": 2.5}, "rate.apis.send.burst: must be a whole number"),
    ],
)
def test_bad_overrides_fail_naming_the_key(override: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        policies_from_config(Config(users=USERS, rate=RateConfig(apis={"send": override})))


def test_decorator_rejects_what_it_cannot_limit() -> None:
    with pytest.raises(TypeError, match="async"):
        rate("send")(lambda self, request, context: None)
    for bad in ({"limit": 0}, {"period": -1.0}, {"burst": 0}, {"cost": 0}):
        with pytest.raises(ValueError):
            rate("send", **bad)  # type: ignore[arg-type]


async def test_servicer_without_limiter_fails_loudly(redis: Redis) -> None:
    class Bare:
        @rate("send")
        async def SendMsg(self, request: Any, context: Any) -> str:
            return "ran"

    with pytest.raises(AttributeError, match="limits"):
        await Bare().SendMsg(None, None)


async def test_redis_not_answering_times_out_as_unavailable(redis_server: RedisServer, limited: Running) -> None:
    """A stalled Redis is UNAVAILABLE after the client's timeout. The timed-out script may
    still run when Redis wakes up and take a token: a lost answer can cost a user a call,
    never grant one."""
    await limited.stub.SendMsg(pb.Message(), metadata=as_user("bob"))
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await limited.stub.SendMsg(pb.Message(), metadata=as_user("bob"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details().startswith("rate limiter unavailable")
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    assert limited.servicer.bodies_run == 1
    outcomes = []
    for _ in range(3):
        try:
            await limited.stub.SendMsg(pb.Message(), metadata=as_user("bob"))
            outcomes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as exc:
            outcomes.append(exc.code())
    assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert outcomes.count(grpc.StatusCode.OK) <= 1  # burst 2, one used before the stall
    await limited.stub.SendMsg(pb.Message(), metadata=as_user("carol"))  # Redis answers again
