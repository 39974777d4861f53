"""Graceful drain of a gateway (SIGTERM) with real processes and live traffic.

On SIGTERM a gateway turns its health NOT_SERVING, tells its open streams to
reconnect elsewhere, refuses new sends with UNAVAILABLE (clients retry on another
replica), waits up to the grace period for calls in flight and exits with status 0.
These tests check what a client and a load balancer observe while that happens.
"""
from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spartan.errors import SpartanError
from tests.support.stack import rates

GRACE_SECONDS = 3.0
# docs/RELIABILITY.md: a drained gateway exits 0 within 1.5 x the grace (reconnect notices, then
# calls in flight). Slack, measured on the monotonic clock from SIGTERM to exit: closing the Redis
# pool and the interpreter's own exit once "gateway stopped" is logged, on a loaded machine.
EXIT_SLACK_SECONDS = 1.5
DRAIN_BOUND_SECONDS = 1.5 * GRACE_SECONDS + EXIT_SLACK_SECONDS
SETTINGS = {
    "SPARTAN_SHUTDOWN__GRACE_SECONDS": str(GRACE_SECONDS),
    **rates(send=1000),  # alice sends 100 messages a second through the drain
}
CLOSING_NOTICE = "this gateway is shutting down; reconnecting to another one"
SERVICE = "spartan.v1.Spartan"


def terminate_timed(stack, name: str) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """SIGTERM `name`, wait for it to exit; (exit status, seconds it took)."""
    started = time.monotonic()
    status = stack.terminate(name, timeout=DRAIN_BOUND_SECONDS + 10.0)  # a wait, not the bound
    return status, time.monotonic() - started


async def send_or_none(client, peer: str, text: str) -> bool:  # type: ignore[no-untyped-def]
    """Send and report whether the send was acknowledged.

    A send that fails (the client gave up on UNAVAILABLE, or the call was cancelled
    because the client's own stream moved its channel to another gateway) is not
    acknowledged; it may or may not have been stored.
    """
    try:
        await client.send(peer, text)
        return True
    except SpartanError:
        return False
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the test itself is being cancelled
        return False


async def test_sigterm_while_streaming_and_sending_loses_no_acknowledged_message(
        stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=3, settings=SETTINGS)
    drained = "gateway-1"
    # bob streams through the gateway that will drain, charlie through another one; alice
    # sends to both, also through the draining gateway, so her sends meet the drain too.
    bob = await client_factory("bob", [stack.address(1), stack.address(2)])
    charlie = await client_factory("charlie", [stack.address(3)])
    alice = await client_factory("alice", [stack.address(1), stack.address(2)])
    for receiver in (bob, charlie):
        receiver.follow("alice")

    acknowledged: dict[str, list[str]] = {"bob": [], "charlie": []}
    attempted: dict[str, list[str]] = {"bob": [], "charlie": []}
    drain: asyncio.Task[tuple[int, float]] | None = None
    sent_after_exit = 0
    seq = 0
    while sent_after_exit < 40:
        for peer in ("bob", "charlie"):
            text = f"{peer}-{seq:04d}"
            attempted[peer].append(text)
            if await send_or_none(alice, peer, text):
                acknowledged[peer].append(text)
        seq += 1
        if seq == 30:
            drain = asyncio.create_task(asyncio.to_thread(terminate_timed, stack, drained))
        if drain is not None and drain.done():
            sent_after_exit += 1
        assert seq < 5000, "the drained gateway never exited"
        await asyncio.sleep(0.01)
    assert drain is not None
    status, seconds = await drain
    assert status == 0, stack.log(drained)
    assert seconds <= DRAIN_BOUND_SECONDS, f"the drain took {seconds:.2f}s"
    print(f"drain: exited {seconds:.2f}s after SIGTERM")

    for receiver in (bob, charlie):
        wanted = acknowledged[receiver.user]
        assert len(wanted) >= 70  # the sender carried on past the drain
        await receiver.wait_for(len(wanted), timeout=60)
        await asyncio.sleep(1.0)  # a late duplicate would arrive now
        texts = [r.text for r in receiver.received]
        assert len(texts) == len(set(texts)), "a message was shown twice"
        assert set(wanted) <= set(texts), sorted(set(wanted) - set(texts))
        assert set(texts) <= set(attempted[receiver.user])  # nothing that was never sent
        assert texts == sorted(texts), "messages out of order"

    # bob was on the drained gateway: told why, reconnected elsewhere, resumed.
    assert CLOSING_NOTICE in bob.notices
    assert "Reconnecting…" in bob.notices and "Reconnected." in bob.notices
    assert bob.conn.address == stack.address(2)
    # charlie's gateway kept running: his stream never broke.
    assert "Reconnecting…" not in charlie.notices
    log = stack.log(drained)
    assert "gateway draining (grace 3.0s)" in log and "gateway stopped" in log


async def test_health_turns_not_serving_during_drain_and_process_exits_cleanly(stack_factory) -> None:
    """A health Watch stream stays open through the drain (up to the grace), so it sees the change."""
    grace = 4.0
    stack = stack_factory(gateways=1, settings={"SPARTAN_SHUTDOWN__GRACE_SECONDS": str(grace)})
    async with grpc.aio.insecure_channel(stack.address(1)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        started = time.monotonic()
        bound = 1.5 * grace + EXIT_SLACK_SECONDS
        exited = asyncio.create_task(asyncio.to_thread(stack.terminate, "gateway-1", bound + 10.0))
        change = await asyncio.wait_for(watch.read(), timeout=10)
        assert change.status == health_pb2.HealthCheckResponse.NOT_SERVING

        # From now on a balancer asking never hears SERVING: NOT_SERVING while the server
        # still takes calls, then an error (CANCELLED for a call that meets the shutdown,
        # UNAVAILABLE once nothing listens).
        answers: list[str] = []
        while not exited.done():
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2)
                answers.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
            except grpc.aio.AioRpcError as error:
                answers.append(error.code().name)
            await asyncio.sleep(0.2)
        assert answers and set(answers) <= {"NOT_SERVING", "CANCELLED", "UNAVAILABLE"}, answers

        assert await exited == 0, stack.log("gateway-1")
        took = time.monotonic() - started
        # The open Watch held the server for the grace period, then it was cancelled.
        assert grace <= took <= bound, f"the drain took {took:.2f}s"
        print(f"drain with a Watch open: exited {took:.2f}s after SIGTERM")
        try:
            ended = await watch.read()
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        else:
            assert ended is grpc.aio.EOF
