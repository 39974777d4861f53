"""The delivery log when Redis loses or bounds what it keeps, with real processes.

Proven here, against the shipped config (5 messages of recent history per conversation):
a Redis restarted from its AOF keeps what an offline user has not had; a Redis that lost
its data is announced as a lost epoch and the new epoch is delivered, also when it is
met live; the per-conversation maximum is announced with the exact number of messages
lost; acknowledged messages leave Redis.

Every stack raises only the send rate (SENDS): these tests send far more than the
shipped 3 calls per 30 s per user. Other settings changed by a test say why where
they are set.
"""
from __future__ import annotations

from redis.asyncio import Redis

from spartan.client.headless import HeadlessClient
from spartan.delivery_log import conversation_keys
from spartan.v1 import pb
from tests.support.delivery import (
    DM,
    SENDS,
    is_empty,
    assert_exactly,
    chats,
    connect_when_up,
    eventually,
    record_arrivals,
    register,
    send_all,
    texts,
)


async def test_redis_restarted_from_its_aof_keeps_what_an_offline_user_has_not_had(
        stack_factory, open_client) -> None:
    stack = stack_factory(gateways=2, appendonly=True, settings=SENDS)
    await register(open_client, "bob", [stack.address(2)])
    alice = await open_client("alice", [stack.address(1)])
    expected = texts("kept", 10)
    await send_all(alice, "bob", expected)

    stack.redis.restart()  # SIGTERM, then the same folder and port: the AOF is replayed
    bob = await connect_when_up(open_client, "bob", [stack.address(2), stack.address(1)], timeout=60)
    await bob.wait_for(10, timeout=60)
    await bob.synced.wait()
    assert_exactly(bob.texts(), expected)
    notices = [e for e in bob.events if e.kind == pb.NOTICE and e.conversation]
    assert not notices, f"nothing was lost, yet: {[n.text for n in notices]}"


async def test_redis_that_lost_its_data_is_announced_and_the_new_epoch_delivered(stack_factory, open_client) -> None:
    """Without AOF a restarted Redis is empty: a returning client's cursor names a lost epoch."""
    stack = stack_factory(gateways=2, settings=SENDS)
    # Unencrypted: the key directory lives in the same Redis and is lost with it.
    alice = await open_client("alice", [stack.address(1)], encrypt=False)
    bob = await open_client("bob", [stack.address(2)], encrypt=False, persist=True)
    await send_all(alice, "bob", texts("old", 3))
    await bob.wait_for(3)
    await bob.close()

    stack.redis.kill()
    stack.redis.start()
    await eventually(lambda: _sent(alice, "bob", "new 000"), timeout=30, what="alice can send again")
    await send_all(alice, "bob", texts("new", 2, start=1))
    arrivals: list[pb.Message] = []
    later = await connect_when_up(open_client, "bob", [stack.address(2), stack.address(1)], timeout=60,
                                  arrivals=arrivals, encrypt=False, persist=True)
    await later.wait_for(3, timeout=30)
    lost = [m for m in arrivals if m.kind == pb.NOTICE and m.conversation == DM]
    assert len(lost) == 1 and lost[0].missing == 0, "a lost epoch is announced without a number"
    assert_exactly(later.texts(), texts("new", 3))
    assert [m.offset for m in chats(arrivals)] == [1, 2, 3]  # offsets start again in the new epoch
    assert later.positions[DM] == (lost[0].epoch, 3)


async def test_a_new_epoch_met_live_is_announced_and_read_from_its_start(stack_factory, open_client) -> None:
    """The log starts again while bob's stream stays open (a replica that took over before anything was
    read from it): the first message of the new epoch that reaches bob live makes his stream say that
    earlier messages may be gone and read the new epoch from its start, not take it as the next one."""
    stack = stack_factory(gateways=1)  # the shipped rate: three sends
    alice = await open_client("alice", [stack.address(1)])
    bob = await open_client("bob", [stack.address(1)])
    arrivals = record_arrivals(bob, [])
    await send_all(alice, "bob", ["old 000"])
    await bob.wait_for(1)
    redis = Redis.from_url(stack.redis.url)
    try:
        await redis.delete(*conversation_keys(DM))  # the conversation's log and counter, as a lost write would
    finally:
        await redis.aclose()
    await send_all(alice, "bob", texts("new", 2))
    await bob.wait_for(3)
    lost = [m for m in arrivals if m.kind == pb.NOTICE and m.conversation == DM]
    assert len(lost) == 1 and lost[0].missing == 0, [m.text for m in arrivals]
    assert arrivals.index(lost[0]) < arrivals.index(chats(arrivals)[1])  # said before the new epoch's first
    assert_exactly(bob.texts(), ["old 000", *texts("new", 2)])
    assert bob.positions[DM] == (lost[0].epoch, 2)


async def _sent(client: HeadlessClient, peer: str, text: str) -> bool:
    try:
        await client.send(peer, text)
    except Exception:  # noqa: BLE001 - refused while the services reconnect to Redis
        return False
    return True


async def test_per_conversation_maximum_is_announced_with_the_exact_count(stack_factory, open_client) -> None:
    # A maximum of 10 per conversation (shipped: 10000) reaches the bound with 15 sends.
    stack = stack_factory(gateways=2, settings={**SENDS, "SPARTAN_DELIVERY__MAX_PER_CONVERSATION": "10"})
    await register(open_client, "bob", [stack.address(2)])
    alice = await open_client("alice", [stack.address(1)])
    await send_all(alice, "bob", texts("n", 15, start=1))

    arrivals: list[pb.Message] = []
    bob = await open_client("bob", [stack.address(2)], arrivals=arrivals)
    await bob.wait_for(10, timeout=30)
    await bob.synced.wait()
    about_dm = [m for m in arrivals if m.kind == pb.NOTICE and m.conversation == DM]
    assert len(about_dm) == 1 and about_dm[0].missing == 5, [(m.text, m.missing) for m in about_dm]
    first_chat = next(i for i, m in enumerate(arrivals) if m.kind == pb.CHAT)
    assert arrivals.index(about_dm[0]) < first_chat, "the notice comes before the messages"
    assert_exactly(bob.texts(), texts("n", 10, start=6))


async def test_acknowledged_messages_leave_redis(stack_factory, open_client) -> None:
    stack = stack_factory(gateways=2, settings=SENDS)
    bob = await open_client("bob", [stack.address(2)])
    alice = await open_client("alice", [stack.address(1)])
    await send_all(alice, "bob", texts("acked", 12))
    await bob.wait_for(12, timeout=30)
    meta, log, acks = conversation_keys(DM)
    redis = Redis.from_url(stack.redis.url)
    try:
        await eventually(lambda: is_empty(redis, log), timeout=10, what=f"{log} is empty")
        assert int(await redis.hget(meta, "last")) == 12  # the meta stays: offsets go on
        assert {k.decode(): int(v) for k, v in (await redis.hgetall(acks)).items()} == {"alice": 12, "bob": 12}
    finally:
        await redis.aclose()


# ------------------------------------------------------- process helpers
