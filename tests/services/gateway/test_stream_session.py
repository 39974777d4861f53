"""A stream session's bounded mailbox and its ending on overflow.

Proven here: deliveries queue in order and wake the handler; a queue exactly full is not
an overflow, one more message is: the queue is dropped, the stream is ended once with
RESOURCE_EXHAUSTED's sentence (`SLOW_STREAM`) through the registered `end`, later deliveries
are ignored, and the handler is released (cancelled) only if it is still parked a while
after the status went out; the same overflow happens with a real hub flooding the session
from Redis, while a session with room on the same channel gets everything; gap, outage and
close wake the handler. Its de-duplication rule is `spartan.read_positions`
(tests/spartan/test_read_positions.py).
"""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from services.gateway.hub import PubSubHub
from services.gateway.stream_session import (
    SLOW_STREAM,
    STUCK_WRITE_SECONDS,
    StreamSession,
)
from spartan.v1 import pb

DM = "dm:alice:bob"


class Ending:
    """Stands in for `context.abort`: records the sentence, then raises as abort does once the status is out."""

    def __init__(self) -> None:
        self.sentences: list[str] = []

    async def __call__(self, sentence: str) -> None:
        self.sentences.append(sentence)
        raise RuntimeError("aborted")  # grpc's abort() raises once the status is sent


def message(offset: int, conversation: str = DM, epoch: str = "e1") -> pb.Message:
    return pb.Message(id=f"{conversation}#{epoch}#{offset}", kind=pb.CHAT, conversation=conversation,
                      epoch=epoch, offset=offset)


def deliver(session: StreamSession, *messages: pb.Message) -> None:
    for m in messages:
        session.deliver(m, m.SerializeToString())


def slow_consumers() -> float:
    return REGISTRY.get_sample_value("spartan_slow_consumer_disconnects_total") or 0.0


async def test_deliveries_queue_in_order_and_wake_the_handler() -> None:
    session = StreamSession("bob", "s1", queue_size=10)
    assert not session.wakeup.is_set()
    deliver(session, message(1), message(2), message(3))
    assert session.wakeup.is_set()
    assert [m.offset for m, _ in session.queue] == [1, 2, 3]
    assert [raw for _, raw in session.queue] == [message(i).SerializeToString() for i in (1, 2, 3)]
    assert not session.overflowed


async def test_a_full_queue_is_not_an_overflow_one_more_message_is() -> None:
    ending = Ending()
    session = StreamSession("bob", "s1", queue_size=3)
    session.end = ending
    before = slow_consumers()
    deliver(session, message(1), message(2), message(3))
    assert not session.overflowed and len(session.queue) == 3

    deliver(session, message(4))
    assert session.overflowed
    assert len(session.queue) == 0  # the queue's memory is released at once
    assert session.ending is not None
    await asyncio.wait_for(session.status_sent.wait(), 5)
    await session.ending
    assert ending.sentences == [SLOW_STREAM]
    assert slow_consumers() == before + 1

    deliver(session, message(5), message(6))  # the stream is over: nothing more is queued or ended again
    assert len(session.queue) == 0 and ending.sentences == [SLOW_STREAM]
    assert slow_consumers() == before + 1


async def test_a_handler_that_returns_after_the_status_is_not_cancelled() -> None:
    session = StreamSession("bob", "s1", queue_size=1)
    session.end = Ending()

    async def handler() -> str:
        await session.status_sent.wait()
        return "returned"

    session.handler = asyncio.ensure_future(handler())
    await asyncio.sleep(0)
    deliver(session, message(1), message(2))
    assert session.ending is not None
    await session.ending
    assert await session.handler == "returned"


async def test_a_handler_parked_in_a_write_is_released_after_the_status() -> None:
    session = StreamSession("bob", "s1", queue_size=1)
    ending = Ending()
    session.end = ending
    parked = asyncio.Event()

    async def handler() -> None:
        parked.set()
        await asyncio.Event().wait()  # a write its client never reads

    session.handler = asyncio.ensure_future(handler())
    await parked.wait()
    deliver(session, message(1), message(2))
    assert session.ending is not None
    await asyncio.wait_for(session.ending, STUCK_WRITE_SECONDS + 10)
    assert ending.sentences == [SLOW_STREAM]
    assert session.handler.cancelled()


async def test_an_overflow_without_a_registered_end_marks_the_session_only() -> None:
    session = StreamSession("bob", "s1", queue_size=1)
    deliver(session, message(1), message(2))
    assert session.overflowed and session.ending is None and session.wakeup.is_set()


@pytest.mark.parametrize("signal", ["on_gap", "on_outage", "close"])
def test_gap_outage_and_close_wake_the_handler(signal: str) -> None:
    session = StreamSession("bob", "s1", queue_size=10)
    if signal == "close":
        session.close("this gateway is shutting down")
        assert session.closing_reason == "this gateway is shutting down"
    else:
        getattr(session, signal)()
        assert (session.gap, session.outage) == ((True, False) if signal == "on_gap" else (False, True))
    assert session.wakeup.is_set()


async def test_a_flood_from_redis_ends_the_slow_session_and_spares_the_one_with_room(hub: PubSubHub,
                                                                                       redis: Redis) -> None:
    slow, roomy = StreamSession("bob", "slow", queue_size=5), StreamSession("bob", "roomy", queue_size=100)
    ending = Ending()
    slow.end = ending
    roomy.end = Ending()
    await hub.subscribe(slow, ["sp:user:{bob}"])
    await hub.subscribe(roomy, ["sp:user:{bob}"])
    async with redis.pipeline(transaction=False) as pipe:
        for offset in range(1, 21):
            pipe.spublish("sp:user:{bob}", message(offset).SerializeToString())
        await pipe.execute()
    await asyncio.wait_for(slow.status_sent.wait(), 10)
    assert ending.sentences == [SLOW_STREAM]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(roomy.queue) < 20 and loop.time() < deadline:
        await asyncio.sleep(0.02)
    assert [m.offset for m, _ in roomy.queue] == list(range(1, 21))
    assert not roomy.overflowed and roomy.ending is None
