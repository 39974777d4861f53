"""Redis stops and comes back: sends fail UNAVAILABLE meanwhile, nothing acknowledged is lost, streams heal."""
from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest
from redis.asyncio import Redis

from spartan.errors import SpartanError
from spartan.v1 import pb
from tests.support.stack import rates

SENDS = rates(send=100)  # 20 messages sent back to back
# docs/RELIABILITY.md: a restarted presence or history serves again within the gateway's reconnect
# backoff (at most 2 s). gRPC spreads each wait by up to +-20 % (2.4 s); slack: the 0.2 s polling step
# and one call on a loaded machine.
RECOVERY_BOUND_SECONDS = 2.0 * 1.2 + 0.6


async def test_redis_restart_with_aof_loses_no_acknowledged_message(stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=2, appendonly=True, settings={"SPARTAN_MAX_NUM_MESSAGES_PER_USER": "100", **SENDS})
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(2)])
    bob.follow("alice")
    acknowledged = []
    for i in range(10):
        await alice.send("bob", f"before {i}")
        acknowledged.append(f"before {i}")
    await bob.wait_for(10)

    stack.redis.kill()
    with pytest.raises(SpartanError) as down:
        await alice.send("bob", "during outage")
    assert down.value.code == grpc.StatusCode.UNAVAILABLE

    stack.redis.start()
    for _ in range(100):  # the gateways reconnect with backoff
        try:
            await alice.send("bob", "after 0")
            acknowledged.append("after 0")
            break
        except SpartanError as exc:
            assert exc.code == grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(0.2)
    for i in range(1, 10):
        await alice.send("bob", f"after {i}")
        acknowledged.append(f"after {i}")
    received = await bob.wait_for(len(acknowledged), timeout=30)
    assert [r.text for r in received] == acknowledged
    history = await bob.call("GetHistory", pb.HistoryRequest(peer="alice"))
    assert [await bob.crypto.open(m) for m in history.messages] == acknowledged
    assert "Reconnecting…" in bob.notices and "Reconnected." in bob.notices


async def test_presence_and_history_down_fail_fast_and_recover(stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=1)
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(1)])
    await alice.send("bob", "hello")  # fetches and pins bob's keys while presence is up
    await bob.wait_for(1)

    stack.kill("presence")
    with pytest.raises(SpartanError) as no_presence:
        await alice.call("ListUsers", pb.ListUsersRequest())
    assert no_presence.value.code == grpc.StatusCode.UNAVAILABLE
    await alice.send("bob", "sends do not need presence")
    await bob.wait_for(2)
    await asyncio.sleep(3.0)  # down long enough for the gateway's backoff to reach its 2 s maximum
    stack.restart("presence")
    listing, took = await eventually(lambda: alice.call("ListUsers", pb.ListUsersRequest()))
    assert {u.name for u in listing.users} >= {"alice", "bob"}
    assert took <= RECOVERY_BOUND_SECONDS, f"presence answered {took:.2f}s after it was listening again"
    print(f"recovery: presence {took:.2f}s")

    stack.kill("history")
    with pytest.raises(SpartanError) as no_history:
        await alice.call("GetHistory", pb.HistoryRequest(peer="bob"))
    assert no_history.value.code == grpc.StatusCode.UNAVAILABLE
    await asyncio.sleep(3.0)
    stack.restart("history")
    history, took = await eventually(lambda: alice.call("GetHistory", pb.HistoryRequest(peer="bob")))
    assert len(history.messages) == 2
    assert took <= RECOVERY_BOUND_SECONDS, f"history answered {took:.2f}s after it was listening again"
    print(f"recovery: history {took:.2f}s")


async def eventually(call, seconds: float = 10.0):  # type: ignore[no-untyped-def]
    """The first answer of `call` and the monotonic seconds it took to come; the gateway's channel to a
    restarted service reconnects with backoff (at most 2 s between tries), UNAVAILABLE until then."""
    started = time.monotonic()
    while True:
        try:
            return await call(), time.monotonic() - started
        except SpartanError as exc:
            if exc.code != grpc.StatusCode.UNAVAILABLE or time.monotonic() - started > seconds:
                raise
            await asyncio.sleep(0.2)


async def test_a_message_published_while_a_gateways_pubsub_was_cut_reaches_its_open_stream(
        stack_factory, client_factory) -> None:
    """docs/RELIABILITY.md: on a lost pub/sub connection the gateway reconnects, resubscribes and tells
    every stream to replay from the delivery log, so nothing published meanwhile is missed.

    Redis cuts the pub/sub connection of bob's gateway (CLIENT KILL, as a proxy timeout or a network
    blip would) while that gateway is frozen, and alice's message is published before it
    resubscribes: only the replay can bring it to bob's stream, which stays open throughout.
    """
    stack = stack_factory(gateways=2)
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(2)])
    await alice.send("bob", "before the cut")
    await bob.wait_for(1)
    redis = Redis.from_url(stack.redis.url)
    try:
        stack.signal("gateway-2", signal.SIGSTOP)
        try:
            assert await redis.client_kill_filter(_type="pubsub") >= 2  # both gateways' connections
            await alice.send("bob", "during the cut")  # acknowledged: in the delivery log
        finally:
            stack.signal("gateway-2", signal.SIGCONT)
    finally:
        await redis.aclose()
    try:
        await bob.wait_for(2, timeout=10)
    except TimeoutError:
        raise AssertionError(f"bob's open stream never got the message published while its gateway's pub/sub "
                             f"connection was cut; notices {bob.notices}; gateway log:\n"
                             f"{stack.log('gateway-2')[-1500:]}") from None
    assert bob.texts() == ["before the cut", "during the cut"]
