"""Group membership against a real private redis-server, with the real delivery log.

Proven here: a created group holds its creator and members, sorted, at version 1, is in
each member's group list and is announced in each member's inbox; a name taken, a user's
name, an unknown member, a bad name or too many members are refused with the project's
error and one sentence; adding and removing bump the version by one, update both indexes
and are announced to the members and to the user concerned (and to the gateways' caches);
a non-member cannot change a group, a member cannot be added twice, a full group refuses
one more, and the last member cannot leave; a member who joins starts after the group's
newest message; config groups are seeded once, with the operator's genesis record, and a
restart does not re-add a member removed at run time; concurrent changes each get their own
version, and what is announced for a change is the group as that change left it. Signed
change records form the group's chain and travel with each announcement; a record that
does not describe the change made (another member, an old version, another member list)
is refused and changes nothing. Groups kept in the one version hash of earlier releases keep
their version; a user's group list is read through the member sets (its index may hold a
group the user is not in, never miss one), and an outsider's add writes nothing anywhere.
"""
from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from services.presence.groups import LEGACY_VERSIONS, GroupStore, members_key, user_groups_key
from services.presence.store import PresenceStore
from spartan import naming
from spartan.config import DeliveryConfig
from spartan.delivery_log import DeliveryLog
from spartan.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from spartan.crypto import Identity
from spartan.crypto.membership import (
    ADD,
    CREATE,
    GENESIS,
    LEAVE,
    NO_PREVIOUS,
    REMOVE,
    Head,
    extend,
    sign_change,
    start,
)
from spartan.v1 import pb

pytestmark = pytest.mark.on_cluster  # the same behaviour on one Redis and on a Redis Cluster

ALICE, BOB, EVE = Identity.generate("alice"), Identity.generate("bob"), Identity.generate("eve")
USERS = ["alice", "bob", "charlie", "eve", "foo", "bar", "baz", "qux"]


def make(redis: Redis, max_members: int = 256) -> GroupStore:
    return GroupStore(redis, USERS, DeliveryLog(redis, DeliveryConfig()), PresenceStore(redis), max_members)


async def register(redis: Redis, *identities: Identity) -> None:
    for identity in identities:
        await PresenceStore(redis).put_keys(identity.public_keys())


async def inbox(store: GroupStore, user: str) -> list[pb.Message]:
    """The membership messages kept for `user` (what a stream replays), oldest first."""
    page = await store.log.read(naming.inbox_conversation(user), 0, 1000)
    return [m for m in page.messages if m.kind == pb.MEMBERSHIP]


async def test_create_holds_everyone_at_version_one_and_announces_it(redis: Redis) -> None:
    store = make(redis)
    info = await store.create("team", "charlie", ["alice", "bob", "alice"])
    assert info == pb.GroupInfo(group="team", members=["alice", "bob", "charlie"], version=1)
    assert await store.get("team") == info
    for user in ("alice", "bob", "charlie"):
        assert await store.groups_of(user) == ["team"]
        (announced,) = await inbox(store, user)
        assert (announced.sender, announced.recipient, announced.group) == ("charlie", user, "team")
        assert (list(announced.members), announced.version) == (["alice", "bob", "charlie"], 1)
        assert announced.text == "charlie created team"
    assert await store.groups_of("eve") == []
    assert await inbox(store, "eve") == []


@pytest.mark.parametrize(("group", "creator", "members", "error", "sentence"), [
    ("team", "alice", ["bob"], AlreadyExists, "group 'team' already exists"),
    ("bob", "alice", [], InvalidArgument, "'bob' is a user name; pick another group name"),
    ("new", "alice", ["mallory"], NotFound, "unknown user 'mallory'"),
    ("new", "mallory", [], NotFound, "unknown user 'mallory'"),
    ("Bad Name", "alice", [], InvalidArgument, "group name Bad Name is not valid"),
    ("", "alice", [], InvalidArgument, "group name is empty"),
    ("big", "alice", ["bob", "charlie", "eve"], InvalidArgument, "a group has at most 3 members, you included"),
])
async def test_create_refuses_with_one_sentence(redis: Redis, group: str, creator: str, members: list[str],
                                                error: type[Exception], sentence: str) -> None:
    store = make(redis, max_members=3)
    await store.create("team", "alice", ["bob"])
    with pytest.raises(error, match="^" + sentence.replace("(", r"\(")):
        await store.create(group, creator, members)
    assert await store.get("team") == pb.GroupInfo(group="team", members=["alice", "bob"], version=1)
    if group not in ("team", "bob"):
        with pytest.raises(NotFound if group == "new" or group == "big" else InvalidArgument):
            await store.get(group)  # nothing half-made


async def test_add_and_remove_bump_the_version_and_update_both_indexes(redis: Redis) -> None:
    store = make(redis)
    await store.create("team", "alice", ["bob"])
    added = await store.add("team", actor="bob", user="charlie")
    assert added == pb.GroupInfo(group="team", members=["alice", "bob", "charlie"], version=2)
    assert await store.groups_of("charlie") == ["team"]

    removed = await store.remove("team", actor="charlie", user="alice")
    assert removed == pb.GroupInfo(group="team", members=["bob", "charlie"], version=3)
    assert await store.groups_of("alice") == []
    left = await store.remove("team", actor="bob", user="bob")
    assert left == pb.GroupInfo(group="team", members=["charlie"], version=4)
    assert await store.get("team") == left


async def test_changes_are_announced_to_members_and_to_the_user_concerned(redis: Redis) -> None:
    store = make(redis)
    await store.create("team", "alice", ["bob"])
    changes = redis.pubsub()
    await changes.ssubscribe(naming.GROUP_CHANGES_CHANNEL)
    read = getattr(changes, "get_sharded_message", changes.get_message)  # a cluster's pub/sub reads per shard
    confirmed = await read(timeout=10)  # the gateways' cache channel is listened to from here
    assert confirmed is not None and confirmed["type"] == "ssubscribe"
    await store.add("team", actor="alice", user="charlie")
    await store.remove("team", actor="alice", user="bob")
    await store.remove("team", actor="charlie", user="charlie")

    texts = {user: [m.text for m in await inbox(store, user)] for user in ("alice", "bob", "charlie")}
    assert texts["alice"] == ["alice created team", "alice added charlie", "alice removed bob", "charlie left"]
    assert texts["bob"] == ["alice created team", "alice added charlie", "alice removed bob"]  # told, then no more
    assert texts["charlie"] == ["alice added charlie", "alice removed bob", "charlie left"]
    (removal,) = [m for m in await inbox(store, "bob") if m.version == 3]
    assert (removal.recipient, list(removal.members)) == ("bob", ["alice", "charlie"])

    published = []
    while len(published) < 3:
        item = await read(timeout=10)
        assert item is not None, f"only {len(published)} of 3 changes were published for the gateways"
        published.append(pb.Message.FromString(item["data"]))
    assert [(m.group, m.version, m.recipient) for m in published] == [
        ("team", 2, "charlie"), ("team", 3, "bob"), ("team", 4, "charlie")]
    assert all(m.kind == pb.MEMBERSHIP and m.sent_at_us > 0 for m in published)
    await changes.aclose()


@pytest.mark.parametrize(("op", "actor", "user", "error", "sentence"), [
    ("add", "eve", "foo", PermissionDenied, "you are not a member of team"),
    ("remove", "eve", "alice", PermissionDenied, "you are not a member of team"),
    ("add", "alice", "bob", AlreadyExists, "bob is already a member of team"),
    ("remove", "alice", "eve", NotFound, "eve is not a member of team"),
    ("add", "alice", "mallory", NotFound, "unknown user 'mallory'"),
])
async def test_changes_by_outsiders_or_of_the_wrong_user_are_refused(redis: Redis, op: str, actor: str, user: str,
                                                                     error: type[Exception],
                                                                     sentence: str) -> None:
    store = make(redis, max_members=3)
    await store.create("team", "alice", ["bob"])
    change = store.add if op == "add" else store.remove
    with pytest.raises(error, match="^" + sentence + "$"):
        await change("team", actor=actor, user=user)
    assert await store.get("team") == pb.GroupInfo(group="team", members=["alice", "bob"], version=1)


async def test_a_full_group_refuses_one_more_and_the_last_member_cannot_leave(redis: Redis) -> None:
    store = make(redis, max_members=3)
    await store.create("team", "alice", ["bob", "charlie"])
    with pytest.raises(FailedPrecondition, match="team already has the most members a group may have"):
        await store.add("team", actor="alice", user="eve")
    with pytest.raises(NotFound, match="unknown group 'nope'"):
        await store.add("nope", actor="alice", user="eve")
    await store.remove("team", actor="alice", user="charlie")
    await store.remove("team", actor="alice", user="bob")
    with pytest.raises(FailedPrecondition, match="alice is the last member of team; a group cannot be left empty"):
        await store.remove("team", actor="alice", user="alice")
    assert await store.get("team") == pb.GroupInfo(group="team", members=["alice"], version=3)


async def test_concurrent_adds_never_pass_the_member_limit(redis: Redis) -> None:
    store = make(redis, max_members=4)
    await store.create("team", "alice", ["bob"])
    outcomes = await asyncio.gather(*(store.add("team", actor="alice", user=u) for u in ("charlie", "eve", "foo",
                                                                                         "bar", "baz")),
                                    return_exceptions=True)
    assert sum(isinstance(o, pb.GroupInfo) for o in outcomes) == 2
    assert all(isinstance(o, (pb.GroupInfo, FailedPrecondition)) for o in outcomes)
    final = await store.get("team")
    assert len(final.members) == 4 and final.version == 3


async def test_a_member_who_joins_starts_after_the_newest_message(redis: Redis) -> None:
    store = make(redis)
    await store.create("team", "alice", ["bob"])
    conversation = naming.group_conversation("team")
    for text in ("before 1", "before 2"):
        message = pb.Message(id=text, kind=pb.CHAT, sender="alice", group="team", conversation=conversation)
        await store.log.append(conversation, message.SerializeToString(), sender="alice")
    await store.add("team", actor="alice", user="charlie")
    assert list((await store.log.read(conversation, -1, 100, "charlie")).messages) == []
    assert [m.id for m in (await store.log.read(conversation, -1, 100, "bob")).messages] == ["before 1", "before 2"]


async def test_config_groups_are_seeded_once_and_keep_run_time_removals(redis: Redis) -> None:
    await register(redis, ALICE, BOB)
    store = make(redis)
    config_groups = {"team": ["alice", "bob", "charlie"], "ops": ["eve"]}
    await store.seed(config_groups)
    genesis = pb.MembershipRecord(group="team", version=1, previous=NO_PREVIOUS, action=GENESIS,
                                  members=["alice", "bob", "charlie"])
    assert await store.get("team") == pb.GroupInfo(group="team", members=["alice", "bob", "charlie"], version=1,
                                                   chain=[genesis])
    assert await store.groups_of("eve") == ["ops"]
    head = start(genesis, None)
    leave = sign_change(BOB, head, LEAVE, "bob", group="team")
    await store.remove("team", actor="bob", user="bob", change=leave)

    await make(redis).seed(config_groups)  # a restart of presence
    assert await store.get("team") == pb.GroupInfo(group="team", members=["alice", "charlie"], version=2,
                                                   chain=[genesis, leave])
    assert await store.groups_of("bob") == []


async def test_replicas_seeding_at_once_write_one_genesis_and_never_show_a_half_written_group(redis: Redis) -> None:
    config_groups = {f"g{i}": ["alice", "bob", "charlie"] for i in range(20)}
    seen: list[pb.GroupInfo] = []
    reader = make(redis)

    async def watch() -> None:  # what a third replica answers meanwhile
        for _ in range(200):
            for group in config_groups:
                try:
                    seen.append(await reader.get(group))
                except NotFound:
                    pass
            await asyncio.sleep(0)

    await asyncio.gather(*(make(redis).seed(config_groups) for _ in range(3)), watch())
    genesis = {group: pb.MembershipRecord(group=group, version=1, previous=NO_PREVIOUS, action=GENESIS,
                                          members=["alice", "bob", "charlie"]) for group in config_groups}
    for group in config_groups:
        assert await reader.get(group) == pb.GroupInfo(group=group, members=["alice", "bob", "charlie"], version=1,
                                                       chain=[genesis[group]])
    assert all(list(info.members) == ["alice", "bob", "charlie"] and list(info.chain) == [genesis[info.group]]
               for info in seen), "a replica answered with a group that was not whole yet"


async def test_a_group_from_before_signed_changes_gets_a_genesis_of_its_state_once(redis: Redis) -> None:
    await register(redis, ALICE, BOB)
    store = make(redis)
    await store.create("old", "alice", ["bob", "charlie"])  # as before: no record, no chain
    await store.remove("old", actor="alice", user="charlie")
    assert list((await store.get("old")).chain) == []
    await store.seed({})  # presence starts
    await make(redis).seed({})  # and another replica (or a restart)
    genesis = pb.MembershipRecord(group="old", version=2, previous=NO_PREVIOUS, action=GENESIS,
                                  members=["alice", "bob"])
    assert list((await store.get("old")).chain) == [genesis]
    head = start(genesis, None)
    added = sign_change(BOB, head, ADD, "eve", group="old")
    await store.add("old", actor="bob", user="eve", change=added)
    assert extend(head, added, BOB.identity_key).members == {"alice", "bob", "eve"}


async def test_signed_changes_form_the_chain_and_each_announcement_carries_its_record(redis: Redis) -> None:
    await register(redis, ALICE, BOB)
    store = make(redis)
    created = sign_change(ALICE, None, CREATE, "", group="team", members=["bob"])
    await store.create("team", "alice", ["bob"], created)
    head = start(created, ALICE.identity_key)
    added = sign_change(BOB, head, ADD, "charlie", group="team")
    await store.add("team", actor="bob", user="charlie", change=added)
    head = extend(head, added, BOB.identity_key)
    removed = sign_change(ALICE, head, REMOVE, "bob", group="team")
    info = await store.remove("team", actor="alice", user="bob", change=removed)
    assert (info.version, list(info.members)) == (3, ["alice", "charlie"])
    assert list((await store.get("team")).chain) == [created, added, removed]
    announced = {m.version: m.change for m in await inbox(store, "bob")}
    assert announced == {1: created, 2: added, 3: removed}  # bob hears of his own removal, with its record


@pytest.mark.parametrize(("change", "error", "sentence"), [
    (lambda head: sign_change(ALICE, head, ADD, "eve", group="team"), InvalidArgument,
     "the change record is for add eve by alice in team, not for this add charlie by alice in team"),
    (lambda head: sign_change(ALICE, Head("team", 5, head.digest, head.members), ADD, "charlie", group="team"),
     FailedPrecondition, "team changed meanwhile; fetch its members and sign the change again"),
    (lambda head: sign_change(ALICE, Head("team", 1, head.digest, frozenset({"alice"})), ADD, "charlie",
                              group="team"),
     InvalidArgument, "the change record's member list does not match team after this change"),
    (lambda head: sign_change(ALICE, head, REMOVE, "charlie", group="team"), InvalidArgument,
     "the change record is for remove charlie by alice in team, not for this add charlie by alice in team"),
    (lambda head: pb.MembershipRecord(group="team", version=2, actor="alice", action=ADD, member="charlie",
                                      members=[f"m{i}" for i in range(300)]),
     InvalidArgument, "the change record lists 300 members; a group has at most 256"),
    (lambda head: sign_change(BOB.__class__("alice", *BOB.private_seeds()), head, ADD, "charlie", group="team"),
     InvalidArgument, "the change record of team is not signed by your registered key"),
    (lambda head: sign_change(ALICE, Head("team", 1, bytes(32), head.members), ADD, "charlie", group="team"),
     FailedPrecondition, "team changed meanwhile; fetch its members and sign the change again"),
])
async def test_a_record_that_is_not_this_change_is_refused_and_nothing_changes(redis: Redis, change, error,  # type: ignore[no-untyped-def]
                                                                              sentence: str) -> None:
    await register(redis, ALICE, BOB)
    store = make(redis)
    created = sign_change(ALICE, None, CREATE, "", group="team", members=["bob"])
    await store.create("team", "alice", ["bob"], created)
    record = change(start(created, ALICE.identity_key))
    with pytest.raises(error, match="^" + sentence + "$"):
        await store.add("team", actor="alice", user="charlie", change=record)
    assert await store.get("team") == pb.GroupInfo(group="team", members=["alice", "bob"], version=1, chain=[created])


async def test_concurrent_changes_each_get_their_own_version(redis: Redis) -> None:
    store = make(redis)
    await store.create("team", "alice", [])
    newcomers = ["bob", "charlie", "eve", "foo", "bar"]
    infos = await asyncio.gather(*(store.add("team", actor="alice", user=u) for u in newcomers))
    assert (await store.get("team")).version == 1 + len(newcomers)
    assert sorted(info.version for info in infos) == list(range(2, 2 + len(newcomers))), (
        "two changes answered with the same version")
    for user, info in zip(newcomers, infos):
        assert user in info.members
        assert len(info.members) == info.version  # one creator plus one member per change so far

    announced = [m for m in await inbox(store, "alice") if m.text.startswith("alice added")]
    assert len({m.version for m in announced}) == len(newcomers), (
        "two changes were announced under one version: a client shows only one of them")


async def test_an_outsiders_change_is_refused_as_such_whatever_its_record(redis: Redis) -> None:
    """The script's own checks come first: a forged record from a non-member is "not a member"."""
    await register(redis, ALICE, BOB, EVE)
    store = make(redis)
    created = sign_change(ALICE, None, CREATE, "", group="team", members=["bob"])
    await store.create("team", "alice", ["bob"], created)
    forged = sign_change(ALICE, start(created, ALICE.identity_key), ADD, "eve", group="team")
    forged.actor = "eve"  # eve sends alice's signature as hers
    with pytest.raises(PermissionDenied, match="^you are not a member of team$"):
        await store.add("team", actor="eve", user="eve", change=forged)
    unsigned = sign_change(EVE, None, CREATE, "", group="team", members=["bob"])
    unsigned.signature = bytes(64)
    with pytest.raises(AlreadyExists, match="^group 'team' already exists$"):
        await store.create("team", "eve", ["bob"], unsigned)
    with pytest.raises(InvalidArgument, match="^the change record of other is not signed by your registered key$"):
        await store.create("other", "eve", ["bob"], _renamed(unsigned, "other"))
    assert list((await store.get("team")).chain) == [created]


def _renamed(record: pb.MembershipRecord, group: str) -> pb.MembershipRecord:
    copy = pb.MembershipRecord()
    copy.CopyFrom(record)
    copy.group = group
    return copy


async def test_a_group_kept_by_an_earlier_release_keeps_its_version_members_and_gets_a_genesis(redis: Redis) -> None:
    # Earlier releases kept every group's version in one hash (a key in one cluster slot for all groups).
    await redis.hset(LEGACY_VERSIONS, "old", 7)
    await redis.sadd(members_key("old"), "alice", "bob")
    await redis.sadd(user_groups_key("alice"), "old")
    await redis.sadd(user_groups_key("bob"), "old")
    await make(redis).seed({"old": ["alice", "charlie"]})  # the config names it too: what is kept wins
    genesis = pb.MembershipRecord(group="old", version=7, previous=NO_PREVIOUS, action=GENESIS,
                                  members=["alice", "bob"])
    assert await make(redis).get("old") == pb.GroupInfo(group="old", members=["alice", "bob"], version=7,
                                                        chain=[genesis])
    assert await make(redis).groups_of("bob") == ["old"]
    await register(redis, ALICE)
    info = await make(redis).add("old", actor="alice", user="eve")
    assert info.version == 8
    assert await redis.hget(LEGACY_VERSIONS, "old") == b"7", "the old hash is left for replicas of that release"


async def test_the_group_index_is_read_through_the_member_sets(redis: Redis) -> None:
    # A user's index of groups is in the user's slot, the members in the group's: they cannot change in one
    # step, so the index may name a group the user is not in (an add refused after its index entry).
    store = make(redis)
    await store.create("g1", "alice", ["bob"])
    await store.create("g2", "alice", ["charlie"])
    await redis.sadd(user_groups_key("bob"), "g2", "no-such-group")
    assert await store.groups_of("bob") == ["g1"]
    with pytest.raises(FailedPrecondition):  # refused after the index entry was written
        await make(redis, max_members=2).add("g2", actor="alice", user="bob")
    assert await store.groups_of("bob") == ["g1"]
    await store.remove("g1", actor="alice", user="bob")
    assert await store.groups_of("bob") == []
    assert not await redis.sismember(user_groups_key("bob"), "g1"), "a removal cleans the index"


async def test_an_outsiders_add_leaves_nothing_in_the_victims_index(redis: Redis) -> None:
    store = make(redis)
    await store.create("g1", "alice", ["bob"])
    for group in ("g1", "nonexistent"):
        with pytest.raises((PermissionDenied, NotFound)):
            await store.add(group, actor="eve", user="charlie")
    assert await redis.smembers(user_groups_key("charlie")) == set()
