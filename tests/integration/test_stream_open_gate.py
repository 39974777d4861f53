"""Stream opens are paced: a storm of opens waits its turn and live messages do not wait for it.

The gateway sets up at most `gateway.max_concurrent_stream_opens` streams at once; the
others wait up to `gateway.stream_open_wait_seconds`, then get RESOURCE_EXHAUSTED with a
retry-after. Here the limit is 1 and the wait 1 s (so one open can hold the only slot),
and presence is frozen so that an open in progress cannot finish: a second open is
refused after the wait, while alice's messages keep reaching bob's open stream.
"""
from __future__ import annotations

import asyncio
import signal
import time

import grpc

from services.gateway.open_gate import BUSY
from spartan.v1 import pb

SETTINGS = {
    "SPARTAN_GATEWAY__MAX_CONCURRENT_STREAM_OPENS": "1",  # one open in progress fills the gate
    "SPARTAN_GATEWAY__STREAM_OPEN_WAIT_SECONDS": "1",  # the refusal comes in a second, not ten
}
SLACK_SECONDS = 1.0  # a loaded machine's scheduling, over the stated wait


def open_stream(client):  # type: ignore[no-untyped-def]
    """A second stream of `client`'s user, opened directly (no client retry)."""
    assert client.conn.stub is not None
    return client.conn.stub.ReceiveMsg(pb.Message(sender=client.user), metadata=client.conn.metadata)


async def test_a_waiting_open_is_refused_with_retry_after_while_live_messages_flow(
        stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=1, settings=SETTINGS)
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(1)])
    charlie = await client_factory("charlie", [stack.address(1)])
    await alice.send("bob", "before")
    await bob.wait_for(1)

    stack.signal("presence", signal.SIGSTOP)  # an open's first step (presence) cannot finish now
    try:
        holding = open_stream(charlie)  # takes the only slot and waits for presence
        await asyncio.sleep(0.3)
        started = time.monotonic()
        refused = open_stream(charlie)
        try:
            await refused.initial_metadata()
            async for _ in refused:
                pass
        except grpc.aio.AioRpcError:
            pass
        waited = time.monotonic() - started
        assert await refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await refused.details() == BUSY
        trailers = {key: value for key, value in (await refused.trailing_metadata()) or ()}
        assert float(trailers["retry-after"]) > 0
        assert 1.0 <= waited <= 1.0 + SLACK_SECONDS, waited
        # Live delivery on open streams does not pass the gate: gated, it would wait for the open that
        # holds the slot, which waits for the frozen presence (3 s call deadline).
        sent = time.monotonic()
        await alice.send("bob", "during")
        await bob.wait_for(2)
        assert time.monotonic() - sent < 1.0
        holding.cancel()
    finally:
        stack.signal("presence", signal.SIGCONT)
    again = open_stream(charlie)
    headers = await again.initial_metadata()
    assert any(key == "x-spartan-gateway" for key, _ in headers), headers
    again.cancel()
    assert [r.text for r in bob.received] == ["before", "during"]
