"""Group membership that members check, against a server that lies: real gateways and presence, with
the lies written straight into the stack's Redis by a `GroupStore` bound to it (what a compromised
presence would do). A member the server adds on its own, or with a forged record, gets no key from
anyone and every member is told; a removal shown to one member and withheld from the others is
detected by them through the signed view in that member's messages; signed changes are shown to
every member."""
from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis

from services.gateway.groups import CACHE_TTL_SECONDS
from services.presence.groups import GroupStore, chain_key, members_key, user_groups_key
from services.presence.store import PresenceStore
from spartan.client.headless import HeadlessClient
from spartan.client.groups import NO_KEY, WITHHELD_GRACE_SECONDS
from spartan.config import DeliveryConfig
from spartan.crypto import Identity
from spartan.crypto.membership import ADD, CREATE, GENESIS, LEAVE, NO_PREVIOUS, REMOVE, sign_change
from spartan.delivery_log import DeliveryLog
from spartan.v1 import pb
from tests.support.stack import rates

USERS = ["alice", "bob", "charlie", "eve", "foo", "bar", "baz", "qux"]
SENDS = rates(send=1000, group=100)  # each test sends more than 3 messages and makes more than 3 changes
KEYS_SETTLE_SECONDS = 0.5  # a sender key goes out before the message it opens: anything sent is there by now


class MadeUpDirectory:
    """The key directory a lying presence consults: it says every user's key is `identity`'s."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def get_keys(self, user: str) -> pb.PublicKeys:
        return self.identity.public_keys()


def lying_presence(redis: Redis, forger: Identity | None = None) -> GroupStore:
    """Presence's own group code on the stack's Redis, driven by the test instead of by members."""
    directory = PresenceStore(redis) if forger is None else MadeUpDirectory(forger)
    return GroupStore(redis, USERS, DeliveryLog(redis, DeliveryConfig()), directory)  # type: ignore[arg-type]


def told(client, text: str):  # type: ignore[no-untyped-def]
    return lambda: text in client.notices


async def eventually(condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Poll `condition`: a notice from a client's own timer comes without a message to wake `wait_until`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


def keys_from(client, group: str) -> set[str]:  # type: ignore[no-untyped-def]
    return {e.sender for e in client.events if e.kind == pb.SENDER_KEY and e.group == group}


async def group1_with_qux_outside(stack, client_factory) -> dict:  # type: ignore[no-untyped-def]
    """alice, bob and charlie have each verified group1's chain (the operator's genesis); qux is not in it."""
    clients = {user: await client_factory(user, [stack.address(1 + i % 2)])
               for i, user in enumerate(["alice", "bob", "charlie", "qux"])}
    await clients["alice"].send_group("group1", "before")
    for user in ("bob", "charlie"):
        assert [r.text for r in await clients[user].wait_for(1)] == ["before"]
    for user in ("alice", "bob", "charlie"):
        assert "group1 was set up by the operator with alice, bob, charlie, eve." in clients[user].notices
    return clients


async def members_refuse_qux(clients: dict) -> None:  # type: ignore[type-arg]
    """Every member says qux was not added by a member; what they send next qux cannot read."""
    warning = "The server lists qux in group1 without a change signed by a member; qux gets no key from you."
    for user in ("alice", "bob", "charlie"):
        await clients[user].wait_until(told(clients[user], warning))
        assert clients[user].groups.members("group1") == ["alice", "bob", "charlie", "eve"]
    qux = clients["qux"]
    await clients["alice"].send_group("group1", "after")
    await clients["bob"].send_group("group1", "after, from bob")
    await clients["charlie"].wait_for(3)
    received = await qux.wait_for(2)  # the server delivers the group to qux: ciphertext only
    await asyncio.sleep(KEYS_SETTLE_SECONDS)
    assert [r.text for r in received] == [None, None]
    assert [(await qux.groups.open(r.message)).problem for r in received] == [NO_KEY, NO_KEY]
    assert keys_from(qux, "group1") == set()


async def test_a_member_the_server_adds_on_its_own_gets_no_key_and_every_member_is_told(
        stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=2, settings=SENDS)
    clients = await group1_with_qux_outside(stack, client_factory)
    redis = Redis.from_url(stack.redis.url)
    try:
        # "alice added qux": the server's word, with no record (members, version, announcements all written).
        info = await lying_presence(redis).add("group1", actor="alice", user="qux")
        assert "qux" in info.members and info.version == 2
    finally:
        await redis.aclose()
    await members_refuse_qux(clients)
    assert not any("added qux" in line for user in ("alice", "bob", "charlie") for line in clients[user].notices)

    # qux's client taking the server's word and sending its own key: the members refuse it.
    qux, alice = clients["qux"], clients["alice"]
    await qux.groups._distribute("group1", qux.groups.ring.rotate("group1", 2))
    await alice.wait_until(lambda: "qux" in keys_from(alice, "group1"))
    assert alice.groups.ring.latest("group1", "qux") is None


async def test_a_forged_change_record_is_refused_and_the_member_it_adds_gets_no_key(
        stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=2, settings=SENDS)
    clients = await group1_with_qux_outside(stack, client_factory)
    alice_head = clients["alice"].groups.heads["group1"]
    not_alices_key = Identity.generate("alice")
    forged = sign_change(not_alices_key, alice_head, ADD, "qux", group="group1")  # well-formed, wrong signer
    redis = Redis.from_url(stack.redis.url)
    try:
        await lying_presence(redis, forger=not_alices_key).add("group1", actor="alice", user="qux", change=forged)
    finally:
        await redis.aclose()
    refused = "A change of group1 was refused: the change is not signed by alice."
    for user in ("alice", "bob", "charlie"):
        await clients[user].wait_until(told(clients[user], refused))
    await members_refuse_qux(clients)
    assert clients["alice"].groups.heads["group1"] == alice_head


async def test_signed_changes_are_shown_to_every_member_and_keys_follow_them(stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=2, settings=SENDS)
    alice, bob, charlie, qux = [await client_factory(user, [stack.address(1 + i % 2)])
                                for i, user in enumerate(["alice", "bob", "charlie", "qux"])]

    async def signs(actor: HeadlessClient, version: int, action: str, member: str = "") -> None:
        """`actor` makes a change once its client has verified the one before (as a person would)."""
        await actor.wait_until(lambda: getattr(actor.groups.heads.get("team"), "version", 0) == version - 1)
        await actor.groups.change(action, "team", member)

    await alice.groups.change(CREATE, "team", members=["bob"])
    await signs(bob, 2, ADD, "charlie")
    await signs(charlie, 3, REMOVE, "alice")
    await signs(charlie, 4, ADD, "qux")
    await signs(bob, 5, LEAVE)
    lines = [
        "alice created team with alice, bob.",
        "bob added charlie to team.",
        "charlie removed alice from team.",
        "charlie added qux to team.",
        "bob left team.",
    ]
    # A member who joins checks the chain from its start, so it is shown every change before it too.
    seen_by = {alice: lines[:3], bob: lines, charlie: lines, qux: lines}
    for client, expected in seen_by.items():
        await client.wait_until(lambda c=client, last=expected[-1]: last in c.notices)
        changes = [n for n in client.notices if "team" in n and "key" not in n]
        assert changes[-len(expected):] == expected, client.user
    assert charlie.groups.members("team") == ["charlie", "qux"]
    await charlie.send_group("team", "just us")
    assert [r.text for r in await qux.wait_for(1)] == ["just us"]


async def test_a_removal_the_server_withholds_is_detected_by_the_members_it_hides_it_from(
        stack_factory, client_factory) -> None:
    """alice removes eve; the server shows alice the removal but never stores it nor shows it to anyone
    else (Redis, GetGroup and every other stream keep eve in group1), so bob and charlie would go on
    keying eve. alice's next message carries her signed view (version 2 and its hash): bob and charlie
    fetch the chain, still do not get the change, and each says so once."""
    stack = stack_factory(gateways=2, settings=SENDS)
    clients = await group1_with_qux_outside(stack, client_factory)
    alice, bob, charlie = clients["alice"], clients["bob"], clients["charlie"]
    removal = sign_change(alice.crypto.identity, alice.groups.heads["group1"], REMOVE, "eve", group="group1")
    await alice.groups.apply(pb.GroupInfo(group="group1", members=["alice", "bob", "charlie"], version=2,
                                          chain=[removal]))  # what the server showed alice, and alice only
    assert "alice removed eve from group1." in alice.notices
    await alice.send_group("group1", "eve is out")
    await alice.send_group("group1", "and again")
    withheld = "alice has seen a change of group1 that the server has not shown you."
    for member in (bob, charlie):
        assert [r.text for r in await member.wait_for(3)] == ["before", "eve is out", "and again"]
        await eventually(told(member, withheld), timeout=WITHHELD_GRACE_SECONDS + 10)
        assert member.notices.count(withheld) == 1
        assert member.groups.heads["group1"].version == 1
    assert withheld not in alice.notices


async def test_a_member_that_was_only_slower_is_not_warned(stack_factory, client_factory) -> None:
    """A message that overtakes the change it follows: the receiver fetches the chain and catches up quietly."""
    stack = stack_factory(gateways=2, settings=SENDS)
    clients = await group1_with_qux_outside(stack, client_factory)
    alice, bob = clients["alice"], clients["bob"]
    await alice.groups.change(REMOVE, "group1", "eve")
    await alice.send_group("group1", "eve is out")
    await bob.wait_for(2)
    await bob.wait_until(lambda: bob.groups.heads["group1"].version == 2)
    await asyncio.sleep(WITHHELD_GRACE_SECONDS + 1)
    assert not any("has not shown you" in notice for notice in bob.notices)
    assert "alice removed eve from group1." in bob.notices


async def test_a_restarted_client_keeps_its_head_and_a_rewritten_chain_does_not_move_it(
        stack_factory, client_factory, tmp_path: Path) -> None:
    """The head lives in the state journal: after a restart, a chain the server rewrote from its
    first record (a made-up genesis with qux) is not believed, and qux gets no key."""
    stack = stack_factory(gateways=1, settings=SENDS)
    bob = await client_factory("bob", [stack.address(1)])
    alice = await client_factory("alice", [stack.address(1)], persist=True)
    await alice.send_group("group1", "before")
    await bob.wait_for(1)
    head = alice.groups.heads["group1"]
    await alice.close()

    made_up = pb.MembershipRecord(group="group1", version=1, previous=NO_PREVIOUS, action=GENESIS,
                                  members=["alice", "bob", "charlie", "eve", "qux"])
    redis = Redis.from_url(stack.redis.url)
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(chain_key("group1"))
            pipe.rpush(chain_key("group1"), made_up.SerializeToString())
            pipe.sadd(members_key("group1"), "qux")
            pipe.sadd(user_groups_key("qux"), "group1")
            await pipe.execute()
    finally:
        await redis.aclose()
    await asyncio.sleep(CACHE_TTL_SECONDS)  # the gateway's cached member list (not told of this write) expires

    again = HeadlessClient("alice", [stack.address(1)], str(tmp_path / "keys"), persist=True)
    await again.start()
    try:
        await again.send_group("group1", "after")
        assert again.groups.heads["group1"] == head
        assert "The server lists qux in group1 without a change signed by a member; qux gets no key from you." \
            in again.notices
        assert not any("qux" in notice and "set up" in notice for notice in again.notices)
        assert again.groups.members("group1") == ["alice", "bob", "charlie", "eve"]
    finally:
        await again.close()


async def test_members_shown_different_histories_are_told(stack_factory, client_factory) -> None:
    """The server shows alice one change as version 2 (she removed eve) and bob another (he removed
    charlie): alice's next message carries her view, same version, another hash, and bob says so."""
    stack = stack_factory(gateways=2, settings=SENDS)
    clients = await group1_with_qux_outside(stack, client_factory)
    alice, bob = clients["alice"], clients["bob"]
    for client, member in ((alice, "eve"), (bob, "charlie")):
        removal = sign_change(client.crypto.identity, client.groups.heads["group1"], REMOVE, member, group="group1")
        members = sorted({"alice", "bob", "charlie", "eve"} - {member})
        await client.groups.apply(pb.GroupInfo(group="group1", members=members, version=2, chain=[removal]))
    await alice.send_group("group1", "which group is this?")
    assert (await bob.wait_for(2))[1].text == "which group is this?"
    forked = "alice was shown other changes of group1 than you: the server shows members different histories."
    assert forked in bob.notices
