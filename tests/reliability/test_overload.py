"""A gateway at its stream limit sheds new streams with RESOURCE_EXHAUSTED instead of growing without bound."""
from __future__ import annotations

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
