"""1:1 chat across gateway replicas with real processes: delivery, requests, presence expiry."""
from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from spartan.v1 import pb
from spartan.errors import SpartanError
from tests.support.stack import rates

SENDS = rates(send=100)  # 22 messages sent back to back
LEASE_SECONDS = 3.0
LEASE = {"SPARTAN_PRESENCE__LEASE_SECONDS": str(LEASE_SECONDS)}  # waits for a lease to run out, 3 s not 10 s
OFFLINE_SLACK_SECONDS = 1.0  # one polling step and one ListUsers call


@pytest.mark.on_cluster  # and on a Redis Cluster of 3 primaries and 3 replicas
async def test_alice_and_bob_on_different_gateways_chat_both_ways(stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=2, settings=SENDS)
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(2)])

    await alice.send("bob", "Hey Bob!")
    assert [r.text for r in await bob.wait_for(1)] == ["Hey Bob!"]
    await bob.send("alice", "Hi Alice!")
    assert [r.text for r in await alice.wait_for(1)] == ["Hi Alice!"]

    for i in range(20):
        await alice.send("bob", f"message {i}")
    received = await bob.wait_for(21)
    assert [r.text for r in received[1:]] == [f"message {i}" for i in range(20)]
    offsets = [r.message.offset for r in received]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


@pytest.mark.on_cluster  # and on a Redis Cluster of 3 primaries and 3 replicas
async def test_a_first_message_reaches_every_open_stream_of_both_users_live(stack_factory, client_factory) -> None:
    """Each 1:1 conversation has its own channel; streams that were open before its first message
    follow it from then on: both of bob's devices get alice's first message, and both of alice's get
    bob's reply, without reconnecting. Sends stay within the shipped 3 per 30 s."""
    stack = stack_factory(gateways=3)
    alice = [await client_factory("alice", [stack.address(1)]), await client_factory("alice", [stack.address(3)])]
    bob = [await client_factory("bob", [stack.address(2)]), await client_factory("bob", [stack.address(3)])]
    await alice[0].send("bob", "first words")
    for device in bob:
        assert [r.text for r in await device.wait_for(1)] == ["first words"]
    await bob[1].send("alice", "a reply")
    for device in alice:
        assert [r.text for r in await device.wait_for(1)] == ["a reply"]
    await alice[1].send("bob", "from the other device")
    for device in bob:
        assert [r.text for r in await device.wait_for(2)][1:] == ["from the other device"]
    assert [r.text for r in alice[0].received] == ["a reply"], "a device is not sent what its user sent"


async def test_request_waits_for_offline_user_and_reaches_online_user(stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=2)
    alice = await client_factory("alice", [stack.address(1)])
    ack = await alice.call("RequestChat", pb.ChatRequest(peer="bob"))
    assert ack.peer_online is False

    bob = await client_factory("bob", [stack.address(2)])
    pending = await bob.call("PendingRequests", pb.PendingRequestsRequest())
    assert list(pending.requesters) == ["alice"]

    charlie = await client_factory("charlie", [stack.address(1)])
    ack = await charlie.call("RequestChat", pb.ChatRequest(peer="bob"))
    assert ack.peer_online is True
    # alice's request waited in bob's inbox and came with his stream's catch-up; charlie's arrives live.
    await bob.wait_until(lambda: [e.sender for e in bob.events if e.kind == pb.CHAT_REQUEST] == ["alice", "charlie"])

    await bob.call("RespondChat", pb.ChatRequest(peer="alice", accept=True))
    assert (await alice.wait_event(pb.CHAT_ACCEPT)).sender == "bob"
    await bob.call("RespondChat", pb.ChatRequest(peer="charlie", accept=False))
    assert (await charlie.wait_event(pb.CHAT_DECLINE)).sender == "bob"
    assert list((await bob.call("PendingRequests", pb.PendingRequestsRequest())).requesters) == []

    with pytest.raises(SpartanError) as answered:
        await bob.call("RespondChat", pb.ChatRequest(peer="alice", accept=True))
    assert answered.value.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_user_shows_offline_after_their_gateway_is_killed(stack_factory, client_factory) -> None:
    """docs/RELIABILITY.md: a SIGKILLed gateway's users show offline within `presence.lease_seconds`.

    The lease was last renewed before the kill, so it runs out at most LEASE_SECONDS after it
    (on Redis' clock, which the lease script reads). Slack: the 0.1 s polling step plus one
    ListUsers round trip on a loaded machine.
    """
    stack = stack_factory(gateways=2, settings=LEASE)
    alice = await client_factory("alice", [stack.address(1)])
    await client_factory("bob", [stack.address(2)])

    async def online() -> set[str]:
        listing = await alice.call("ListUsers", pb.ListUsersRequest())
        return {u.name for u in listing.users if u.online}

    assert await online() == {"alice", "bob"}
    killed = time.monotonic()
    stack.kill("gateway-2")
    while await online() != {"alice"}:
        assert time.monotonic() - killed <= LEASE_SECONDS + OFFLINE_SLACK_SECONDS, "bob still shows online"
        await asyncio.sleep(0.1)
    took = time.monotonic() - killed
    assert took <= LEASE_SECONDS + OFFLINE_SLACK_SECONDS, f"bob showed offline {took:.2f}s after the kill"
    print(f"lease: offline {took:.2f}s after the kill")


async def test_messages_sent_before_accept_are_in_history(stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=2)
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(2)])
    await alice.call("RequestChat", pb.ChatRequest(peer="bob"))
    await alice.send("bob", "Hey Bob!")
    history = await bob.call("GetHistory", pb.HistoryRequest(peer="alice"))
    assert [await bob.crypto.open(m) for m in history.messages] == ["Hey Bob!"]
