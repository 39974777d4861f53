"""Presence and history as replicas: one of each SIGKILLed mid-chat, and no user sees an error.

The stack runs two replicas of presence and two of history; the gateways are given
both addresses of each (the list form of `services.presence` / `services.history`)
and balance over them round-robin, retrying the calls the proto marks as safe on
another replica (spartan/rpc/balancing.py). Every step below is one a user takes:
sending, listing users, reading history, a newcomer's first login and chat request,
and seeing that request. None of them may fail while a replica is dead, nor a read that
was in flight on it (each replica is frozen first, then killed), and a killed replica
restarted takes calls again: after it is back, the other one is killed.
"""
from __future__ import annotations

import asyncio
import signal
import time

from spartan.v1 import pb
from tests.support.prometheus import scrape
from tests.support.stack import Stack, rates

SETTINGS = rates(send=100, request=100)  # one test sends and asks for more chats than 3 per 30 s
REJOIN_SECONDS = 15.0  # the gateways' reconnect backoff is at most 2 s; generous for a loaded machine


async def once(client, method: str, request: object):  # type: ignore[no-untyped-def]
    """One call, without the client's own failover retry: the gateway's answer is what the test sees."""
    return await client.conn.call(method, request, attempts=1)


async def everything_users_do(stack: Stack, alice, bob, newcomer_name: str, sent: int, client_factory):  # type: ignore[no-untyped-def]
    """Each user-facing call that needs presence or history; any error fails the test."""
    await alice.send("bob", f"message {sent + 1}")
    await bob.wait_for(sent + 1)
    listing = await once(alice, "ListUsers", pb.ListUsersRequest())
    assert {u.name for u in listing.users} >= {"alice", "bob"}
    history = await once(bob, "GetHistory", pb.HistoryRequest(peer="alice"))
    assert history.messages[-1].id == bob.received[-1].message.id
    newcomer = await client_factory(newcomer_name, [stack.address(2)])  # first login: keys registered
    await once(newcomer, "RequestChat", pb.ChatRequest(peer="alice"))
    pending = await once(alice, "PendingRequests", pb.PendingRequestsRequest())
    assert newcomer_name in pending.requesters
    return sent + 1


async def reads_in_a_loop(reader, stop: asyncio.Event) -> int:  # type: ignore[no-untyped-def]
    """Calls presence and history back to back, so calls are in flight when a replica dies (any error
    propagates); returns how many were answered."""
    answered = 0
    while not stop.is_set():
        await once(reader, "ListUsers", pb.ListUsersRequest())
        await once(reader, "GetHistory", pb.HistoryRequest(peer="alice"))
        answered += 2
    return answered


async def kill_while_in_use(stack: Stack, replicas: tuple[str, ...], alice, bob, newcomer_name: str,  # type: ignore[no-untyped-def]
                            sent: int, client_factory) -> int:
    """Freeze `replicas` while reads run (so one is in flight on each), SIGKILL them, then do everything
    users do; returns the messages sent so far."""
    stop = asyncio.Event()
    reads = asyncio.create_task(reads_in_a_loop(bob, stop))
    await asyncio.sleep(0.5)
    for name in replicas:
        stack.signal(name, signal.SIGSTOP)
    await asyncio.sleep(0.5)
    for name in replicas:
        stack.kill(name)
    sent = await everything_users_do(stack, alice, bob, newcomer_name, sent, client_factory)
    stop.set()
    print(f"answered while {', '.join(replicas)} died: {await reads} reads")
    return sent


def rpcs_served(stack: Stack, name: str) -> float:
    return scrape(stack.metrics_ports[name]).total("spartan_rpcs_total")


async def test_one_replica_of_each_killed_mid_chat_no_user_sees_an_error(stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=2, replicas=2, settings=SETTINGS)
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(2)])
    sent = await everything_users_do(stack, alice, bob, "charlie", 0, client_factory)
    assert rpcs_served(stack, "presence") > 0 and rpcs_served(stack, "presence-2") > 0, "calls are balanced"

    sent = await kill_while_in_use(stack, ("presence", "history"), alice, bob, "eve", sent, client_factory)

    stack.restart("presence")
    stack.restart("history")
    started = time.monotonic()
    while rpcs_served(stack, "presence") == 0 or rpcs_served(stack, "history") == 0:
        assert time.monotonic() - started < REJOIN_SECONDS, "a restarted replica took no calls"
        await alice.call("ListUsers", pb.ListUsersRequest())
        await bob.call("GetHistory", pb.HistoryRequest(peer="alice"))
        await asyncio.sleep(0.1)
    print(f"rejoined: {time.monotonic() - started:.2f}s after listening")

    sent = await kill_while_in_use(stack, ("presence-2", "history-2"), alice, bob, "foo", sent, client_factory)
    assert [r.text for r in bob.received] == [f"message {i}" for i in range(1, sent + 1)]
