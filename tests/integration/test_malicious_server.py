"""A malicious server against the client's key handling, with real processes.

The tests act as the server (or whoever controls Redis) would: swap a user's keys in
the key directory and publish forged KEY_UPDATE and chat messages into a user's pub/sub
channel. Each attack is refused or made visible: a swapped key stops sending until the
user accepts it, `/verify … ok` never marks a key the user was not shown, and re-fetches
happen on the client's schedule. Forgery with a stolen key file and replays:
test_forgery_and_replay.py.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from redis.asyncio import Redis

from spartan import naming
from spartan.client.e2e import REFETCH_SECONDS
from spartan.client.state import HELD_KEPT
from spartan.crypto.identity import Identity
from spartan.crypto.keystore import load_or_create
from spartan.crypto.pairwise import (
    PairwiseCipher,
)
from spartan.crypto.pins import PinStore
from spartan.crypto.prekeys import OwnPrekeys
from spartan.crypto.safety import safety_number
from spartan.crypto.sender_keys import decrypt_group, open_sender_key
from spartan.v1 import pb
from tests.support.malicious_server import (
    DM,
    Cli,
    Impostor,
    chat_from,
    directory_keys,
    forged_chats,
    key_update,
    number_rows,
    publish,
    put_keys,
    registered_keys,
    swap_keys,
    wait_until,
)
from tests.support.redis_inspect import stored_messages


# ---------------------------------------------------------------- key changes
async def test_a_swapped_key_stops_sending_until_the_user_accepts_it(stack_factory, client_factory,
                                                                     keys: Path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    await client_factory("bob", [stack.address(1)])
    alice = Cli("alice", stack, keys)
    try:
        alice.open_chat("bob")
        alice.type("before the swap")
        await wait_until(lambda: len(stored_messages(stack.redis.url, DM)) == 1)
        me = load_or_create("alice", keys)[0]

        impostor = Impostor("bob")
        swap_keys(stack.redis.url, impostor)
        publish(stack.redis.url, "alice", key_update("bob"))
        warning = alice.read_until("security key has changed")[-1]
        assert safety_number("alice", me.identity_key, "bob", impostor.identity_key) in warning
        assert "Nothing more is sent to bob" in warning and "/accept-key bob" in warning

        alice.type("typed after the swap")
        status = alice.wait_error("wait until you accept bob's new key")
        assert status == "[Spartan] 1 message(s) for bob wait until you accept bob's new key (/accept-key bob)."
        await asyncio.sleep(1.0)
        assert len(stored_messages(stack.redis.url, DM)) == 1  # nothing was encrypted to the swapped key

        # What the impostor sends under the unaccepted key is not shown as bob's (said once for a burst).
        impostor_cipher = impostor.cipher("alice", directory_keys(stack.redis.url, "alice"))
        burst = forged_chats(impostor_cipher, ["impostor speaking as bob"] * 3, "m-impostor")
        marker = pb.Message(id=uuid.uuid4().hex, kind=pb.CHAT_DECLINE, sender="charlie", recipient="alice")
        publish(stack.redis.url, "alice", *burst, marker)
        shown = alice.read_until("charlie declined your chat request.")
        said = [line for line in shown if "not accepted" in line]
        assert said == ["[Spartan] A message signed with bob's new key, which you have not accepted, is not "
                        "shown as from bob. Compare safety numbers (/verify bob), then /accept-key bob to see it."]
        assert not any("impostor speaking" in line for line in alice.lines)

        alice.type("/accept-key bob")
        accepted = alice.read_until("Accepted bob's new key")[-1]
        assert safety_number("alice", me.identity_key, "bob", impostor.identity_key) in accepted
        # What arrived under the key now accepted is shown, in order, once: nothing of it was lost.
        alice.read_until("What bob sent under that key (3 messages):")
        shown_after = [alice.read_until("[bob] impostor speaking as bob")[-1] for _ in range(3)]
        assert shown_after == ["[bob] impostor speaking as bob"] * 3
        await wait_until(lambda: len(stored_messages(stack.redis.url, DM)) == 2)
        sent = stored_messages(stack.redis.url, DM)[-1]
        opened = impostor.cipher("alice", me.public_keys()).decrypt(
            sent.body, message_id=sent.id, sender="alice", recipient="bob", conversation=DM)
        assert opened == b"typed after the swap"  # it went only once the user accepted that key
        assert PinStore("alice", keys).pinned_key("bob") == impostor.identity_key
    finally:
        assert alice.quit() == 0


async def test_held_messages_past_the_bound_are_dropped_oldest_first_and_said(stack_factory, client_factory,
                                                                             keys: Path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    await client_factory("bob", [stack.address(1)])
    alice = Cli("alice", stack, keys)
    try:
        alice.open_chat("bob")
        alice.type("/verify bob")  # pins bob's real key
        alice.read_until("Safety number with bob")
        impostor = Impostor("bob")
        swap_keys(stack.redis.url, impostor)
        publish(stack.redis.url, "alice", key_update("bob"))
        alice.read_until("security key has changed")

        cipher = impostor.cipher("alice", directory_keys(stack.redis.url, "alice"))
        burst = forged_chats(cipher, [f"held {i}" for i in range(HELD_KEPT + 2)], "m-held")
        marker = pb.Message(id=uuid.uuid4().hex, kind=pb.CHAT_DECLINE, sender="charlie", recipient="alice")
        publish(stack.redis.url, "alice", *burst, marker)
        shown = alice.read_until("charlie declined your chat request.")
        assert [line for line in shown if "being dropped" in line] == [
            f"[Spartan] Only the newest {HELD_KEPT} messages waiting for a key you have not accepted are kept: "
            "older ones from bob are being dropped (/accept-key bob after /verify bob)."]

        alice.type("/accept-key bob")
        alice.read_until(f"2 older messages bob sent under that key were not kept: only the newest {HELD_KEPT} "
                         "waiting messages are.")
        alice.read_until(f"What bob sent under that key ({HELD_KEPT} messages):")
        alice.read_until(f"[bob] held {HELD_KEPT + 1}")
        assert [line for line in alice.lines if line.startswith("[bob] ")] == \
            [f"[bob] held {i}" for i in range(2, HELD_KEPT + 2)]
    finally:
        assert alice.quit() == 0


async def test_a_swapped_key_gets_no_group_key_until_accepted(stack_factory, client_factory,
                                                              keys: Path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    await client_factory("bob", [stack.address(1)])
    charlie = await client_factory("charlie", [stack.address(1)])
    listener = Redis.from_url(stack.redis.url)  # the server reading what is sent to bob
    to_bob = listener.pubsub()
    await to_bob.ssubscribe(naming.user_channel("bob"))
    alice = Cli("alice", stack, keys)
    try:
        alice.read_until("User list")
        alice.type("/verify bob")  # pins bob's real key
        alice.read_until("Safety number with bob")
        impostor = Impostor("bob")
        swap_keys(stack.redis.url, impostor)
        publish(stack.redis.url, "alice", key_update("bob"))
        alice.read_until("security key has changed")

        alice.type("/group group1")
        alice.read_until("You are now in group group1")
        alice.type("hello group")
        said = (await charlie.wait_for(1))[0]
        assert said.text == "hello group"  # alice's sender key went out, to charlie
        impostor_cipher = impostor.cipher("alice", directory_keys(stack.redis.url, "alice"))

        async def keys_for_bob(timeout: float) -> list[pb.Message]:
            found: list[pb.Message] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                raw = await to_bob.get_message(ignore_subscribe_messages=True, timeout=0.1)
                if raw is not None:
                    message = pb.Message.FromString(raw["data"])
                    if message.kind == pb.SENDER_KEY and message.sender == "alice":
                        found.append(message)
            return found

        assert await keys_for_bob(2.0) == []  # none sealed to the swapped key, nor to any key of bob's
        alice.type("/accept-key bob")
        alice.read_until("Accepted bob's new key")
        sent = await keys_for_bob(5.0)
        assert len(sent) == 1
        key = open_sender_key(impostor_cipher, sent[0].body, message_id=sent[0].id, group="group1")
        alice_key = load_or_create("alice", keys)[0].identity_key
        assert decrypt_group(said.message.body, sender_identity_key=alice_key, sender_key=key,
                             message_id=said.message.id, group="group1") == b"hello group"
    finally:
        assert alice.quit() == 0
        await to_bob.aclose()
        await listener.aclose()


async def test_verify_ok_marks_only_the_number_it_showed(stack_factory, client_factory,
                                                        keys: Path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    await client_factory("bob", [stack.address(1)])
    real_keys = directory_keys(stack.redis.url, "bob")
    real_bob = real_keys.identity_key
    alice = Cli("alice", stack, keys)
    try:
        alice.read_until("User list")
        me = load_or_create("alice", keys)[0]
        alice.type("/verify bob ok")
        alice.read_until("Type /verify bob first and compare the number it shows; then /verify bob ok.")

        # The swap goes unnoticed between the two commands: "ok" marks the key that was shown, no other.
        alice.type("/verify bob")
        alice.read_until("Safety number with bob (not verified yet)")
        shown = [alice.read_until("[Spartan]     ")[-1] for _ in range(3)]
        assert shown == number_rows(safety_number("alice", me.identity_key, "bob", real_bob))
        impostor = Impostor("bob")
        swap_keys(stack.redis.url, impostor)
        alice.type("/verify bob ok")
        alice.read_until("bob is now marked as verified (the number /verify bob showed you).")
        pins = PinStore("alice", keys)
        assert pins.pinned_key("bob") == real_bob and pins.is_verified("bob")

        # The swap is seen between the two commands: "ok" refuses and shows the new number.
        put_keys(stack.redis.url, real_keys)  # the directory shows bob's real key again
        alice.type("/verify bob")
        alice.read_until("Safety number with bob (verified)")
        swap_keys(stack.redis.url, impostor)
        publish(stack.redis.url, "alice", key_update("bob"))
        alice.read_until("security key has changed")
        alice.type("/verify bob ok")
        refused = alice.read_until("nothing was marked verified")[-1]
        assert refused == "[Spartan] bob's key changed after /verify showed you its number, so nothing was marked verified."
        alice.read_until("bob's new safety number:")
        new_rows = [alice.read_until("[Spartan]     ")[-1] for _ in range(3)]
        assert new_rows == number_rows(safety_number("alice", me.identity_key, "bob", impostor.identity_key))
        pins = PinStore("alice", keys)
        assert pins.pinned_key("bob") == real_bob and pins.is_verified("bob")  # the verified key is still bob's

        # Accepting the new key clears the mark; it is verified only after its own number was shown.
        alice.type("/accept-key bob")
        alice.read_until("Accepted bob's new key")
        assert not PinStore("alice", keys).is_verified("bob")
        alice.type("/verify bob")
        alice.read_until("Safety number with bob (not verified yet)")
        alice.type("/verify bob ok")
        alice.read_until("bob is now marked as verified")
        pins = PinStore("alice", keys)
        assert pins.pinned_key("bob") == impostor.identity_key and pins.is_verified("bob")
    finally:
        assert alice.quit() == 0


async def test_key_updates_and_bogus_messages_refetch_on_the_clients_schedule(
        stack_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    bob = await client_factory("bob", [stack.address(1)])
    alice = await client_factory("alice", [stack.address(1)])
    await alice.send("bob", "hello")  # alice holds bob's keys now
    await bob.wait_for(1)
    fetched: list[str] = []
    fetch = alice.crypto.fetch_keys

    async def counted(user: str) -> pb.PublicKeys:
        fetched.append(user)
        return await fetch(user)

    alice.crypto.fetch_keys = counted
    now = [1000.0]
    alice.crypto.clock = lambda: now[0]  # the window passes when the test says so, not after 30 s of waiting

    bogus = [chat_from("bob", "alice", bytes(120)) for _ in range(5)]
    publish(stack.redis.url, "alice", *[key_update("bob") for _ in range(5)], *bogus)
    await alice.wait_for(5)
    assert alice.texts() == [None] * 5
    assert fetched == ["bob"]  # ten hints from the server, one re-fetch

    # The hints were noted: the first use of bob once the window has passed re-fetches, once.
    now[0] += REFETCH_SECONDS
    await bob.send("alice", "still readable")
    await alice.wait_for(6)
    assert alice.texts()[-1] == "still readable" and fetched == ["bob", "bob"]
    publish(stack.redis.url, "alice", key_update("bob"), chat_from("bob", "alice", bytes(120)))
    await alice.wait_for(7)
    await bob.send("alice", "and again")
    await alice.wait_for(8)
    assert alice.texts()[-2:] == [None, "and again"] and fetched == ["bob", "bob"]


async def test_after_a_restart_with_a_change_waiting_the_pinned_key_still_opens_messages(
        stack_factory, client_factory, keys: Path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    bob = await client_factory("bob", [stack.address(1)])
    alice = await client_factory("alice", [stack.address(1)])
    await alice.send("bob", "pinning bob")
    await bob.wait_for(1)
    await alice.close()
    impostor = Impostor("bob")
    swap_keys(stack.redis.url, impostor)
    restarted = await client_factory("alice", [stack.address(1)])
    alice_keys = directory_keys(stack.redis.url, "alice")
    real_bob = load_or_create("bob", keys)[0]
    real_cipher = PairwiseCipher(real_bob, "alice", alice_keys, OwnPrekeys.for_user(real_bob, keys))
    messages = []
    for cipher, text in ((real_cipher, "signed with the pinned key"),
                         (impostor.cipher("alice", alice_keys), "signed with the swapped key")):
        message_id = uuid.uuid4().hex
        body = cipher.encrypt(
            text.encode(), message_id=message_id, sender="bob", recipient="alice", conversation=DM)
        messages.append(chat_from("bob", "alice", body, message_id))
    publish(stack.redis.url, "alice", *messages)
    await restarted.wait_for(2)
    assert restarted.texts() == ["signed with the pinned key", None]
    assert sum(n.startswith("WARNING: bob's security key has changed!") for n in restarted.notices) == 1
    assert restarted.crypto.offered["bob"].identity_key == impostor.identity_key


async def test_directory_keys_that_fail_their_checks_are_refused_and_the_pinned_ones_kept(
        stack_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    bob = await client_factory("bob", [stack.address(1)])
    alice = await client_factory("alice", [stack.address(1)])
    await alice.send("bob", "hello")
    await bob.wait_for(1)
    forged = registered_keys(stack.redis.url, "bob")
    forged.agreement_key = Identity.generate("bob").agreement_key  # not signed by bob's identity key
    put_keys(stack.redis.url, forged)
    publish(stack.redis.url, "alice", key_update("bob"))
    await alice.wait_until(lambda: any("fail their checks" in n for n in alice.notices))
    assert "The server sent keys for bob that fail their checks (agreement key of bob is not signed by its " \
           "identity key); they were refused." in alice.notices
    await bob.send("alice", "still bob")
    await alice.wait_for(1)
    assert alice.texts() == ["still bob"]
    await alice.send("bob", "still to bob")
    assert [r.text for r in await bob.wait_for(2)] == ["hello", "still to bob"]
