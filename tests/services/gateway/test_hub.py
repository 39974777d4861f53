"""The gateway's pub/sub hub against a real private redis-server, with recording mailboxes.

Proven here: `subscribe` returns only once Redis acknowledged, so a publish right after
it is delivered; subscriptions are counted across mailboxes (the channel stays subscribed
until its last mailbox leaves, and Redis then drops it); one mailbox subscribed twice
gets each message once; every mailbox on a channel gets each message, parsed once;
order per channel holds through batches larger than the hub's yield interval; an
undecodable publish is dropped without stopping the next ones; other tasks run between the
messages of a burst that fans out to many mailboxes; closing the hub releases its subscriptions; while Redis is down a
subscription times out with a ConnectionError; a Redis outage tells every mailbox once
that it is lost and once, after the reconnect, that it may have missed messages (whatever
exception broke the connection), and the hub resubscribes every channel, including ones
asked for during the outage; a mailbox told of the outage that subscribes more during it is answered
at once (not subscribed yet) and told of the gap once they are.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from services.gateway.hub import YIELD_EVERY, PubSubHub
from spartan.v1 import pb
from tests.support.mailbox import RecordingMailbox
from tests.support.redis_server import RedisServer


def chat(text: str, conversation: str = "dm:alice:bob") -> bytes:
    return pb.Message(id=text, kind=pb.CHAT, sender="alice", conversation=conversation,
                      body=text.encode()).SerializeToString()


async def subscribers(redis: Redis, channel: str) -> int:
    ((_, count),) = await redis.pubsub_shardnumsub(channel)
    return int(count)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    """Background work (an UNSUBSCRIBE, a reconnect) finishes within a generous bound."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


async def test_a_publish_right_after_subscribe_is_delivered(hub: PubSubHub, redis: Redis) -> None:
    box = RecordingMailbox()
    await hub.subscribe(box, ["sp:user:{bob}"])
    assert await redis.spublish("sp:user:{bob}", chat("first")) == 1  # acknowledged: Redis counts the hub
    await box.wait_for(1)
    assert box.ids == ["first"]
    assert box.raws == [chat("first")]  # the very bytes published, for the stream to forward unchanged


async def test_a_channel_stays_subscribed_until_its_last_mailbox_leaves(hub: PubSubHub, redis: Redis) -> None:
    channel = "sp:group:{team}"
    first, second = RecordingMailbox("first"), RecordingMailbox("second")
    await hub.subscribe(first, [channel])
    await hub.subscribe(second, [channel])
    assert await subscribers(redis, channel) == 1  # one Redis subscription for the whole gateway
    assert hub.channel_count == 1

    hub.unsubscribe(first, [channel])
    await redis.spublish(channel, chat("after one left"))
    await second.wait_for(1)
    assert second.ids == ["after one left"]
    assert await subscribers(redis, channel) == 1
    await asyncio.sleep(0.2)  # a delivery to the mailbox that left would have arrived by now
    assert first.ids == []

    hub.unsubscribe(second, [channel])
    assert hub.channel_count == 0
    await eventually(lambda: _equals(subscribers(redis, channel), 0), "Redis drops the channel")


async def test_one_mailbox_subscribed_twice_gets_each_message_once(hub: PubSubHub, redis: Redis) -> None:
    box = RecordingMailbox()
    await hub.subscribe(box, ["sp:user:{bob}", "sp:user:{bob}"])
    await hub.subscribe(box, ["sp:user:{bob}"])
    await redis.spublish("sp:user:{bob}", chat("once"))
    await redis.spublish("sp:user:{bob}", chat("marker"))
    await box.wait_for(2)
    assert box.ids == ["once", "marker"]


async def test_unsubscribing_a_channel_never_subscribed_changes_nothing(hub: PubSubHub, redis: Redis) -> None:
    box, other = RecordingMailbox(), RecordingMailbox("other")
    await hub.subscribe(box, ["sp:user:{bob}"])
    hub.unsubscribe(other, ["sp:user:{bob}", "sp:user:{nobody}"])
    await redis.spublish("sp:user:{bob}", chat("still here"))
    await box.wait_for(1)
    assert box.ids == ["still here"]


async def test_every_mailbox_on_a_channel_gets_the_message_parsed_once(hub: PubSubHub, redis: Redis) -> None:
    boxes = [RecordingMailbox(f"box{i}") for i in range(50)]
    elsewhere = RecordingMailbox("elsewhere")
    for box in boxes:
        await hub.subscribe(box, ["sp:group:{team}"])
    await hub.subscribe(elsewhere, ["sp:group:{other}"])
    await redis.spublish("sp:group:{team}", chat("to all", "group:team"))
    await redis.spublish("sp:group:{other}", chat("to the other group", "group:other"))
    for box in boxes:
        await box.wait_for(1)
    await elsewhere.wait_for(1)
    assert all(box.ids == ["to all"] for box in boxes)
    assert elsewhere.ids == ["to the other group"]
    assert len({id(box.messages[0]) for box in boxes}) == 1  # parsed once per gateway, not per recipient


async def test_order_per_channel_holds_through_large_batches(hub: PubSubHub, redis: Redis) -> None:
    box = RecordingMailbox()
    await hub.subscribe(box, ["sp:user:{bob}", "sp:group:{team}"])
    count = 2 * YIELD_EVERY + 17  # more than one batch between two yields of the owner task
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(count):
            pipe.spublish("sp:user:{bob}", chat(f"dm {i}"))
            pipe.spublish("sp:group:{team}", chat(f"group {i}", "group:team"))
        await pipe.execute()
    await box.wait_for(2 * count, timeout=30)
    assert [i for i in box.ids if i.startswith("dm ")] == [f"dm {i}" for i in range(count)]
    assert [i for i in box.ids if i.startswith("group ")] == [f"group {i}" for i in range(count)]


async def test_other_tasks_run_between_the_messages_of_a_large_fan_out(hub: PubSubHub, redis: Redis) -> None:
    ticks = 0
    seen: list[int] = []  # the ticker's count at each delivery

    class Watching(RecordingMailbox):
        def deliver(self, message: pb.Message, raw: bytes) -> None:
            seen.append(ticks)
            super().deliver(message, raw)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    boxes = [Watching(f"box{i}") for i in range(4 * YIELD_EVERY)]
    for box in boxes:
        await hub.subscribe(box, ["sp:group:{big}"])
    running = asyncio.ensure_future(ticker())
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(10):
                pipe.spublish("sp:group:{big}", chat(f"m{i}", "group:big"))
            await pipe.execute()
        for box in boxes:
            await box.wait_for(10, timeout=60)
    finally:
        running.cancel()
    assert len(seen) == 10 * len(boxes)
    assert all(box.ids == [f"m{i}" for i in range(10)] for box in boxes)
    # One message reaches all its mailboxes in one go (a delivery is a non-blocking append);
    # between messages, after YIELD_EVERY deliveries, the owner task lets other tasks run.
    assert seen[-1] > seen[0], "the event loop ran nothing else while ten messages fanned out"


async def test_closing_the_hub_releases_its_redis_subscriptions(gateway_redis: Redis, redis: Redis) -> None:
    hub = PubSubHub(gateway_redis)
    hub.start()
    await hub.subscribe(RecordingMailbox(), ["sp:user:{bob}"], timeout=15)
    assert await subscribers(redis, "sp:user:{bob}") == 1
    await hub.close()
    await eventually(lambda: _equals(subscribers(redis, "sp:user:{bob}"), 0), "the subscription is released")


async def test_an_undecodable_publish_is_dropped_and_the_next_one_delivered(hub: PubSubHub, redis: Redis) -> None:
    box = RecordingMailbox()
    await hub.subscribe(box, ["sp:user:{bob}"])
    await redis.spublish("sp:user:{bob}", b"\xff\xff\xff not a protobuf")
    await redis.spublish("sp:user:{bob}", chat("after the bad one"))
    await box.wait_for(1)
    await asyncio.sleep(0.1)
    assert box.ids == ["after the bad one"]


async def test_subscribing_many_channels_at_once_waits_for_every_acknowledgement(hub: PubSubHub,
                                                                                  redis: Redis) -> None:
    box = RecordingMailbox()
    channels = [f"sp:user:{{u{i}}}" for i in range(200)]
    await hub.subscribe(box, channels)
    for channel in channels:  # no waiting: every one is acknowledged already
        assert await redis.spublish(channel, chat(channel)) == 1
    await box.wait_for(len(channels))
    assert box.ids == channels


async def test_concurrent_subscribes_to_one_channel_all_return_acknowledged(hub: PubSubHub, redis: Redis) -> None:
    boxes = [RecordingMailbox(f"box{i}") for i in range(20)]
    await asyncio.gather(*(hub.subscribe(box, ["sp:group:{team}"]) for box in boxes))
    assert await redis.spublish("sp:group:{team}", chat("hello", "group:team")) == 1
    for box in boxes:
        assert (await box.wait_for(1))[0].id == "hello"


async def test_resubscribing_right_after_the_last_mailbox_left_keeps_the_channel(hub: PubSubHub,
                                                                                 redis: Redis) -> None:
    leaving, arriving = RecordingMailbox("leaving"), RecordingMailbox("arriving")
    await hub.subscribe(leaving, ["sp:user:{bob}"])
    hub.unsubscribe(leaving, ["sp:user:{bob}"])  # queued; the owner task has not run it yet
    await hub.subscribe(arriving, ["sp:user:{bob}"])
    await asyncio.sleep(0.2)  # the queued UNSUBSCRIBE has run by now
    assert await redis.spublish("sp:user:{bob}", chat("for the new stream")) == 1
    await arriving.wait_for(1)
    assert arriving.ids == ["for the new stream"] and leaving.ids == []


async def test_subscribing_while_redis_is_down_times_out_with_a_connection_error(
        hub: PubSubHub, redis_server: RedisServer) -> None:
    redis_server.kill()
    await asyncio.sleep(0.3)
    with pytest.raises(redis.exceptions.ConnectionError, match="acknowledge the subscription"):
        await hub.subscribe(RecordingMailbox(), ["sp:user:{bob}"], timeout=0.5)


async def test_an_outage_tells_every_mailbox_once_and_the_hub_resubscribes_after_it(
        hub: PubSubHub, redis_server: RedisServer, redis: Redis) -> None:
    bob, team = RecordingMailbox("bob"), RecordingMailbox("team")
    await hub.subscribe(bob, ["sp:user:{bob}"])
    await hub.subscribe(team, ["sp:group:{team}"])
    await hub.subscribe(team, ["sp:user:{carol}"])  # a mailbox on two channels is still told once

    redis_server.kill()
    await bob.wait_outage()
    await team.wait_outage()
    assert not hub.connected.is_set()
    late = RecordingMailbox("late")  # a stream that opens during the outage waits for the reconnect
    late_subscribe = asyncio.ensure_future(hub.subscribe(late, ["sp:user:{dave}"], timeout=60))
    await asyncio.sleep(0.5)
    assert not late_subscribe.done()

    redis_server.start()
    await bob.wait_gap()
    await team.wait_gap()
    await late_subscribe
    assert hub.connected.is_set()
    assert (bob.outages, bob.gaps, team.outages, team.gaps) == (1, 1, 1, 1)

    for channel in ("sp:user:{bob}", "sp:group:{team}", "sp:user:{carol}", "sp:user:{dave}"):
        await redis.spublish(channel, chat(f"after on {channel}"))
    await bob.wait_for(1)
    await team.wait_for(2)
    await late.wait_for(1)
    assert bob.ids == ["after on sp:user:{bob}"]
    assert sorted(team.ids) == ["after on sp:group:{team}", "after on sp:user:{carol}"]
    assert late.ids == ["after on sp:user:{dave}"]
    assert late.outages == 0  # it was not subscribed when the connection was lost


async def test_a_mailbox_told_of_the_outage_subscribing_more_is_answered_at_once_and_gets_the_gap(
        hub: PubSubHub, redis_server: RedisServer, redis: Redis) -> None:
    """A stream on a lost connection that follows one more conversation (a 1:1 chat started through a
    channel on a node still up, on a cluster) must not wait for the connection, nor end: its gap comes."""
    bob = RecordingMailbox("bob")
    await hub.subscribe(bob, ["sp:user:{bob}"])
    redis_server.kill()
    await bob.wait_outage()
    assert await asyncio.wait_for(hub.subscribe(bob, ["sp:ch:{dm:alice:bob}"], timeout=60), 1.0) is False

    redis_server.start()
    await bob.wait_gap()
    assert (bob.outages, bob.gaps) == (1, 1)
    assert await redis.spublish("sp:ch:{dm:alice:bob}", chat("after the outage")) == 1
    await bob.wait_for(1)
    assert bob.ids == ["after the outage"]
    assert await hub.subscribe(bob, ["sp:ch:{dm:alice:bob}"]) is True


async def test_a_second_outage_is_told_again(hub: PubSubHub, redis_server: RedisServer, redis: Redis) -> None:
    box = RecordingMailbox()
    await hub.subscribe(box, ["sp:user:{bob}"])
    for round_ in (1, 2):
        redis_server.kill()
        await box.until(lambda n=round_: box.outages == n, 30, lambda n=round_: f"outage {n} not told")
        redis_server.start()
        await box.until(lambda n=round_: box.gaps == n, 30, lambda n=round_: f"gap {n} not told")
    await eventually(lambda: _equals(subscribers(redis, "sp:user:{bob}"), 1), "resubscribed")
    await redis.spublish("sp:user:{bob}", chat("after two outages"))
    await box.wait_for(1)
    assert box.ids == ["after two outages"]


async def test_a_restart_shorter_than_the_retry_window_still_accounts_for_every_message(
        hub: PubSubHub, redis_server: RedisServer, redis: Redis) -> None:
    """A publish made after Redis is back but before the hub resubscribed reaches no one: the
    mailbox must then be told of a gap (so its stream replays the delivery log), whoever noticed
    the dropped connection first, the hub or the Redis client's own retries."""
    box = RecordingMailbox()
    await hub.subscribe(box, ["sp:user:{bob}"])
    redis_server.kill()
    await asyncio.to_thread(redis_server.start)  # back within a few tens of milliseconds
    reached = await redis.spublish("sp:user:{bob}", chat("right after the restart"))
    await eventually(lambda: _equals(subscribers(redis, "sp:user:{bob}"), 1), "resubscribed")
    await redis.spublish("sp:user:{bob}", chat("once resubscribed"))
    await box.wait_for(1)
    assert box.ids[-1] == "once resubscribed"
    if reached == 0:
        assert box.gaps >= 1, ("a message published while the hub was not subscribed was neither delivered "
                               "nor announced as a gap")
    else:
        assert box.ids == ["right after the restart", "once resubscribed"]


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_a_failure_that_is_not_a_connection_error_is_still_told_as_an_outage_and_a_gap(
        hub: PubSubHub, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py on uvloop raises RuntimeError, not ConnectionError, when it writes to a transport
    Redis closed. Whatever the exception, the subscriptions on that connection are gone: streams
    must hear "Reconnecting…" and then replay the gap, never only the second half."""
    box = RecordingMailbox()
    await hub.subscribe(box, ["sp:user:{bob}"])
    read = PubSub.get_message
    failures = iter([RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed")])

    async def fails_once(self: PubSub, *args: object, **kwargs: object) -> object:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return await read(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PubSub, "get_message", fails_once)
    await box.wait_gap()
    assert (box.outages, box.gaps) == (1, 1)
    await redis.spublish("sp:user:{bob}", chat("after the failure"))
    await box.wait_for(1)
    assert box.ids == ["after the failure"]


async def test_a_stream_opening_while_its_channel_is_being_unsubscribed_still_gets_messages(
        hub: PubSubHub, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's last stream closes (the hub sends UNSUBSCRIBE) and the user's new stream opens while that
    UNSUBSCRIBE is on its way: the new stream must not be told it is connected on a channel Redis is about
    to drop (a restarted client got nothing, about one run in three)."""
    leaving, arriving = RecordingMailbox("leaving"), RecordingMailbox("arriving")
    await hub.subscribe(leaving, ["sp:user:{alice}"])
    unsubscribe = PubSub.sunsubscribe
    sending = asyncio.Event()

    async def slow_unsubscribe(self: PubSub, *args: object) -> object:
        sending.set()
        await asyncio.sleep(0.3)  # the UNSUBSCRIBE is on its way: the owner task waits on the connection
        return await unsubscribe(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(PubSub, "sunsubscribe", slow_unsubscribe)
    hub.unsubscribe(leaving, ["sp:user:{alice}"])
    await asyncio.wait_for(sending.wait(), 5)
    await hub.subscribe(arriving, ["sp:user:{alice}"], timeout=5)  # returns once Redis acknowledged
    await asyncio.sleep(0.5)  # the UNSUBSCRIBE has reached Redis by now
    assert await redis.spublish("sp:user:{alice}", chat("for the new stream")) == 1
    await arriving.wait_for(1)
    assert arriving.ids == ["for the new stream"] and leaving.ids == []


async def test_a_subscription_acknowledged_after_its_unsubscribe_was_sent_is_not_taken_as_current(
        hub: PubSubHub, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream closes before its SUBSCRIBE was acknowledged (a loaded Redis answers later than the hub's
    20 ms poll): the UNSUBSCRIBE goes out, then both acknowledgements arrive. The late "subscribe" must not
    make the hub believe the channel is subscribed, or the next stream would be told it is connected on a
    channel Redis dropped."""
    brief, later = RecordingMailbox("brief"), RecordingMailbox("later")
    read, subscribe, unsubscribe = PubSub.get_message, PubSub.ssubscribe, PubSub.sunsubscribe
    holding = True  # the acknowledgements have not arrived yet: reads find nothing
    subscribed_sent, unsubscribe_sent = asyncio.Event(), asyncio.Event()

    async def get_message(self: PubSub, *args: object, **kwargs: object) -> object:
        if holding:
            await asyncio.sleep(0.01)
            return None
        return await read(self, *args, **kwargs)  # type: ignore[arg-type]

    async def sending_subscribe(self: PubSub, *args: object) -> object:
        result = await subscribe(self, *args)  # type: ignore[arg-type]
        subscribed_sent.set()
        return result

    async def sending_unsubscribe(self: PubSub, *args: object) -> object:
        result = await unsubscribe(self, *args)  # type: ignore[arg-type]
        unsubscribe_sent.set()
        return result

    monkeypatch.setattr(PubSub, "get_message", get_message)
    monkeypatch.setattr(PubSub, "ssubscribe", sending_subscribe)
    monkeypatch.setattr(PubSub, "sunsubscribe", sending_unsubscribe)
    first = asyncio.ensure_future(hub.subscribe(brief, ["sp:user:{carol}"], timeout=5))
    await asyncio.wait_for(subscribed_sent.wait(), 5)
    hub.unsubscribe(brief, ["sp:user:{carol}"])  # it leaves before Redis acknowledged its SUBSCRIBE
    await asyncio.wait_for(unsubscribe_sent.wait(), 5)
    holding = False  # now both acknowledgements arrive, "subscribe" first
    await first
    await eventually(lambda: _equals(subscribers(redis, "sp:user:{carol}"), 0), "unsubscribed")
    await hub.subscribe(later, ["sp:user:{carol}"], timeout=5)
    assert await redis.spublish("sp:user:{carol}", chat("for the later stream")) == 1
    await later.wait_for(1)
    assert later.ids == ["for the later stream"]
