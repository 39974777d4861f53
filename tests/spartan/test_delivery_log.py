"""The delivery log's Redis scripts against a real private Redis.

Proven here: appends get consecutive offsets under one epoch; a read after -1 starts
after the reader's acknowledged offset; an acknowledgement trims only what every
member has, and one of another epoch changes nothing; the per-conversation maximum
drops the oldest and `Page.missing` counts them exactly; the retention expiry removes
the log but keeps its meta (so the expired messages are counted as missing); members
who join start after the newest offset; a Redis that lost its data starts a new epoch.
"""
from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from spartan.config import DeliveryConfig
from spartan.delivery_log import DeliveryLog, Page, conversation_keys
from spartan.v1 import pb
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.on_cluster  # the same behaviour on one Redis and on a Redis Cluster

DM = "dm:alice:bob"
MEMBERS = ("alice", "bob")


def make_log(redis: Redis, **settings: float) -> DeliveryLog:
    return DeliveryLog(redis, DeliveryConfig(**settings))  # type: ignore[arg-type]


async def append_texts(log: DeliveryLog, texts: list[str], conversation: str = DM, sender: str = "alice") -> list[int]:
    offsets = []
    for text in texts:
        payload = pb.Message(id=text, kind=pb.CHAT, sender=sender, body=text.encode(),
                             conversation=conversation).SerializeToString()
        offsets.append((await log.append(conversation, payload, sender=sender)).offset)
    return offsets


def bodies(page: Page) -> list[str]:
    return [message.body.decode() for message in page.messages]


async def held(redis: Redis, conversation: str = DM) -> int:
    return int(await redis.llen(conversation_keys(conversation)[1]))


async def test_append_assigns_consecutive_offsets_one_epoch_and_server_fields(redis: Redis) -> None:
    log = make_log(redis)
    offsets = await append_texts(log, ["a", "b", "c"])
    assert offsets == [1, 2, 3]
    page = await log.read(DM, 0, 100)
    assert bodies(page) == ["a", "b", "c"]
    assert [m.offset for m in page.messages] == [1, 2, 3]
    assert page.epoch and {m.epoch for m in page.messages} == {page.epoch}
    assert all(m.sent_at_us > 0 for m in page.messages)
    assert (page.last_offset, page.first_offset, page.after_offset, page.missing) == (3, 1, 0, 0)

    after_one = await log.read(DM, 1, 1)
    assert bodies(after_one) == ["b"]  # the limit holds
    assert bodies(await log.read(DM, 3, 100)) == []


async def test_unknown_conversation_reads_empty(redis: Redis) -> None:
    page = await make_log(redis).read("dm:charlie:eve", -1, 10, "eve")
    assert (page.last_offset, page.epoch, page.first_offset, page.missing, list(page.messages)) == (0, "", 0, 0, [])


async def test_read_after_minus_one_starts_after_the_users_ack(redis: Redis) -> None:
    log = make_log(redis)
    await append_texts(log, ["a", "b", "c", "d"])
    first = await log.read(DM, -1, 100, "bob")
    assert first.after_offset == 0 and bodies(first) == ["a", "b", "c", "d"]
    await log.ack(DM, "bob", first.epoch, 2, MEMBERS)
    page = await log.read(DM, -1, 100, "bob")
    assert page.after_offset == 2 and bodies(page) == ["c", "d"] and page.missing == 0
    # The sender's own ack moved with each of her consecutive appends.
    assert (await log.read(DM, -1, 100, "alice")).after_offset == 4


async def test_ack_trims_only_what_every_member_acknowledged(redis: Redis) -> None:
    log = make_log(redis)
    await append_texts(log, ["a", "b", "c", "d", "e"], sender="")  # no sender ack: nobody has anything
    epoch = (await log.read(DM, 0, 1)).epoch
    assert await log.ack(DM, "bob", epoch, 4, MEMBERS) == 0  # alice has nothing yet
    assert await held(redis) == 5
    assert await log.ack(DM, "alice", epoch, 2, MEMBERS) == 2  # both have 1..2
    assert await held(redis) == 3
    page = await log.read(DM, 0, 100)
    assert page.first_offset == 3 and bodies(page) == ["c", "d", "e"]
    assert await log.ack(DM, "alice", epoch, 99, MEMBERS) == 2  # clamped to last; bob still lacks 5
    assert bodies(await log.read(DM, 0, 100)) == ["e"]
    assert await log.ack(DM, "bob", epoch, 5, MEMBERS) == 1
    assert not await redis.exists(conversation_keys(DM)[1])
    after_all = await log.read(DM, -1, 100, "bob")
    assert (after_all.last_offset, after_all.first_offset, after_all.missing) == (5, 0, 0)
    # An acknowledgement never moves back.
    await log.ack(DM, "bob", epoch, 1, MEMBERS)
    assert (await log.read(DM, -1, 100, "bob")).after_offset == 5


async def test_ack_with_a_stale_epoch_is_ignored(redis: Redis) -> None:
    log = make_log(redis)
    await append_texts(log, ["a", "b", "c"])
    assert await log.ack(DM, "bob", "not-the-epoch", 3, MEMBERS) == 0
    assert await held(redis) == 3
    page = await log.read(DM, -1, 100, "bob")
    assert page.after_offset == 0 and bodies(page) == ["a", "b", "c"]


async def test_maximum_drops_the_oldest_and_missing_counts_them_exactly(redis: Redis) -> None:
    log = make_log(redis, max_per_conversation=10)
    dropped = []
    for i in range(1, 16):
        payload = pb.Message(id=str(i), kind=pb.CHAT, body=str(i).encode()).SerializeToString()
        dropped.append((await log.append(DM, payload, sender="alice")).dropped)
    assert dropped == [0] * 10 + [1] * 5
    page = await log.read(DM, -1, 100, "bob")
    assert (page.last_offset, page.first_offset, page.missing) == (15, 6, 5)
    assert bodies(page) == [str(i) for i in range(6, 16)]
    assert (await log.read(DM, 3, 100)).missing == 2  # a cursor inside the dropped range
    assert (await log.read(DM, 5, 100)).missing == 0
    assert (await log.read(DM, 15, 100)).missing == 0


async def test_retention_expires_the_log_keeps_meta_and_counts_the_expired(redis: Redis) -> None:
    log = make_log(redis, retention_days=1 / 86400)  # one second, the shortest retention
    await append_texts(log, ["a", "b", "c"])
    meta, log_key, _ = conversation_keys(DM)
    assert await redis.ttl(log_key) in (0, 1)
    deadline = time.monotonic() + 5
    while await redis.exists(log_key):
        assert time.monotonic() < deadline, "the log did not expire"
        await asyncio.sleep(0.1)
    assert await redis.exists(meta)
    page = await log.read(DM, -1, 100, "bob")
    assert (page.last_offset, page.first_offset, page.missing, list(page.messages)) == (3, 0, 3, [])
    assert (await log.read(DM, -1, 100, "alice")).missing == 0  # the sender had them all
    await append_texts(log, ["d"])  # offsets go on after an expiry
    page = await log.read(DM, -1, 100, "bob")
    assert (page.first_offset, page.missing, bodies(page)) == (4, 3, ["d"])


async def test_join_starts_new_members_after_the_newest_offset(redis: Redis) -> None:
    log = make_log(redis)
    group = "group:team"
    await append_texts(log, ["a", "b", "c"], conversation=group)
    await log.join(group, ["foo"])
    page = await log.read(group, -1, 100, "foo")
    assert (page.after_offset, page.missing, list(page.messages)) == (3, 0, [])
    await append_texts(log, ["d"], conversation=group)
    assert bodies(await log.read(group, -1, 100, "foo")) == ["d"]


async def test_flushall_gives_a_new_epoch_and_restarts_offsets(redis: Redis) -> None:
    log = make_log(redis)
    await append_texts(log, ["a", "b"])
    before = (await log.read(DM, 0, 10)).epoch
    await redis.flushall()
    assert await append_texts(log, ["c"]) == [1]
    page = await log.read(DM, 0, 10)
    assert page.epoch and page.epoch != before
    assert bodies(page) == ["c"]
    assert await log.ack(DM, "bob", before, 2, MEMBERS) == 0  # an old-epoch position changes nothing
    assert await held(redis) == 1


async def test_a_promoted_replica_starts_a_new_epoch_and_keeps_counting(redis_server: RedisServer) -> None:
    """Replication is asynchronous: a replica promoted when its primary dies may lack the newest appends
    and would hand their offsets out again; readers that have those offsets would skip the new
    messages. A new epoch makes them read again (and say so) instead. A restart is no failover."""
    replica_server = RedisServer().start()
    primary, replica = Redis.from_url(redis_server.url), Redis.from_url(replica_server.url)
    try:
        await replica.replicaof("127.0.0.1", redis_server.port)
        primary_log, replica_log = make_log(primary), make_log(replica)
        assert await append_texts(primary_log, ["a", "b"]) == [1, 2]
        before = (await primary_log.read(DM, 0, 10)).epoch
        while (await replica_log.read(DM, 0, 10)).last_offset < 2:
            await asyncio.sleep(0.01)  # replicated
        await replica.replicaof("NO", "ONE")  # the failover: the replica is the primary now
        assert await append_texts(replica_log, ["c"]) == [3]
        page = await replica_log.read(DM, 0, 10)
        assert page.epoch != before and page.last_offset == 3  # counting goes on, in a new epoch
        assert [m.epoch for m in page.messages] == [before, before, page.epoch]
        assert await append_texts(replica_log, ["d"]) == [4]
        assert (await replica_log.read(DM, 0, 10)).epoch == page.epoch, "one new epoch per failover"
        await primary.aclose()
        redis_server.restart()  # no persistence here: the old primary comes back empty
        primary = Redis.from_url(redis_server.url)
        assert await append_texts(make_log(primary), ["e"]) == [1]  # a new epoch as for any lost data
    finally:
        await primary.aclose()
        await replica.aclose()
        replica_server.close()


async def test_a_restart_with_its_data_keeps_the_epoch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = RedisServer(appendonly=True, directory=tmp_path / "redis").start()
    client = Redis.from_url(server.url)
    try:
        log = make_log(client)
        await append_texts(log, ["a"])
        before = (await log.read(DM, 0, 10)).epoch
        await client.aclose()
        server.restart()  # a new replication id, never a replica: nothing was lost
        client = Redis.from_url(server.url)
        log = make_log(client)
        assert await append_texts(log, ["b"]) == [2]
        assert (await log.read(DM, 0, 10)).epoch == before
    finally:
        await client.aclose()
        server.close()
