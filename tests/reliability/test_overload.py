"""A gateway at its stream or in-flight call limit sheds new work with RESOURCE_EXHAUSTED instead of growing
without bound."""
from __future__ import annotations

import asyncio
import signal

import grpc
import pytest

from spartan.client.headless import HeadlessClient
from spartan.v1 import pb


async def test_streams_beyond_the_limit_are_refused_and_freed_slots_are_reused(stack_factory, client_factory,
                                                                               tmp_path) -> None:
    stack = stack_factory(gateways=1, settings={"SPARTAN_GATEWAY__MAX_STREAMS": "3"})
    holders = [await client_factory(user, [stack.address(1)]) for user in ("alice", "bob", "charlie")]

    extra = HeadlessClient("eve", [stack.address(1)], str(tmp_path / "keys"))
    with pytest.raises(RuntimeError, match="as many streams as it may"):
        await extra.start(timeout=10)
    await extra.close()

    await holders[2].close()
    late = await client_factory("eve", [stack.address(1)])
    await holders[0].send("eve", "room again")
    assert [r.text for r in await late.wait_for(1)] == ["room again"]


async def test_overloaded_stream_open_is_resource_exhausted(stack_factory, client_factory, tmp_path) -> None:
    stack = stack_factory(gateways=1, settings={"SPARTAN_GATEWAY__MAX_STREAMS": "1"})
    await client_factory("alice", [stack.address(1)])
    bob = HeadlessClient("bob", [stack.address(1)], str(tmp_path / "keys"))
    await bob.conn.open()
    assert bob.conn.stub is not None
    call = bob.conn.stub.ReceiveMsg(pb.Message(sender="bob"), metadata=bob.conn.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in call:
            pass
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await bob.conn.close()


async def test_unary_calls_beyond_max_inflight_calls_are_resource_exhausted(stack_factory, client_factory) -> None:
    """docs/CONFIG.md: `gateway.max_inflight_calls` unary calls in progress per gateway; more get
    RESOURCE_EXHAUSTED. With presence frozen, a ListUsers call stays in progress (until its 3 s
    deadline to presence), so one parked call fills a limit of 1 while alice's stream holds the one
    stream slot."""
    stack = stack_factory(gateways=1, settings={"SPARTAN_GATEWAY__MAX_STREAMS": "1",
                                                "SPARTAN_GATEWAY__MAX_INFLIGHT_CALLS": "1"})
    alice = await client_factory("alice", [stack.address(1)])
    await alice.call("ListUsers", pb.ListUsersRequest())  # logged in, key checked: nothing else needs presence
    stub, metadata = alice.conn.stub, alice.conn.metadata  # one attempt per call: no client retries
    assert stub is not None
    stack.signal("presence", signal.SIGSTOP)
    try:
        async def list_users() -> pb.ListUsersResponse:
            return await stub.ListUsers(pb.ListUsersRequest(), metadata=metadata, timeout=20)

        parked = asyncio.create_task(list_users())
        await asyncio.sleep(0.5)
        assert not parked.done()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListUsers(pb.ListUsersRequest(), metadata=metadata, timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        stack.signal("presence", signal.SIGCONT)
    try:
        await parked  # answered late, or failed with presence's deadline: either way it ends
    except grpc.aio.AioRpcError as slow:
        assert slow.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), slow
    # The slot is free again once the parked call ended.
    assert {u.name for u in (await alice.call("ListUsers", pb.ListUsersRequest())).users} >= {"alice"}
