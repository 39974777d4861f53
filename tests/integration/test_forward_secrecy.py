"""Forward secrecy, bounded: a thief with a user's key directory and everything the servers store.

Real processes and real clients; only the clients' calendar is driven by the test (their
`clock`), so a month passes in seconds. Tokens, leases and rate limits keep real time.
What the thief holds is a fresh copy of bob's key directory (key file and prekeys file,
as they are on disk at the end) and every message the history and the delivery log keep.
"""
from __future__ import annotations

import shutil
import struct
import time
import uuid
from pathlib import Path

import grpc
import pytest
import redis as redis_sync

from services.presence.store import PREKEYS

from spartan import naming
from spartan.client.e2e import EXPIRED, NoPrekey
from spartan.crypto.identity import Identity, prekey_transcript
from spartan.crypto.keystore import load
from spartan.crypto.tokens import login_transcript
from spartan.crypto.pairwise import KEY_BYTES, KeyDeleted, PairwiseCipher
from spartan.crypto.prekeys import DAY_SECONDS, KEEP_RETIRED_SECONDS, WINDOW_DAYS, OwnPrekeys, Prekey, prekeys_path
from spartan.v1 import pb, rpc
from tests.spartan.crypto.helpers import Clock
from tests.support.piped_cli import PipedCli
from tests.support.redis_inspect import delivered_messages, stored_messages
from tests.support.refusals import refusal

DM = naming.dm_conversation("alice", "bob")


def recipient_prekey_id(message: pb.Message) -> int:
    """The prekey a version 4 envelope was sealed to for its recipient (after the version and ephemeral key)."""
    assert message.body[0] == 4
    (prekey_id,) = struct.unpack(">Q", message.body[1 + KEY_BYTES : 1 + KEY_BYTES + 8])
    return prekey_id


def steal(user: str, keys: Path, loot: Path, calendar: Clock) -> tuple[object, OwnPrekeys]:
    """A copy of the user's key directory as it is on disk now, loaded as a thief would."""
    loot.mkdir(mode=0o700)
    for source in (keys / f"{user}.json", prekeys_path(user, keys)):
        shutil.copy(source, loot / source.name)
    identity = load(user, loot)
    return identity, OwnPrekeys.for_user(identity, loot, clock=calendar)


async def test_a_stolen_key_directory_and_the_servers_data_open_nothing_older_than_the_window(
        stack_factory, client_factory, keys: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    calendar = Clock(time.time())
    bob = await client_factory("bob", [stack.address(1)], clock=calendar)
    alice = await client_factory("alice", [stack.address(1)], clock=calendar)
    first = bob.prekeys.current()
    await alice.send("bob", "day 0, to bob")
    await bob.send("alice", "day 0, from bob")
    await bob.wait_for(1)
    await alice.wait_for(1)

    calendar.advance(DAY_SECONDS + 60)
    await bob.conn.login()  # every login publishes the current prekey: a day on, a new one
    second = bob.prekeys.current()
    assert second.id != first.id
    await alice.send("bob", "day 1, to bob")  # alice sees bob's prekey is a day old and fetches the new one
    await bob.wait_for(2)
    assert bob.texts() == ["day 0, to bob", "day 1, to bob"]

    calendar.advance(KEEP_RETIRED_SECONDS)  # day 31: the first prekey was replaced 30 days ago
    bob.prekeys.current()  # the client's schedule runs on every login and every message it seals
    stored = {m.id: m for m in stored_messages(stack.redis.url, DM) + delivered_messages(stack.redis.url, DM)}
    by_text = {r.text: r.message.id for r in bob.received + alice.received}
    day0 = [stored[by_text["day 0, to bob"]], stored[by_text["day 0, from bob"]]]
    day1 = stored[by_text["day 1, to bob"]]
    assert recipient_prekey_id(day0[0]) == first.id and recipient_prekey_id(day1) == second.id

    identity, prekeys = steal("bob", keys, tmp_path / "loot", calendar)
    thief = PairwiseCipher(identity, "alice", alice.crypto.identity.public_keys(), prekeys)  # type: ignore[arg-type]

    def thief_opens(message: pb.Message) -> bytes:
        return thief.decrypt(message.body, message_id=message.id, sender=message.sender,
                             recipient=message.recipient, conversation=message.conversation)

    for message in day0:  # alice's message to bob, and bob's own copy of his reply
        try:
            thief_opens(message)
            raise AssertionError(f"the thief opened {message.id}, sent 31 days ago")
        except KeyDeleted:
            pass
    assert thief_opens(day1) == b"day 1, to bob"  # within the window: the window is what it says, no more
    opened = await bob.crypto.open_checked(day0[0])  # and bob's own client says why it cannot show it
    assert opened.text is None and opened.problem == EXPIRED


async def test_a_message_sealed_to_a_prekey_this_device_lacks_is_said_not_dropped_silently(
        stack_factory, client_factory, keys: Path) -> None:  # type: ignore[no-untyped-def]
    """What the CLI shows for a correctly signed message it holds no prekey for: another device of alice's
    made that prekey (or it was deleted). bob seals to a prekey alice's key signed but her CLI never had."""
    stack = stack_factory(gateways=1)
    bob = await client_factory("bob", [stack.address(1)])
    alice = PipedCli("alice", stack, keys)
    try:
        alice.open_chat("bob")
        other_device = OwnPrekeys(load("alice", keys))  # alice's identity, prekeys this CLI never saw
        alice_keys = load("alice", keys).public_keys()
        alice_keys.prekey.CopyFrom(other_device.current())
        sealed_elsewhere = PairwiseCipher(bob.crypto.identity, "alice", alice_keys, bob.prekeys)
        message_id = uuid.uuid4().hex
        body = sealed_elsewhere.encrypt(b"for the other device", message_id=message_id, sender="bob",
                                        recipient="alice", conversation=DM)
        publisher = redis_sync.Redis.from_url(stack.redis.url)
        try:
            publisher.spublish(naming.user_channel("alice"), pb.Message(
                id=message_id, kind=pb.CHAT, sender="bob", recipient="alice", conversation=DM,
                body=body).SerializeToString())
        finally:
            publisher.close()
        await bob.send("alice", "sealed to the prekey alice's CLI holds")
        shown = alice.read_until("[bob] sealed to the prekey alice's CLI holds")
        assert [line for line in shown if "can no longer be read" in line] == [
            f"[Spartan] A message from bob can no longer be read: the key it was sealed to is not on this device "
            f"(deleted after {WINDOW_DAYS} days for forward secrecy, or made by another device with your key file)."]
        assert not any("for the other device" in line for line in alice.lines)
    finally:
        assert alice.quit() == 0


async def test_a_login_carrying_a_prekey_its_key_did_not_sign_is_refused_and_changes_nothing(
        stack_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(1)])
    published = await bob.api.keys_of("alice")
    assert published.prekey == alice.prekeys.current()  # what alice's login published, as peers fetch it
    me = alice.conn.identity
    someone = Identity.generate("alice")
    relabelled = Prekey(id=7, seed=bytes(range(32)), created_at_s=int(time.time())).signed(me)
    relabelled.signature = me.sign(prekey_transcript("bob", relabelled.id, relabelled.key, relabelled.created_at_s))
    short = pb.SignedPrekey()
    short.CopyFrom(relabelled)
    short.key = short.key[:31]
    cases = [
        (OwnPrekeys(someone).current(), "prekey of alice is not signed by its identity key"),
        (relabelled, "prekey of alice is not signed by its identity key"),
        (short, "prekey of alice must be 32 bytes, got 31"),
    ]
    channel = grpc.aio.insecure_channel(stack.address(1))
    try:
        stub = rpc.SpartanStub(channel)
        for prekey, sentence in cases:
            challenge = await stub.GetChallenge(pb.ChallengeRequest(user="alice"), timeout=10)
            keys = me.public_keys()
            keys.prekey.CopyFrom(prekey)
            login = pb.LoginRequest(user="alice", nonce=challenge.nonce, keys=keys, signature=me.sign(
                login_transcript(challenge.deployment_id, "alice", challenge.nonce, keys.identity_key)))
            refused = await refusal(stub.Login(login, timeout=10))
            assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert sentence in (refused.details() or "")
    finally:
        await channel.close()
    assert (await bob.api.keys_of("alice")).prekey == published.prekey  # the directory kept alice's own


async def test_without_a_prekey_in_the_directory_nothing_is_sealed_until_one_is_published(
        stack_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    """A server stripping bob's prekey (or bob not logged in since prekeys exist) gets no message sealed to
    the long-term keys instead: the message waits, and goes once bob's next login publishes a prekey."""
    stack = stack_factory(gateways=1)
    bob = await client_factory("bob", [stack.address(1)])
    directory = redis_sync.Redis.from_url(stack.redis.url)
    try:
        assert directory.hdel(PREKEYS, "bob") == 1
    finally:
        directory.close()
    alice = await client_factory("alice", [stack.address(1)])
    with pytest.raises(NoPrekey):
        await alice.send("bob", "sealed to nothing less than a prekey")
    assert stored_messages(stack.redis.url, DM) == []

    await bob.conn.login()  # publishes bob's prekey again: the first one the directory holds, so announced
    update = await alice.wait_event(pb.KEY_UPDATE)
    assert update.sender == "bob"
    await alice.send("bob", "sealed to bob's prekey")
    assert [r.text for r in await bob.wait_for(1)] == ["sealed to bob's prekey"]
    assert recipient_prekey_id(stored_messages(stack.redis.url, DM)[-1]) == bob.prekeys.current().id
