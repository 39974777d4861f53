"""Group chats with real processes: fan-out across three gateways, one publish per message,
sender-key rotation on membership changes, offline members, failover, bad input and the CLI."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from redis.asyncio import Redis

from services.gateway.groups import CACHE_TTL_SECONDS
from spartan import naming
from spartan.client.groups import FORGED, NO_KEY
from spartan.client.headless import HeadlessClient
from spartan.crypto import DecryptError
from spartan.crypto.membership import ADD, CREATE, LEAVE, NO_PREVIOUS, REMOVE
from spartan.crypto.sender_keys import decrypt_group, envelope_key_id
from spartan.errors import SpartanError
from spartan.v1 import pb
from tests.support.cli import read_until, write
from tests.support.refusals import refusal
from tests.support.stack import rates

ROOT = Path(__file__).resolve().parents[2]
SENDS = rates(send=1000)  # each test sends more than 3 messages (and sender keys) back to back
# The hub notices a lost pub/sub connection at its next read (every POLL_SECONDS) and reconnects after
# 0.1 s; a second covers both on a loaded machine and stays well inside the 5 s cache TTL.
GAP_NOTICED_SECONDS = 1.0
# Seven group changes from alice alone, on top of the sends.
GROUP_CALLS = rates(send=1000, group=100)


async def group1_on_three_gateways(stack, client_factory) -> dict:  # type: ignore[no-untyped-def]
    """alice and eve on gateway 1, bob on 2, charlie on 3."""
    placement = {"alice": 1, "bob": 2, "charlie": 3, "eve": 1}
    return {user: await client_factory(user, [stack.address(gateway)]) for user, gateway in placement.items()}


async def publish_calls(redis: Redis) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_spublish", {}).get("calls", 0))


def membership_seen(client, version: int):  # type: ignore[no-untyped-def]
    return lambda: any(e.kind == pb.MEMBERSHIP and e.version >= version for e in client.events)


@pytest.mark.on_cluster  # and on a Redis Cluster of 3 primaries and 3 replicas
async def test_members_on_three_gateways_see_every_message_once_in_order(stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=3, settings=SENDS)
    clients = await group1_on_three_gateways(stack, client_factory)
    sent: list[tuple[str, str]] = []
    for i in range(12):
        sender = ("alice", "bob", "charlie")[i % 3]
        text = f"{sender} says {i}"
        await clients[sender].send_group("group1", text)
        sent.append((sender, text))

    for user, client in clients.items():
        expected = [(s, t) for s, t in sent if s != user]
        await client.wait_until(lambda c=client, n=len(expected): len(c.received_in("group1")) >= n)
        got = client.received_in("group1")
        assert [(r.sender, r.text) for r in got] == expected, user
        offsets = [r.message.offset for r in got]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        assert len({r.message.id for r in got}) == len(got)
    await asyncio.sleep(0.3)  # nothing arrives twice later on
    assert len(clients["eve"].received_in("group1")) == len(sent)


async def test_one_publish_per_group_message_and_one_subscription_per_gateway(stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=3, settings=SENDS)
    clients = await group1_on_three_gateways(stack, client_factory)
    redis = Redis.from_url(stack.redis.url)
    try:
        await clients["alice"].send_group("group1", "warm-up: distributes alice's sender key")
        for user in ("bob", "charlie", "eve"):
            await clients[user].wait_for(1)
        assert (await redis.pubsub_shardnumsub(naming.group_channel("group1")))[0][1] == 3  # one per gateway, not per member

        before = await publish_calls(redis)
        messages = 25
        for i in range(messages):
            await clients["alice"].send_group("group1", f"message {i}")
        for user in ("bob", "charlie", "eve"):
            received = await clients[user].wait_for(1 + messages)
            assert [r.text for r in received[1:]] == [f"message {i}" for i in range(messages)]
        assert await publish_calls(redis) - before == messages
    finally:
        await redis.aclose()


async def test_removed_member_cannot_read_later_messages_and_new_member_cannot_read_earlier(
        stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=3, settings=SENDS)
    clients = await group1_on_three_gateways(stack, client_factory)
    alice, bob, eve = clients["alice"], clients["bob"], clients["eve"]
    await alice.send_group("group1", "before")
    await eve.wait_for(1)
    eves_old_key = eve.groups.ring.latest("group1", "alice")
    assert eves_old_key is not None

    removed = await alice.groups.change(REMOVE, "group1", "eve")
    assert "eve" not in removed.members and removed.version == 2
    await alice.wait_until(membership_seen(alice, 2))  # alice rotated and redistributed her key
    await eve.wait_until(membership_seen(eve, 2))
    await alice.send_group("group1", "after eve left")
    after = (await bob.wait_for(2))[1]
    assert after.text == "after eve left"
    assert envelope_key_id(after.message.body) != eves_old_key.key_id
    alice_identity = alice.crypto.identity.public_keys().identity_key
    with pytest.raises(DecryptError):
        decrypt_group(after.message.body, sender_identity_key=alice_identity, sender_key=eves_old_key,
                      message_id=after.message.id, group="group1")
    await asyncio.sleep(0.3)
    assert eve.texts() == ["before"]  # her gateway stopped delivering the group to her
    assert (await eve.groups.open(after.message)).problem == NO_KEY
    assert (await refusal(eve.call("GetHistory", pb.HistoryRequest(group="group1")))).code() == \
        grpc.StatusCode.PERMISSION_DENIED
    assert (await refusal(eve.send_group("group1", "still here?"))).code() == grpc.StatusCode.PERMISSION_DENIED

    foo = await client_factory("foo", [stack.address(2)])
    await alice.groups.change(ADD, "group1", "foo")
    for member in (foo, alice, bob):  # a sender who has not seen the change yet would still use its old key
        await member.wait_until(membership_seen(member, 3))
    history = await foo.call("GetHistory", pb.HistoryRequest(group="group1"))
    assert len(history.messages) == 2
    assert [(await foo.groups.open(m)).text for m in history.messages] == [None, None]
    await alice.send_group("group1", "welcome foo")
    await bob.send_group("group1", "hi foo")
    await foo.wait_for(2)
    assert foo.texts() == ["welcome foo", "hi foo"]


async def test_group_created_at_run_time_reaches_a_member_who_was_offline(stack_factory, client_factory,
                                                                         tmp_path: Path) -> None:
    stack = stack_factory(gateways=3, settings=SENDS)
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(2)])
    charlie = await client_factory("charlie", [stack.address(3)])  # registers keys, then goes offline
    await charlie.close()

    info = await alice.groups.change(CREATE, "team", members=["bob", "charlie"])
    assert list(info.members) == ["alice", "bob", "charlie"] and info.version == 1
    await bob.wait_until(membership_seen(bob, 1))
    for i in range(3):
        await alice.send_group("team", f"team {i}")
    for i in range(7):  # more 1:1 traffic for charlie than 1:1 history keeps (5)
        await bob.send("charlie", f"dm {i}")
    assert [r.text for r in await bob.wait_for(3)] == ["team 0", "team 1", "team 2"]

    later = HeadlessClient("charlie", [stack.address(3)], str(tmp_path / "keys"))
    later.follow_group("team")  # a fresh device: recover the whole conversation from history
    await later.start()
    try:
        await later.wait_until(lambda: len(later.received_in("team")) >= 3)
        assert [r.text for r in later.received_in("team")] == ["team 0", "team 1", "team 2"]
        assert "team" in (await later.call("ListUsers", pb.ListUsersRequest())).groups
        await later.send_group("team", "sorry, was away")
        assert (await alice.wait_for(1))[0].text == "sorry, was away"
    finally:
        await later.close()


@pytest.mark.on_cluster  # and on a Redis Cluster of 3 primaries and 3 replicas
async def test_member_recovers_group_messages_after_its_gateway_dies(stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=3, settings=SENDS)
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(2), stack.address(3)])
    await alice.send_group("group1", "one")
    await bob.wait_for(1)
    stack.kill("gateway-2")
    # More than the shipped 5-message history while bob is away: recovery must read the delivery log.
    during = [f"during {i}" for i in range(12)]
    for text in during:
        await alice.send_group("group1", text)
    await bob.wait_for(13, timeout=30)
    await alice.send_group("group1", "sentinel")  # anything still to come twice would come before this
    await bob.wait_for(14, timeout=30)
    assert bob.texts() == ["one", *during, "sentinel"]


async def test_group_membership_cache_is_dropped_after_a_pubsub_gap(stack_factory, client_factory) -> None:
    """docs/HISTORY.md: a gateway drops its whole group-membership cache after a pub/sub gap, so a
    change announced while its pub/sub connection was down is not trusted stale for up to the TTL.

    bob's gateway caches group1 (bob a member); it is frozen while Redis cuts its pub/sub
    connection and alice removes bob, so the announcement never reaches it. A second after the
    gateway runs again, bob's next group send is refused, sooner than the cache's TTL would.
    """
    stack = stack_factory(gateways=2, settings=SENDS)
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(2)])

    def chat() -> pb.Message:
        return pb.Message(id=uuid.uuid4().hex, kind=pb.CHAT, group="group1", body=b"\x01ciphertext")

    await bob.call("SendMsg", chat())  # bob's gateway now holds group1's members in its cache
    cached = asyncio.get_running_loop().time()
    redis = Redis.from_url(stack.redis.url)
    try:
        stack.signal("gateway-2", signal.SIGSTOP)
        try:
            assert await redis.client_kill_filter(_type="pubsub") >= 2  # both gateways' connections
            await alice.groups.change(REMOVE, "group1", "bob")
        finally:
            stack.signal("gateway-2", signal.SIGCONT)
    finally:
        await redis.aclose()
    await asyncio.sleep(GAP_NOTICED_SECONDS)
    try:
        await bob.call("SendMsg", chat())
    except SpartanError as refused:
        assert refused.code == grpc.StatusCode.PERMISSION_DENIED, refused
    else:
        raise AssertionError(f"a removed member's group send was accepted {GAP_NOTICED_SECONDS}s after the "
                             f"pub/sub gap: the gateway kept its stale membership cache; its log:\n"
                             f"{stack.log('gateway-2')[-2000:]}")
    assert asyncio.get_running_loop().time() - cached < CACHE_TTL_SECONDS, "too slow to tell the gap from the TTL"


async def test_member_removed_while_away_reconnects_with_a_stale_group_cursor(stack_factory, client_factory,
                                                                              tmp_path: Path) -> None:
    stack = stack_factory(gateways=2)
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(2)])
    await alice.send_group("group1", "hello")
    await bob.wait_for(1)
    cursors = dict(bob.positions)
    await bob.close()
    await alice.groups.change(REMOVE, "group1", "bob")
    await alice.send("bob", "you were removed")

    again = HeadlessClient("bob", [stack.address(2)], str(tmp_path / "keys"))
    again.positions.update(cursors)  # still names group:group1, which bob may no longer read
    again.follow("alice")
    await again.start()
    try:
        assert [r.text for r in await again.wait_for(1)] == ["you were removed"]
        assert again.receiver.failed is None
    finally:
        await again.close()


async def test_bad_group_input_is_refused_precisely(stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=2, settings=GROUP_CALLS)
    alice = await client_factory("alice", [stack.address(1)])
    foo = await client_factory("foo", [stack.address(2)])

    def chat(group: str) -> pb.Message:
        return pb.Message(id=uuid.uuid4().hex, kind=pb.CHAT, group=group, body=b"\x01ciphertext")

    def change(group: str, actor: str, action: str, member: str = "", members: tuple[str, ...] = ()
               ) -> pb.MembershipRecord:
        """A record naming the change (unsigned: presence checks what it names, members check signatures)."""
        return pb.MembershipRecord(group=group, version=2 if action != CREATE else 1, previous=NO_PREVIOUS,
                                   actor=actor, action=action, member=member, members=sorted(members))

    def add(group: str, actor: str, user: str) -> pb.GroupRequest:
        return pb.GroupRequest(group=group, user=user, change=change(group, actor, ADD, user))

    def create(group: str, members: list[str]) -> pb.GroupRequest:
        return pb.GroupRequest(group=group, members=members,
                               change=change(group, "alice", CREATE, members=("alice", *members)))

    codes = {
        "not a member sends": foo.call("SendMsg", chat("group1")),
        "not a member reads members": foo.call("GetGroup", pb.GroupRequest(group="group1")),
        "not a member invites": foo.call("AddMember", add("group1", "foo", "foo")),
        "unknown group send": alice.call("SendMsg", chat("nosuch")),
        "unknown group get": alice.call("GetGroup", pb.GroupRequest(group="nosuch")),
        "invite unknown user": alice.call("AddMember", add("group1", "alice", "mallory")),
        "invite a member": alice.call("AddMember", add("group1", "alice", "bob")),
        "invite without a signed record": alice.call("AddMember", pb.GroupRequest(group="group1", user="foo")),
        "invite with another change's record": alice.call("AddMember", pb.GroupRequest(
            group="group1", user="foo", change=change("group1", "alice", ADD, "qux"))),
        "create existing": alice.call("CreateGroup", create("group1", ["bob"])),
        "create named like a user": alice.call("CreateGroup", create("bob", ["eve"])),
        "create with unknown user": alice.call("CreateGroup", create("g9", ["mallory"])),
        "bad group name": alice.call("GetGroup", pb.GroupRequest(group="Bad Name!")),
        "key to a non-member": alice.call("SendSenderKeys", pb.SenderKeyBatch(
            group="group1", keys=[pb.Message(id="k1", recipient="foo", body=b"sealed")])),
        "key from a non-member": foo.call("SendSenderKeys", pb.SenderKeyBatch(
            group="group1", keys=[pb.Message(id="k2", recipient="alice", body=b"sealed")])),
        "key without a group": alice.call("SendMsg", pb.Message(id="k3", kind=pb.SENDER_KEY, recipient="bob",
                                                                body=b"sealed")),
    }
    expected = {
        "not a member sends": grpc.StatusCode.PERMISSION_DENIED,
        "not a member reads members": grpc.StatusCode.PERMISSION_DENIED,
        "not a member invites": grpc.StatusCode.PERMISSION_DENIED,
        "unknown group send": grpc.StatusCode.NOT_FOUND,
        "unknown group get": grpc.StatusCode.NOT_FOUND,
        "invite unknown user": grpc.StatusCode.NOT_FOUND,
        "invite a member": grpc.StatusCode.ALREADY_EXISTS,
        "invite without a signed record": grpc.StatusCode.INVALID_ARGUMENT,
        "invite with another change's record": grpc.StatusCode.INVALID_ARGUMENT,
        "create existing": grpc.StatusCode.ALREADY_EXISTS,
        "create named like a user": grpc.StatusCode.INVALID_ARGUMENT,
        "create with unknown user": grpc.StatusCode.NOT_FOUND,
        "bad group name": grpc.StatusCode.INVALID_ARGUMENT,
        "key to a non-member": grpc.StatusCode.FAILED_PRECONDITION,
        "key from a non-member": grpc.StatusCode.PERMISSION_DENIED,
        "key without a group": grpc.StatusCode.INVALID_ARGUMENT,
    }
    got = {name: (await refusal(call)).code() for name, call in codes.items()}
    assert got == expected

    unsigned = await refusal(alice.call("AddMember", pb.GroupRequest(group="group1", user="foo")))
    assert unsigned.details() == "a change of group1 must carry its record signed by you; update your client"
    solo = await alice.groups.change(CREATE, "solo")
    assert list(solo.members) == ["alice"]
    last = await refusal(alice.groups.change(LEAVE, "solo"))
    assert last.code() == grpc.StatusCode.FAILED_PRECONDITION and "last member" in (last.details() or "")
    # the servers are fine after all that
    await alice.send_group("group1", "still working")
    assert (await alice.call("GetGroup", pb.GroupRequest(group="group1"))).version == 1


async def test_forged_group_message_is_flagged_and_delivery_goes_on(stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=2)
    bob = await client_factory("bob", [stack.address(1)])
    charlie = await client_factory("charlie", [stack.address(2)])
    await bob.send_group("group1", "genuine")
    genuine = (await charlie.wait_for(1))[0].message

    tampered = bytearray(genuine.body)
    tampered[30] ^= 0x01  # inside the ciphertext: the signature no longer matches
    forged = pb.Message(id=uuid.uuid4().hex, kind=pb.CHAT, sender="bob", group="group1",
                        conversation=naming.group_conversation("group1"), body=bytes(tampered))
    redis = Redis.from_url(stack.redis.url)  # a compromised server relays it
    try:
        await redis.spublish(naming.group_channel("group1"), forged.SerializeToString())
    finally:
        await redis.aclose()
    await charlie.wait_for(2)
    assert charlie.received[1].text is None
    assert (await charlie.groups.open(charlie.received[1].message)).problem == FORGED
    await bob.send_group("group1", "still genuine")
    assert (await charlie.wait_for(3))[2].text == "still genuine"


def test_cli_picks_a_group_at_the_prompt_and_shows_group_lines(stack_factory, tmp_path: Path) -> None:
    stack = stack_factory(gateways=2)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARTAN_KEY_DIR": str(tmp_path / "keys")}
    env.pop("SPARTAN_CONFIG", None)

    def client(user: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(ROOT / "client.py"), user, "--server", stack.address(1)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=tmp_path, env=env)

    bob = client("bob")
    lines: dict[str, list[str]] = {"alice": [], "bob": []}
    read_until(bob, lines["bob"], "User list")
    write(bob, "group1")
    read_until(bob, lines["bob"], "[Spartan] group1 was set up by the operator with alice, bob, charlie, eve.")
    read_until(bob, lines["bob"], "You are now in group group1")
    alice = client("alice")
    read_until(alice, lines["alice"], "User list")
    assert lines["alice"][1] == "[Spartan] User list: bob,charlie,eve,foo,bar,baz,qux"
    write(alice, "group1")
    read_until(alice, lines["alice"], "You are now in group group1")
    write(alice, "Hi group!")
    read_until(bob, lines["bob"], "[group1][alice] Hi group!")
    write(bob, "Hi alice")
    read_until(alice, lines["alice"], "[group1][bob] Hi alice")
    write(alice, "/history")  # the group's recent messages from the server, decrypted with the sender keys
    read_until(alice, lines["alice"], "Recent messages in group1:")
    read_until(alice, lines["alice"], "[group1][bob] Hi alice")
    assert lines["alice"][-1] == "[group1][bob] Hi alice"
    write(alice, "/members")
    read_until(alice, lines["alice"], "Members of group1: alice, bob, charlie, eve")
    write(alice, "/groups")
    read_until(alice, lines["alice"], "Your groups: group1")
    write(alice, "/invite mallory")
    read_until(alice, lines["alice"], "unknown user 'mallory'")
    write(alice, "/remove eve")
    read_until(alice, lines["alice"], "[Spartan] alice removed eve from group1.")
    read_until(bob, lines["bob"], "[Spartan] alice removed eve from group1.")
    write(bob, "/leave")
    read_until(bob, lines["bob"], "[Spartan] bob left group1.")
    read_until(bob, lines["bob"], "You are no longer a member of group1")
    read_until(alice, lines["alice"], "[Spartan] bob left group1.")
    for process in (alice, bob):
        assert process.stdin is not None
        process.stdin.close()
        assert process.wait(timeout=30) == 0
    assert not any("Traceback" in line for line in lines["alice"] + lines["bob"])


async def test_a_message_sent_right_after_an_add_reaches_the_new_member_whose_gateway_lagged(
        stack_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    """bob's gateway is stopped (SIGSTOP) while alice adds him and sends at once: the message is published
    on the group's channel before bob's gateway can subscribe to it. When the gateway goes on, it takes
    the MEMBERSHIP message, subscribes, and reads the group's log from where bob joined: the message
    arrives without a reconnect."""
    stack = stack_factory(gateways=2, settings=GROUP_CALLS)
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(2)])
    await alice.groups.change(CREATE, "late", members=["charlie"])
    stack.signal("gateway-2", signal.SIGSTOP)
    try:
        await alice.groups.change(ADD, "late", "bob")
        await alice.send_group("late", "right after the add")
    finally:
        stack.signal("gateway-2", signal.SIGCONT)
    await bob.wait_until(lambda: [r.text for r in bob.received_in("late")] == ["right after the add"])
    assert sum(1 for e in bob.events if e.kind == pb.SYNCED) == 1, "it came without a reconnect"
