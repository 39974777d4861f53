"""Group membership in Redis: seeded from config once, changed at run time, versioned.

Each group is a set of members, a version that increases on every change (clients
rotate their sender keys when it does) and its chain of change records, all under the
group's hash tag so each script touches one cluster slot. A reverse index per user (in
that user's slot) lists their groups so a gateway can subscribe to them on connect; it
cannot change in the same step as the group, so it is kept a superset (written before
an add, cleaned after a removal) and read through the groups' member sets, which are
the truth. Config groups are created with SETNX on the version, so a restart neither
duplicates them nor re-adds members who were removed at run time. Every change is a MEMBERSHIP message
kept in the delivery log of each member's inbox (and of the affected user's, who may
have just left), so a member who was offline learns of it when they connect; it is
also published for the gateways' membership caches. Members who join start reading
the group's delivery log after its newest message.

Each group also has its chain of change records (`spartan.crypto.membership`): a
config group starts with the operator's unsigned genesis, a created one with its
creator's signed record, and every change appends the record its author signed, in
the same script step as the change. Presence checks that the record describes this
change and its resulting members, names the chain's last record and is signed by its
actor's key in the directory, so one member cannot jam the chain for the others; the
members' clients check all of it again, which is where the guarantee lies.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Mapping
from typing import cast

from redis.asyncio import Redis

from services.presence.store import PresenceStore
from spartan.crypto.identity import verify_signature
from spartan.crypto.membership import ADD, CREATE, GENESIS, LEAVE, NO_PREVIOUS, REMOVE, record_hash, transcript
from spartan.delivery_log import DeliveryLog
from spartan.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from spartan.naming import GROUP_CHANGES_CHANNEL, group_conversation, inbox_conversation
from spartan.redis_conn import text
from spartan.redis_scripts import script
from spartan.v1 import pb
from spartan.validation import check_name, check_user

GROUP_NAMES = "sp:p:group-names"  # set of every group's name, for the start-up checks that visit them all
LEGACY_VERSIONS = "sp:p:groups"  # hash group -> version of releases before per-group keys; read to migrate


def members_key(group: str) -> str:
    return f"sp:p:group:{{{group}}}:members"


def version_key(group: str) -> str:
    return f"sp:p:group:{{{group}}}:version"


def chain_key(group: str) -> str:
    """The group's change records, oldest first."""
    return f"sp:p:group:{{{group}}}:chain"


def group_keys(group: str) -> list[str]:
    """KEYS[1..3] of every group script: members, version and chain (one slot)."""
    return [members_key(group), version_key(group), chain_key(group)]


def user_groups_key(user: str) -> str:
    """A superset of the user's groups (see the module docstring)."""
    return f"sp:p:usergroups:{{{user}}}"


_REASONS = {
    "no_group": lambda g, u: NotFound(f"unknown group '{g}'"),
    "not_member": lambda g, u: PermissionDenied(f"you are not a member of {g}"),
    "already_member": lambda g, u: AlreadyExists(f"{u} is already a member of {g}"),
    "not_in_group": lambda g, u: NotFound(f"{u} is not a member of {g}"),
    "last_member": lambda g, u: FailedPrecondition(f"{u} is the last member of {g}; a group cannot be left empty"),
    "full": lambda g, u: FailedPrecondition(f"{g} already has the most members a group may have; remove one first"),
    "stale": lambda g, u: FailedPrecondition(f"{g} changed meanwhile; fetch its members and sign the change again"),
    "mismatch": lambda g, u: InvalidArgument(f"the change record's member list does not match {g} after this change"),
    "unsigned": lambda g, u: InvalidArgument(f"the change record of {g} is not signed by your registered key"),
}


class GroupStore:
    def __init__(
        self, redis: Redis, users: Collection[str], log: DeliveryLog, directory: PresenceStore, max_members: int = 256
    ) -> None:
        self.redis = redis
        self.directory = directory  # the key directory: presence refuses records their actor did not sign
        self.max_members = max_members  # a sender-key batch holds one key per other member: bounded by this
        self.log = log
        self.users = frozenset(users)
        self._change = script(redis, "group_change")
        self._read = script(redis, "group_read")
        self._write = script(redis, "group_write")
        self._start_chain = script(redis, "group_chain_start")

    async def seed(self, groups: Mapping[str, list[str]]) -> None:
        """Create the config groups once, each with the operator's genesis record as its chain's first entry.

        Replicas may seed at the same moment. A config group is written genesis first (only if it has
        no chain), then its members (idempotent), and its version last, so no replica ever sees a
        version without its members and chain: the group simply does not exist until it is whole.
        """
        await self._migrate_legacy_versions()
        for group, members in groups.items():
            if await self.redis.exists(version_key(group)):
                continue  # seeded before, or created or changed at run time: keep what is there
            genesis = _genesis(group, 1, members)
            await self._start_chain(keys=[chain_key(group)], args=[genesis.SerializeToString()])
            await self._write_members(group, members, None)
            await self.redis.set(version_key(group), 1, nx=True)
        await self._start_missing_chains()

    async def _migrate_legacy_versions(self) -> None:
        """Copy versions from the one hash of earlier releases to each group's own key (never over a newer one).

        The old hash stays as it was: a replica of an earlier release may still be reading it.
        """
        for raw_group, raw_version in (await self.redis.hgetall(LEGACY_VERSIONS)).items():
            group = text(raw_group)
            await self.redis.set(version_key(group), int(raw_version), nx=True)
            await self.redis.sadd(GROUP_NAMES, group)

    async def _start_missing_chains(self) -> None:
        """Groups kept from before changes were signed get a genesis of their state now, so their
        members' clients have a chain to start from (the operator vouches for it, as for config)."""
        for raw in await self.redis.smembers(GROUP_NAMES):
            group = text(raw)
            if not await self.redis.exists(chain_key(group)):
                try:
                    info = await self.get(group)
                except NotFound:
                    continue  # a config group another replica is seeding: its genesis is already written
                if not info.members:
                    continue  # being created right now (its creator writes the chain), not a group from before
                genesis = _genesis(group, info.version, info.members)
                await self._start_chain(keys=[chain_key(group)], args=[genesis.SerializeToString()])

    async def create(
        self, group: str, creator: str, members: list[str], change: pb.MembershipRecord | None = None
    ) -> pb.GroupInfo:
        check_name(group, "group name")
        check_user(creator, self.users)
        if group in self.users:
            raise InvalidArgument(f"'{group}' is a user name; pick another group name")
        if len({creator, *members}) > self.max_members:
            raise InvalidArgument(f"a group has at most {self.max_members} members, you included")
        everyone = sorted({creator, *(check_user(m, self.users, "member") for m in members)})
        if change is not None:
            self._check_record(change, group, creator, CREATE, "")
            if change.version != 1 or change.previous != NO_PREVIOUS or list(change.members) != everyone:
                raise InvalidArgument(f"the change record does not describe the creation of {group} with its members")
            if await self.redis.exists(version_key(group)):  # said before a bad signature: the precise reason first
                raise AlreadyExists(f"group '{group}' already exists")
            if not await self._signed(change):
                raise _REASONS["unsigned"](group, creator)
        if not await self.redis.set(version_key(group), 1, nx=True):
            raise AlreadyExists(f"group '{group}' already exists")
        await self._write_members(group, everyone, change)
        await self.log.join(group_conversation(group), everyone)
        info = pb.GroupInfo(group=group, members=everyone, version=1)
        for member in everyone:
            await self._announce(info, creator, member, f"{creator} created {group}", [member], change)
        return info

    async def add(
        self, group: str, *, actor: str, user: str, change: pb.MembershipRecord | None = None
    ) -> pb.GroupInfo:
        check_user(user, self.users)
        info = await self._apply("add", group, actor, user, change)
        await self.log.join(group_conversation(group), [user])
        await self._announce(info, actor, user, f"{actor} added {user}", info.members, change)
        return info

    async def remove(
        self, group: str, *, actor: str, user: str, change: pb.MembershipRecord | None = None
    ) -> pb.GroupInfo:
        check_user(user, self.users)
        info = await self._apply("remove", group, actor, user, change)
        text = f"{user} left" if actor == user else f"{actor} removed {user}"
        await self._announce(info, actor, user, text, [*info.members, user], change)
        return info

    async def get(self, group: str) -> pb.GroupInfo:
        check_name(group, "group name")
        version, raw_members, raw_chain = await self._read(keys=group_keys(group), args=[])
        if version is None:
            raise NotFound(f"unknown group '{group}'")
        return pb.GroupInfo(
            group=group,
            members=sorted(text(m) for m in raw_members),
            version=int(version),
            chain=[pb.MembershipRecord.FromString(raw) for raw in raw_chain],
        )

    async def groups_of(self, user: str) -> list[str]:
        """The groups `user` is a member of: the index's candidates, each checked against its member set."""
        candidates = sorted(text(g) for g in await self.redis.smembers(user_groups_key(user)))
        if not candidates:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for group in candidates:
                pipe.sismember(members_key(group), user)
            member_of = await pipe.execute()
        return [group for group, member in zip(candidates, member_of, strict=True) if member]

    async def _apply(
        self, op: str, group: str, actor: str, user: str, change: pb.MembershipRecord | None
    ) -> pb.GroupInfo:
        check_name(group, "group name")
        record: list[bytes | int | str] = [b"", 0, "", b"", ""]
        if change is not None:
            self._check_record(change, group, actor, ADD if op == "add" else LEAVE if actor == user else REMOVE, user)
            # Judged here against the chain's last record, enforced by the script after its own checks
            # (so "not a member" still wins) and only if that record is still the last.
            last = await self.redis.lindex(chain_key(group), -1)
            if last is None or not _follows(change, pb.MembershipRecord.FromString(cast(bytes, last))):
                verdict = "stale"
            else:
                verdict = "ok" if await self._signed(change) else "unsigned"
            record = [change.SerializeToString(), change.version, "\n".join(change.members), last or b"", verdict]
        if op == "add" and await self._may_change(group, actor):
            await self.redis.sadd(user_groups_key(user), group)  # before the member: the index stays a superset
        status, value, *members = await self._change(
            keys=group_keys(group), args=[op, group, actor, user, self.max_members, *record]
        )
        if status == b"err":
            raise _REASONS[text(value)](group, user)
        if op == "remove":
            await self.redis.srem(user_groups_key(user), group)
        # This change's own version and members: a read after it could see a later change's.
        return pb.GroupInfo(group=group, members=sorted(text(m) for m in members[0]), version=int(value))

    async def _may_change(self, group: str, actor: str) -> bool:
        """Whether the group exists and `actor` is in it: only then may an add touch another user's index
        (a refused add would otherwise leave entries behind that anyone could multiply)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(version_key(group))
            pipe.sismember(members_key(group), actor)
            exists, member = await pipe.execute()
        return bool(exists) and bool(member)

    async def _write_members(self, group: str, members: list[str], first: pb.MembershipRecord | None) -> None:
        """The members' index entries first (a superset is harmless), then members and first record in one step."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.sadd(user_groups_key(member), group)
            await pipe.execute()
        await self._write(keys=group_keys(group), args=[first.SerializeToString() if first else b"", *members])
        await self.redis.sadd(GROUP_NAMES, group)

    async def _announce(
        self,
        info: pb.GroupInfo,
        actor: str,
        user: str,
        text: str,
        to: Collection[str],
        change: pb.MembershipRecord | None,
    ) -> None:
        """Tell the members in `to` (kept in each one's inbox) and the gateways' caches about the change."""
        message = pb.Message(
            id=uuid.uuid4().hex,
            kind=pb.MEMBERSHIP,
            sender=actor,
            recipient=user,
            group=info.group,
            members=info.members,
            version=info.version,
            text=text,
            change=change,
        )
        for member in sorted(set(to)):
            await self.log.append_message(inbox_conversation(member), message)
        message.sent_at_us = time.time_ns() // 1000
        await self.redis.spublish(GROUP_CHANGES_CHANNEL, message.SerializeToString())

    async def _signed(self, change: pb.MembershipRecord) -> bool:
        keys = await self.directory.get_keys(change.actor)
        return keys is not None and verify_signature(keys.identity_key, transcript(change), change.signature)

    def _check_record(self, change: pb.MembershipRecord, group: str, actor: str, action: str, member: str) -> None:
        """The record must describe this very change (its signature is for the members' clients to check)."""
        if len(change.members) > self.max_members + 1:  # one more: an add to a full group is refused as full
            raise InvalidArgument(
                f"the change record lists {len(change.members)} members; a group has at most {self.max_members}"
            )
        if (change.group, change.actor, change.action, change.member) != (group, actor, action, member):
            said = " ".join(filter(None, (change.action or "nothing", change.member)))
            meant = " ".join(filter(None, (action, member)))
            raise InvalidArgument(
                f"the change record is for {said} by {change.actor or 'nobody'} in {change.group or 'no group'}, "
                f"not for this {meant} by {actor} in {group}"
            )


def _genesis(group: str, version: int, members: Collection[str]) -> pb.MembershipRecord:
    """The operator's unsigned first record: the group as config (or the state before signing) has it."""
    return pb.MembershipRecord(
        group=group, version=version, previous=NO_PREVIOUS, action=GENESIS, members=sorted(set(members))
    )


def _follows(change: pb.MembershipRecord, last: pb.MembershipRecord) -> bool:
    return change.version == last.version + 1 and change.previous == record_hash(last)
