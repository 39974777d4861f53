"""A thief with alice's key file forging messages "from bob", and a server replaying an old envelope to a
restarted client, with real processes: the forgeries are dropped with one line, the replay is not shown."""
from __future__ import annotations

import uuid
from pathlib import Path

from Crypto.Cipher import AES

from spartan.crypto.identity import Identity
from spartan.crypto.keystore import load_or_create
from spartan.crypto.padding import pad
from spartan.crypto.pairwise import (
    STATIC_ENVELOPE_VERSION,
    PairwiseCipher,
    associated_data,
    derive_pairwise_key,
    signed_transcript,
)
from spartan.crypto.prekeys import OwnPrekeys
from spartan.v1 import pb
from tests.support.malicious_server import (
    DM,
    Cli,
    chat_from,
    directory_keys,
    publish,
)
from tests.support.redis_inspect import stored_messages


# ---------------------------------------------------------------- KCI and replay
def forge_with_stolen_key(stolen: Identity, peer_keys: pb.PublicKeys, text: str) -> pb.Message:
    """What a thief holding only alice's key file can build: a perfectly encrypted message "from bob"."""
    message_id = uuid.uuid4().hex
    route = {"message_id": message_id, "sender": "bob", "recipient": "alice", "conversation": DM}
    nonce = uuid.uuid4().bytes[:12]
    cipher = AES.new(derive_pairwise_key(stolen, "bob", peer_keys), AES.MODE_GCM, nonce=nonce, mac_len=16)
    cipher.update(associated_data(**route))
    ciphertext, tag = cipher.encrypt_and_digest(pad(text.encode()))
    sealed = bytes((STATIC_ENVELOPE_VERSION,)) + nonce + ciphertext + tag  # the static key: the file derives it
    return chat_from("bob", "alice", sealed + stolen.sign(signed_transcript(associated_data(**route), sealed)),
                     message_id)


async def test_a_stolen_key_file_cannot_forge_messages_from_bob(stack_factory, client_factory,
                                                                keys: Path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    bob = await client_factory("bob", [stack.address(1)])
    alice = Cli("alice", stack, keys)
    try:
        alice.open_chat("bob")
        stolen = Identity("alice", *load_or_create("alice", keys)[0].private_seeds())  # a copy of the key file
        bob_keys = directory_keys(stack.redis.url, "bob")
        forgeries = [forge_with_stolen_key(stolen, bob_keys, f"bob here, forged {i}") for i in range(3)]
        publish(stack.redis.url, "alice", *forgeries)
        await bob.send("alice", "the real bob")
        shown = alice.read_until("[bob] the real bob")
        dropped = [line for line in shown if "could not be decrypted or verified" in line]
        assert dropped == ["[Spartan] A message from bob could not be decrypted or verified and was dropped."]
        assert not any("forged" in line for line in alice.lines)
    finally:
        assert alice.quit() == 0


async def test_a_replayed_message_is_dropped_after_a_client_restart(stack_factory, client_factory,
                                                                    keys: Path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    bob = await client_factory("bob", [stack.address(1)])
    alice = Cli("alice", stack, keys)
    try:
        alice.open_chat("bob")
        await bob.send("alice", "the original words")
        alice.read_until("[bob] the original words")
    finally:
        assert alice.quit() == 0
    original = stored_messages(stack.redis.url, DM)[-1]
    replay = chat_from("bob", "alice", original.body, original.id)  # the old envelope, as a new delivery
    me = load_or_create("alice", keys)[0]
    assert PairwiseCipher(me, "bob", directory_keys(stack.redis.url, "bob"), OwnPrekeys.for_user(me, keys)).decrypt(
        replay.body, message_id=replay.id, sender="bob", recipient="alice", conversation=DM) == b"the original words"

    restarted = Cli("alice", stack, keys)
    try:
        restarted.open_chat("bob")
        publish(stack.redis.url, "alice", replay)
        await bob.send("alice", "new words")
        restarted.read_until("[bob] new words")
        assert not any("original words" in line for line in restarted.lines)
    finally:
        assert restarted.quit() == 0
