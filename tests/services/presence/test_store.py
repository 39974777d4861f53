"""The presence store against a real private redis-server: leases, chat requests, the key directory.

Proven here: a connected session makes its user online with a lease that expires at Redis
TIME plus its TTL; a renewal moves the expiry forward; an expired lease drops out of the
online list and out of Redis; a user stays online while any one of their sessions (on any
gateway) holds a lease and goes offline when the last is dropped; chat requests are kept per
recipient, listed sorted, once per requester, and taken once; the first key registration
wins, a reset removes it once, and after a reset the next registration wins; the prekey is kept beside
the keys, replaced on every publication and removed by a reset.
"""
from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from services.presence.store import LEASES, PresenceStore, lease_member
from spartan.v1 import pb

pytestmark = pytest.mark.on_cluster  # the same behaviour on one Redis and on a Redis Cluster


def lease(user: str, gateway: str = "gw1", session: str = "s1") -> pb.Lease:
    return pb.Lease(user=user, gateway=gateway, session=session)


async def redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_a_connected_session_is_online_until_its_lease_expires_at_redis_time(redis: Redis) -> None:
    store = PresenceStore(redis)
    before = await redis_ms(redis)
    await store.renew([lease("alice")], 30)
    after = await redis_ms(redis)
    assert await store.online_users() == {"alice"}
    expiry = await redis.zscore(LEASES, lease_member(lease("alice")))
    assert before + 30_000 <= expiry <= after + 30_000


async def test_an_expired_lease_drops_out_of_the_list_and_out_of_redis(redis: Redis) -> None:
    store = PresenceStore(redis)
    await store.renew([lease("alice")], 0.2)
    await store.renew([lease("bob")], 60)
    expiry = await redis.zscore(LEASES, lease_member(lease("alice")))
    while await redis_ms(redis) <= expiry:  # Redis' clock decides, not ours
        await asyncio.sleep(0.05)
    assert await store.online_users() == {"bob"}
    assert await redis.zscore(LEASES, lease_member(lease("alice"))) is None  # not kept forever


async def test_a_renewal_moves_the_expiry_forward(redis: Redis) -> None:
    store = PresenceStore(redis)
    await store.renew([lease("alice")], 0.2)
    first = await redis.zscore(LEASES, lease_member(lease("alice")))
    await store.renew([lease("alice"), lease("bob", "gw2", "s9")], 60)  # one batch for a gateway's leases
    assert await redis.zscore(LEASES, lease_member(lease("alice"))) >= first + 59_000
    while await redis_ms(redis) <= first:
        await asyncio.sleep(0.05)
    assert await store.online_users() == {"alice", "bob"}


async def test_a_user_is_online_while_any_session_holds_a_lease(redis: Redis) -> None:
    store = PresenceStore(redis)
    phone, laptop = lease("alice", "gw1", "phone"), lease("alice", "gw2", "laptop")
    await store.renew([phone, laptop], 60)
    await store.renew([lease("bob")], 60)
    await store.drop(phone)
    assert await store.online_users() == {"alice", "bob"}
    await store.drop(laptop)
    assert await store.online_users() == {"bob"}
    await store.drop(laptop)  # a second disconnect of the same session is harmless
    assert await store.online_users() == {"bob"}


async def test_renewing_no_lease_writes_nothing(redis: Redis) -> None:
    store = PresenceStore(redis)
    await store.renew([], 60)
    assert await redis.exists(LEASES) == 0
    assert await store.online_users() == set()


async def test_chat_requests_are_kept_per_recipient_listed_sorted_and_taken_once(redis: Redis) -> None:
    store = PresenceStore(redis)
    await store.add_request("charlie", "bob", "m1")
    await store.add_request("alice", "bob", "m2")
    await store.add_request("alice", "bob", "m3")  # asking again is still one request
    await store.add_request("bob", "alice", "m4")
    assert await store.pending_requests("bob") == ["alice", "charlie"]
    assert await store.pending_requests("alice") == ["bob"]
    assert await store.pending_requests("eve") == []

    assert await store.take_request("alice", "bob") is True
    assert await store.take_request("alice", "bob") is False  # answered already
    assert await store.take_request("bob", "charlie") is False  # never asked
    assert await store.pending_requests("bob") == ["charlie"]
    assert await store.pending_requests("alice") == ["bob"]


def keys(user: str, tag: bytes) -> pb.PublicKeys:
    return pb.PublicKeys(user=user, identity_key=b"identity-" + tag, agreement_key=b"agreement-" + tag)


async def test_the_first_key_registration_wins_until_a_reset(redis: Redis) -> None:
    store = PresenceStore(redis)
    assert await store.get_keys("alice") is None
    assert await store.put_keys(keys("alice", b"one")) == keys("alice", b"one")
    assert await store.put_keys(keys("alice", b"two")) == keys("alice", b"one")  # an impostor gets the first back
    assert await store.get_keys("alice") == keys("alice", b"one")
    assert await store.get_keys("bob") is None

    assert await store.reset_keys("alice") is True
    assert await store.reset_keys("alice") is False
    assert await store.get_keys("alice") is None
    assert await store.put_keys(keys("alice", b"two")) == keys("alice", b"two")


async def test_concurrent_first_registrations_agree_on_one_winner(redis: Redis) -> None:
    store = PresenceStore(redis)
    tags = [f"k{i}".encode() for i in range(20)]
    answers = await asyncio.gather(*(store.put_keys(keys("alice", tag)) for tag in tags))
    registered = await store.get_keys("alice")
    assert registered is not None and registered in [keys("alice", tag) for tag in tags]
    assert all(answer == registered for answer in answers)


async def test_the_prekey_is_kept_beside_the_registered_keys_replaced_when_published_and_reset_with_them(
        redis: Redis) -> None:
    store = PresenceStore(redis)
    first, second = pb.SignedPrekey(id=1, key=b"p" * 32), pb.SignedPrekey(id=2, key=b"q" * 32)
    registration = keys("alice", b"one")
    registration.prekey.CopyFrom(first)  # a first login carries one
    assert await store.put_keys(registration) == keys("alice", b"one")  # the registration itself holds none
    assert await store.put_prekey("alice", first) is True  # the first: peers waiting may now write
    assert (await store.get_keys("alice")).prekey == first
    assert await store.put_prekey("alice", second) is False  # replaced, not added
    assert (await store.get_keys("alice")).prekey == second
    assert await store.get_keys("bob") is None

    assert await store.reset_keys("alice") is True
    await store.put_keys(keys("alice", b"two"))
    assert not (await store.get_keys("alice")).HasField("prekey")  # the old identity's prekey went with it
