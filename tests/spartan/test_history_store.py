"""HistoryStore on a real redis-server: offsets, epochs, publishing, trimming, the global LRU, errors."""
from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from spartan import naming
from spartan.config import RedisConfig
from spartan.errors import InvalidArgument, Unavailable
from spartan.history_store import KEY_PREFIX, LRU_KEY, HistoryStore
from spartan.redis_conn import connect
from spartan.redis_pipeline import AutoPipeline
from spartan.v1 import pb
from tests.support.redis_server import RedisServer


DM = naming.dm_conversation("alice", "bob")
GROUP = naming.group_conversation("team")


def chat(conversation: str, text: str, sender: str = "alice") -> pb.Message:
    return pb.Message(id=f"id-{text}", kind=pb.CHAT, sender=sender, conversation=conversation,
                      body=text.encode())


def bodies(response: pb.HistoryResponse) -> list[str]:
    return [m.body.decode() for m in response.messages]


SCRIPTS_THROUGH = {"pipeline": False}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Scripts through the connection pool (the history service) on one Redis and on a cluster, and
    through an AutoPipeline (the gateway's send path: one connection to one Redis) on one Redis."""
    if "redis" in metafunc.fixturenames and "redis_server" not in metafunc.fixturenames:
        metafunc.parametrize(("backbone", "scripts_through"),
                             [("single", "pool"), ("single", "pipeline"), ("cluster", "pool")], indirect=True)
    else:
        metafunc.parametrize("scripts_through", ["pool", "pipeline"], indirect=True)


PARAMETRIZES_BACKBONE = True  # for tests/conftest.py: this module names its own combinations


@pytest.fixture(autouse=True)
def scripts_through(request: pytest.FixtureRequest) -> str:
    SCRIPTS_THROUGH["pipeline"] = request.param == "pipeline"
    return str(request.param)


def store_on(redis: Redis, **overrides: int) -> HistoryStore:
    settings = {"per_conversation": 100, "max_conversations": 100, "max_read_limit": 50} | overrides
    pipeline = AutoPipeline(redis) if SCRIPTS_THROUGH["pipeline"] else None
    return HistoryStore(redis, **settings, pipeline=pipeline)


async def test_append_assigns_offset_epoch_and_sent_at(redis: Redis) -> None:
    store = store_on(redis)
    before_us = int(time.time() * 1e6)
    first = await store.append(chat(DM, "hello"))
    second = await store.append(chat(DM, "again"))
    after_us = int(time.time() * 1e6)

    assert (first.id, first.conversation, first.offset) == ("id-hello", DM, 1)
    assert second.offset == 2
    assert first.epoch and first.epoch == second.epoch
    assert before_us - 1_000_000 <= first.sent_at_us <= second.sent_at_us <= after_us + 1_000_000

    history = await store.read(DM)
    assert [m.offset for m in history.messages] == [1, 2]
    assert bodies(history) == ["hello", "again"]
    assert history.messages[0].epoch == first.epoch
    assert history.messages[0].sent_at_us == first.sent_at_us
    assert (history.epoch, history.last_offset, history.first_offset) == (first.epoch, 2, 1)


async def test_append_ignores_client_supplied_server_fields(redis: Redis) -> None:
    store = store_on(redis)
    forged = chat(DM, "forged")
    forged.offset, forged.epoch, forged.sent_at_us = 999, "fake", 5
    ack = await store.append(forged)
    stored = (await store.read(DM)).messages[0]
    assert (stored.offset, stored.epoch, stored.sent_at_us) == (1, ack.epoch, ack.sent_at_us)
    assert forged.offset == 999  # the caller's object is left alone


async def test_stored_bytes_are_the_complete_message(redis: Redis) -> None:
    store = store_on(redis)
    original = chat(DM, "kept")
    original.recipient = "bob"
    ack = await store.append(original)
    expected = pb.Message()
    expected.CopyFrom(original)
    expected.offset, expected.epoch, expected.sent_at_us = ack.offset, ack.epoch, ack.sent_at_us
    assert (await store.read(DM)).messages[0] == expected


async def test_append_raw_stores_the_given_bytes(redis: Redis) -> None:
    store = store_on(redis)
    payload = chat(GROUP, "raw", sender="carol").SerializeToString()
    ack = await store.append_raw(GROUP, payload)
    assert (ack.id, ack.offset) == ("", 1)
    stored = (await store.read(GROUP)).messages[0]
    assert (stored.sender, stored.body, stored.offset, stored.epoch) == ("carol", b"raw", 1, ack.epoch)


async def test_log_is_trimmed_to_per_conversation_newest(redis: Redis) -> None:
    store = store_on(redis, per_conversation=3)
    for i in range(1, 8):
        await store.append(chat(DM, f"m{i}"))
    history = await store.read(DM)
    assert bodies(history) == ["m5", "m6", "m7"]
    assert (history.first_offset, history.last_offset) == (5, 7)


async def test_read_after_offset_and_limit_use_offsets(redis: Redis) -> None:
    store = store_on(redis, per_conversation=5)
    for i in range(1, 10):
        await store.append(chat(DM, f"m{i}"))
    assert bodies(await store.read(DM, after_offset=6)) == ["m7", "m8", "m9"]
    assert bodies(await store.read(DM, after_offset=2)) == ["m5", "m6", "m7", "m8", "m9"]
    assert bodies(await store.read(DM, after_offset=2, limit=2)) == ["m5", "m6"]
    assert bodies(await store.read(DM, after_offset=7, limit=10)) == ["m8", "m9"]
    caught_up = await store.read(DM, after_offset=9)
    assert (list(caught_up.messages), caught_up.last_offset, caught_up.first_offset) == ([], 9, 5)


async def test_unknown_conversation_reads_empty_and_creates_nothing(redis: Redis) -> None:
    store = store_on(redis)
    history = await store.read(naming.group_conversation("nobody"))
    assert (list(history.messages), history.epoch, history.last_offset, history.first_offset) == ([], "", 0, 0)
    assert await redis.keys(KEY_PREFIX + "*") == []


@pytest.mark.parametrize(
    ("conversation", "after_offset", "limit", "fragment"),
    [
        (DM, 3, 0, f"offset 3 is in the future of conversation {DM}"),
        (GROUP, 1, 0, f"offset 1 is in the future of conversation {GROUP}"),
        (DM, -1, 0, "after_offset must not be negative"),
        (DM, 0, -1, "limit must not be negative"),
        (DM, 0, 51, "limit 51 is above the maximum of 50"),
        ("dm:alice", 0, 0, "malformed conversation"),
        ("dm:bob:alice", 0, 0, "sorted order"),
        ("group:", 0, 0, "malformed conversation"),
        ("chan:x", 0, 0, "malformed conversation"),
        ("", 0, 0, "conversation is not set"),
    ],
)
async def test_read_rejects_bad_arguments(redis: Redis, conversation: str, after_offset: int, limit: int,
                                          fragment: str) -> None:
    store = store_on(redis)
    await store.append(chat(DM, "one"))
    await store.append(chat(DM, "two"))
    with pytest.raises(InvalidArgument, match=fragment):
        await store.read(conversation, after_offset, limit)


async def test_append_requires_a_wellformed_conversation(redis: Redis) -> None:
    store = store_on(redis)
    with pytest.raises(InvalidArgument, match="conversation is not set"):
        await store.append(pb.Message(id="x", body=b"no conversation"))
    with pytest.raises(InvalidArgument, match="malformed"):
        await store.append_raw("dm:alice:", b"")


async def test_lru_evicts_least_recently_used_and_reads_count_as_use(redis: Redis) -> None:
    store = store_on(redis, max_conversations=3)
    a, b, c, d, e = (naming.group_conversation(name) for name in "abcde")
    for conversation in (a, b, c):
        await store.append(chat(conversation, "x"))
    await store.read(a)  # a is now the most recently used: b is the oldest
    await store.append(chat(d, "x"))  # new conversation: evicts b
    assert [m.decode() for m in await redis.zrange(LRU_KEY, 0, -1)] == [c, a, d]
    assert bodies(await store.read(b)) == []
    assert store.evictions == 1

    await store.append(chat(c, "y"))  # an append to a held conversation evicts nothing
    assert await redis.zcard(LRU_KEY) == 3
    await store.append(chat(e, "x"))  # evicts a (c was appended to, d is newer)
    assert [m.decode() for m in await redis.zrange(LRU_KEY, 0, -1)] == [d, c, e]
    assert bodies(await store.read(a)) == []
    assert bodies(await store.read(c)) == ["x", "y"]
    assert store.evictions == 2


async def test_reading_an_evicted_conversation_does_not_bring_it_back(redis: Redis) -> None:
    store = store_on(redis, max_conversations=1)
    await store.append(chat(DM, "x"))
    await store.append(chat(GROUP, "x"))
    await store.read(DM)
    assert [m.decode() for m in await redis.zrange(LRU_KEY, 0, -1)] == [GROUP]


async def test_offsets_keep_increasing_across_eviction_with_a_new_epoch(redis: Redis) -> None:
    store = store_on(redis, max_conversations=1)
    first = await store.append(chat(DM, "1"))
    await store.append(chat(DM, "2"))
    await store.append(chat(GROUP, "evicts the dm"))

    after_eviction = await store.read(DM)
    assert after_eviction.epoch and after_eviction.epoch != first.epoch
    assert (after_eviction.last_offset, after_eviction.first_offset, list(after_eviction.messages)) == (2, 0, [])

    again = await store.append(chat(DM, "3"))  # evicts the group in turn
    assert again.offset == 3
    assert again.epoch == after_eviction.epoch
    history = await store.read(DM)
    assert (bodies(history), history.first_offset, history.last_offset) == (["3"], 3, 3)
    with pytest.raises(InvalidArgument, match="future"):
        await store.read(DM, after_offset=4)


async def test_concurrent_appends_get_unique_consecutive_offsets(redis_server: RedisServer) -> None:
    client = connect(RedisConfig(pool_size=16), redis_server.url)  # callers queue for a connection
    try:
        store = store_on(client, per_conversation=1000)
        acks = await asyncio.gather(*(store.append(chat(GROUP, f"m{i}")) for i in range(300)))
        assert sorted(ack.offset for ack in acks) == list(range(1, 301))
        assert len({ack.epoch for ack in acks}) == 1
        history = await store.read(GROUP, limit=50)
        assert [m.offset for m in history.messages] == list(range(1, 51))
        by_offset = {ack.offset: ack.id for ack in acks}
        assert all(by_offset[m.offset] == m.id for m in history.messages)
    finally:
        await client.aclose()


async def test_restart_without_persistence_changes_the_epoch(redis_server: RedisServer) -> None:
    client = connect(RedisConfig(), redis_server.url)  # the services' client: reconnects with retries
    try:
        store = store_on(client)
        before = await store.append(chat(DM, "before restart"))
        await store.append(chat(DM, "also before"))
        redis_server.restart()

        lost = await store.read(DM)  # the script cache is empty too: reloaded on NOSCRIPT
        assert (lost.epoch, lost.last_offset, list(lost.messages)) == ("", 0, [])
        after = await store.append(chat(DM, "after restart"))
        assert after.epoch != before.epoch
        assert after.offset == 1
    finally:
        await client.aclose()


async def test_redis_down_is_unavailable(redis_server: RedisServer, redis: Redis) -> None:
    store = store_on(redis)
    await store.append(chat(DM, "up"))
    redis_server.kill()
    with pytest.raises(Unavailable, match="history store unavailable"):
        await store.append(chat(DM, "down"))
    with pytest.raises(Unavailable, match="history store unavailable"):
        await store.read(DM)


async def test_read_cached_answers_like_read_and_never_serves_stale_history(redis: Redis) -> None:
    store = store_on(redis, per_conversation=4, max_conversations=1)
    for i in range(1, 4):
        await store.append(chat(DM, f"m{i}"))
    for after, limit in [(0, 0), (1, 0), (0, 2), (2, 5), (3, 0)]:
        assert await store.read_cached(DM, after, limit) == await store.read(DM, after, limit)
    assert await store.read_cached(DM) == await store.read(DM)  # now a hit
    assert store._read_at.cache_info().hits >= 1

    await store.append(chat(DM, "m4"))  # a new append changes the cache key
    assert bodies(await store.read_cached(DM)) == ["m1", "m2", "m3", "m4"]
    await store.append(chat(DM, "m5"))  # trimming too
    cached = await store.read_cached(DM, 1)
    assert (bodies(cached), cached.first_offset) == (["m2", "m3", "m4", "m5"], 2)

    await store.append(chat(GROUP, "evicts the dm"))  # eviction changes the epoch
    evicted = await store.read_cached(DM)
    assert evicted == await store.read(DM)
    assert (list(evicted.messages), evicted.last_offset, evicted.first_offset) == ([], 5, 0)
    with pytest.raises(InvalidArgument, match="offset 6 is in the future"):
        await store.read_cached(DM, 6)
    with pytest.raises(InvalidArgument, match="limit 51"):
        await store.read_cached(DM, 0, 51)


async def test_read_cached_hands_out_copies(redis: Redis) -> None:
    store = store_on(redis)
    await store.append(chat(DM, "original"))
    first = await store.read_cached(DM)
    first.messages[0].body = b"changed by a caller"
    first.epoch = "changed"
    again = await store.read_cached(DM)
    assert (bodies(again), again.epoch) == (["original"], (await store.read(DM)).epoch)


async def test_read_cached_after_a_redis_restart_sees_the_loss(redis_server: RedisServer) -> None:
    client = connect(RedisConfig(), redis_server.url)
    try:
        store = store_on(client)
        await store.append(chat(DM, "before"))
        await store.read_cached(DM)
        redis_server.restart()
        lost = await store.read_cached(DM)
        assert (list(lost.messages), lost.epoch, lost.last_offset) == ([], "", 0)
        await store.append(chat(DM, "after"))
        assert bodies(await store.read_cached(DM)) == ["after"]
    finally:
        await client.aclose()


async def test_read_cached_without_a_cache_is_read(redis: Redis) -> None:
    store = store_on(redis, read_cache_size=0)
    await store.append(chat(DM, "x"))
    assert await store.read_cached(DM) == await store.read(DM)
    assert store._read_at.cache_info().misses == 0
