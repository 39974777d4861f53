"""What the servers hold is ciphertext, and ciphertext altered on the server is detected.

Real processes throughout: presence, history and two gateways against a private
redis-server; headless clients and the real CLI (stdin piped) as users. The tests look
where an attacker with access to the servers would look (every Redis key of every type,
every service log) and flip bits in stored and relayed ciphertext.
"""
from __future__ import annotations

import base64
import uuid
from pathlib import Path

import redis as redis_sync

from spartan import naming
from spartan.client.headless import HeadlessClient
from spartan.crypto.padding import pad
from spartan.v1 import pb
from tests.support.piped_cli import PipedCli, copy_identity
from tests.support.redis_inspect import flip_stored_body, redis_dump, stored_messages
from tests.support.stack import rates

DEBUG_LOGS = {"SPARTAN_LOG__LEVEL": "DEBUG", "SPARTAN_MAX_NUM_MESSAGES_PER_USER": "20"}  # keep all 8 in history
SENDS = rates(send=100)  # each side sends 4 messages within seconds
# version (1), ephemeral key (32), two prekey ids (8) and content-key wraps (48), nonce (12), tag (16), signature (64)
ENVELOPE_OVERHEAD = 1 + 32 + 2 * (8 + 48) + 12 + 16 + 64
UNDECRYPTABLE = "[Spartan] A message from alice could not be decrypted or verified and was dropped."


def secret_texts(count: int, who: str) -> list[str]:
    return [f"{who}-says-{i}-aubergine-{uuid.uuid4().hex}-zither" for i in range(count)]


async def test_servers_store_and_log_only_ciphertext(stack_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=2, settings={**DEBUG_LOGS, **SENDS})
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(2)])
    from_alice, from_bob = secret_texts(4, "alice"), secret_texts(4, "bob")
    for turn in range(4):
        await alice.send("bob", from_alice[turn])
        await bob.wait_for(turn + 1)
        await bob.send("alice", from_bob[turn])
        await alice.wait_for(turn + 1)
    assert bob.texts() == from_alice and alice.texts() == from_bob
    history = await bob.call("GetHistory", pb.HistoryRequest(peer="alice"))
    assert len(history.messages) == 8

    plaintexts = [text.encode() for text in from_alice + from_bob]
    needles = [*plaintexts, *(p.hex().encode() for p in plaintexts), *(base64.b64encode(p) for p in plaintexts),
               b"aubergine", b"zither"]
    dump = redis_dump(stack.redis.url)
    assert len(dump) > 20  # history, presence, keys and more really were read
    leaks = [(needle, value[:80]) for value in dump for needle in needles if needle in value]
    assert not leaks, f"plaintext in Redis: {leaks[:3]}"
    logs = {name: stack.log(name).encode() for name in stack.children}
    assert all(logs.values()), "every service wrote a log"
    leaked_logs = [(name, needle) for name, text in logs.items() for needle in needles if needle in text]
    assert not leaked_logs, f"plaintext in service logs: {leaked_logs[:3]}"

    stored = stored_messages(stack.redis.url, naming.dm_conversation("alice", "bob"))
    by_id = {message.id: message for message in stored}
    sent = {r.message.id: r.text for r in bob.received + alice.received}
    assert set(by_id) == set(sent)
    for message_id, text in sent.items():
        body = by_id[message_id].body
        assert text is not None and body != text.encode() and text.encode() not in body
        assert body[0] == 4 and len(body) == len(pad(text.encode())) + ENVELOPE_OVERHEAD  # padded to 64 bytes
    assert len({by_id[i].body[1:13] for i in sent}) == len(sent)  # a fresh nonce per message


async def test_flipped_bits_in_stored_or_relayed_ciphertext_are_detected(stack_factory, client_factory,
                                                                         keys: Path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=2)
    bob = await client_factory("bob", [stack.address(2)])
    await bob.close()  # bob registered his keys and went offline
    alice = await client_factory("alice", [stack.address(1)])
    conversation = naming.dm_conversation("alice", "bob")
    await alice.send("bob", "first, intact")
    await alice.send("bob", "second, to be altered")
    flip_stored_body(stack.redis.url, conversation, 1)
    await alice.send("bob", "third, intact")  # a new last offset: no history cache can hold the old entry

    # The headless client replaying history over its stream, and reading it with GetHistory.
    reader_dir = keys.parent / "bob-second-device"
    copy_identity("bob", keys, reader_dir)
    reader = HeadlessClient("bob", [stack.address(1)], str(reader_dir))
    reader.follow("alice")
    await reader.start()
    try:
        await reader.wait_for(3)
        assert reader.texts() == ["first, intact", None, "third, intact"]
        history = await reader.call("GetHistory", pb.HistoryRequest(peer="alice"))
        assert [await reader.crypto.open(m) for m in history.messages] == ["first, intact", None, "third, intact"]

        # A relayed copy: a sealed message published straight to bob's channel, once with a flipped bit.
        publisher = redis_sync.Redis.from_url(stack.redis.url)
        try:
            for flip, text in ((False, "relayed, intact"), (True, "relayed, altered")):
                message_id = uuid.uuid4().hex
                body = bytearray(await alice.crypto.seal("bob", text, message_id))
                if flip:
                    body[-20] ^= 0x80
                relayed = pb.Message(id=message_id, kind=pb.CHAT, sender="alice", recipient="bob",
                                     conversation=conversation, body=bytes(body))
                publisher.spublish(naming.user_channel("bob"), relayed.SerializeToString())
        finally:
            publisher.close()
        await reader.wait_for(5)
        assert reader.texts()[3:] == ["relayed, intact", None]
    finally:
        await reader.close()

    # The real CLI shows the altered history entry as undecryptable and the others as sent. (The
    # reader above acknowledged all three for bob, so this client shows them through /history.)
    cli = PipedCli("bob", stack, keys)
    try:
        cli.open_chat("alice")
        cli.type("/history")
        cli.read_until("Recent messages with alice:")
        shown = cli.read_until("[alice] third, intact")
        assert shown == ["[alice] first, intact", UNDECRYPTABLE, "[alice] third, intact"]
    finally:
        assert cli.quit() == 0
