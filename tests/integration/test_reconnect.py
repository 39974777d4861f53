"""Loss-free reconnect: a client whose gateway dies resumes on another replica from the delivery log."""
from __future__ import annotations

import asyncio

import pytest

from tests.support.stack import rates

SENDS = rates(send=1000)  # 200 messages sent back to back


@pytest.mark.on_cluster  # and on a Redis Cluster of 3 primaries and 3 replicas
async def test_receiver_survives_gateway_sigkill_and_sees_every_message_once_in_order(
        stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=2, settings=SENDS)
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(2), stack.address(1)])
    bob.follow("alice")
    await alice.send("bob", "before")
    await bob.wait_for(1)

    async def send_all() -> None:
        for i in range(200):
            await alice.send("bob", f"m{i:03d}")
            if i == 40:
                stack.kill("gateway-2")
            await asyncio.sleep(0.002)

    await send_all()
    received = await bob.wait_for(201, timeout=60)
    assert [r.text for r in received] == ["before", *[f"m{i:03d}" for i in range(200)]]
    assert "Reconnecting…" in bob.notices and "Reconnected." in bob.notices
    assert bob.conn.address == stack.address(1)
