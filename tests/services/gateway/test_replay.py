"""Catch-up from the delivery log onto a stream session, next to live delivery through the hub.

Proven here, with a real delivery log and hub on a private redis-server: a message
delivered live and again by the catch-up reaches the client once, whichever came first
(live copies queued during a catch-up are dropped; a catch-up after a gap resumes after
what the stream delivered live); a catch-up longer than one page comes in offset order,
each message once; messages dropped at the log's maximum are announced first with their
exact number; a cursor of an epoch Redis no longer has gets a notice without a number and
the conversation from its start.
"""
from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from services.gateway.hub import PubSubHub
from services.gateway.replay import REPLAY_PAGE, DeliveryReplayer
from services.gateway.stream_session import StreamSession
from spartan import naming
from spartan.config import DeliveryConfig
from spartan.delivery_log import DeliveryLog
from spartan.v1 import pb

DM = naming.dm_conversation("alice", "bob")
DM_CHANNEL = naming.conversation_channel(DM)  # where the delivery log publishes alice -> bob


async def send(log: DeliveryLog, *texts: str) -> None:
    """What SendMsg does for alice -> bob: keep in the delivery log and publish on the conversation's channel."""
    for text in texts:
        payload = pb.Message(id=text, kind=pb.CHAT, sender="alice", recipient="bob", conversation=DM,
                             body=text.encode()).SerializeToString()
        await log.append(DM, payload, sender="alice")


def drain(session: StreamSession) -> list[str]:
    """The handler's rule for live deliveries: forward what is new, remember its position."""
    out = []
    while session.queue:
        message, _ = session.queue.popleft()
        if session.is_new(message):
            session.mark(message)
            out.append(message.id)
    return out


async def catch_up(session: StreamSession, log: DeliveryLog, cursor: pb.Cursor | None) -> list[pb.Message]:
    return [m async for m in DeliveryReplayer(log).replay(session, DM, cursor)]


async def queued(session: StreamSession, count: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(session.queue) < count:
        if loop.time() > deadline:
            raise AssertionError(f"{len(session.queue)} of {count} live deliveries arrived")
        await asyncio.sleep(0.01)


async def test_live_copies_of_what_the_catch_up_replayed_are_dropped(hub: PubSubHub, redis: Redis) -> None:
    log = DeliveryLog(redis, DeliveryConfig())
    await send(log, "waiting 1", "waiting 2")  # kept while bob was away
    session = StreamSession("bob", "s1", queue_size=100)
    await hub.subscribe(session, [DM_CHANNEL])  # the stream subscribes before it catches up
    await send(log, "during catch-up 3", "during catch-up 4")  # published live and kept in the log
    await queued(session, 2)

    replayed = [m.id for m in await catch_up(session, log, None)]
    live = drain(session)
    assert replayed + live == ["waiting 1", "waiting 2", "during catch-up 3", "during catch-up 4"]
    assert live == []  # both were replayed already

    await send(log, "live 5")
    await queued(session, 1)
    assert drain(session) == ["live 5"]


async def test_a_catch_up_after_a_gap_resumes_after_what_was_delivered_live(hub: PubSubHub, redis: Redis) -> None:
    log = DeliveryLog(redis, DeliveryConfig())
    session = StreamSession("bob", "s1", queue_size=100)
    await hub.subscribe(session, [DM_CHANNEL])
    await send(log, "live 1", "live 2")
    await queued(session, 2)
    assert drain(session) == ["live 1", "live 2"]

    await send(log, "missed 3", "missed 4")  # stands for what the hub missed: the live copies are lost
    session.queue.clear()
    await send(log, "live 5")  # the live copy arrives while the catch-up runs
    await queued(session, 1)
    replayed = [m.id for m in await catch_up(session, log, session.cursor(DM))]
    assert replayed == ["missed 3", "missed 4", "live 5"]
    assert drain(session) == []


async def test_a_long_catch_up_comes_in_order_each_message_once(hub: PubSubHub, redis: Redis) -> None:
    log = DeliveryLog(redis, DeliveryConfig())
    count = 2 * REPLAY_PAGE + 50  # three pages
    session = StreamSession("bob", "s1", queue_size=count + 10)
    await hub.subscribe(session, [DM_CHANNEL])
    await send(log, *(f"m{i}" for i in range(1, count + 1)))
    await queued(session, count)  # every one of them is also waiting live
    replayed = await catch_up(session, log, None)
    assert [m.offset for m in replayed] == list(range(1, count + 1))
    assert [m.id for m in replayed] == [f"m{i}" for i in range(1, count + 1)]
    assert drain(session) == []
    assert session.cursor(DM).offset == count


async def test_messages_dropped_at_the_maximum_are_announced_with_their_number(redis: Redis) -> None:
    log = DeliveryLog(redis, DeliveryConfig(max_per_conversation=5))
    await send(log, *(f"m{i}" for i in range(1, 9)))
    session = StreamSession("bob", "s1", queue_size=10)
    replayed = await catch_up(session, log, pb.Cursor(conversation=DM, offset=0))
    assert replayed[0].kind == pb.NOTICE and replayed[0].missing == 3
    assert replayed[0].text == "3 earlier messages can no longer be delivered"
    assert [m.id for m in replayed[1:]] == ["m4", "m5", "m6", "m7", "m8"]


async def test_a_cursor_of_a_lost_epoch_gets_a_notice_and_the_conversation_from_its_start(redis: Redis) -> None:
    log = DeliveryLog(redis, DeliveryConfig())
    await send(log, "new 1", "new 2")
    session = StreamSession("bob", "s1", queue_size=10)
    replayed = await catch_up(session, log, pb.Cursor(conversation=DM, offset=7, epoch="an epoch Redis lost"))
    assert replayed[0].kind == pb.NOTICE and replayed[0].missing == 0
    assert replayed[0].text == (
        "earlier messages may have been lost by the server (it lost its data or switched to a replica)")
    assert [m.id for m in replayed[1:]] == ["new 1", "new 2"]
    assert [m.offset for m in replayed[1:]] == [1, 2]
