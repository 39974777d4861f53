"""Signed group membership: a hash chain of changes that members check, so the server cannot add anyone.

Every change (create, add, remove, leave) is a `MembershipRecord` signed with the
Ed25519 identity key of the member who made it, over a labelled transcript of
(group, version, hash of the previous record, actor, action, member, resulting
member list). Each record names the hash of the one before, so a chain has one
order and a server can neither insert, drop nor reorder changes without a member
noticing. The first record is either a member's signed "create" or the operator's
unsigned "genesis" (the groups in config.yaml), which clients show as such.

A client keeps the last record it verified as its `Head` and moves it only with
`extend`: the next version, naming the head's hash, signed by a member of the
head (or, for "leave", by the member leaving), whose member list is exactly the
head's with that one change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from Crypto.Hash import SHA256

from spartan.crypto.encoding import encode_fields
from spartan.crypto.identity import Identity, verify_signature
from spartan.errors import InvalidArgument
from spartan.v1 import pb

RECORD_VERSION = 1
SIGN_LABEL = b"spartan/v1/membership-change"
HASH_LABEL = b"spartan/v1/membership-hash"
NO_PREVIOUS = bytes(32)
GENESIS, CREATE, ADD, REMOVE, LEAVE = "genesis", "create", "add", "remove", "leave"
FIRST_ACTIONS = (GENESIS, CREATE)


class MembershipError(InvalidArgument):
    """A change that cannot be made or accepted; for a received record the message is a clause
    that follows "A change of <group> was refused: "."""


@dataclass(frozen=True)
class Head:
    """The last membership change a client verified for a group."""

    group: str
    version: int
    digest: bytes  # record_hash of that change
    members: frozenset[str]


def transcript(record: pb.MembershipRecord) -> bytes:
    """The bytes the actor signs: every field but the signature, length-prefixed, members sorted."""
    members = sorted(record.members)
    return encode_fields(
        SIGN_LABEL,
        RECORD_VERSION,
        record.group,
        record.version,
        record.previous,
        record.actor,
        record.action,
        record.member,
        len(members),
        *members,
    )


def record_hash(record: pb.MembershipRecord) -> bytes:
    """SHA-256 over the transcript and the signature: what the next record names as `previous`."""
    return SHA256.new(encode_fields(HASH_LABEL, transcript(record), record.signature)).digest()


def resulting_members(head: Head | None, action: str, actor: str, member: str) -> list[str]:
    """The member list a change leaves (for "create" and "genesis" the caller names it)."""
    current = set(head.members) if head is not None else set()
    if action == ADD:
        current.add(member)
    elif action in (REMOVE, LEAVE):
        current.discard(member)
    return sorted(current)


def sign_change(
    identity: Identity, head: Head | None, action: str, member: str, *, group: str, members: Iterable[str] = ()
) -> pb.MembershipRecord:
    """A change by `identity` on top of `head` (None for "create", which lists `members`)."""
    if action == CREATE:
        listed = sorted({identity.user, *members})
        version, previous = 1, NO_PREVIOUS
    else:
        if head is None:
            raise MembershipError(f"{group} has no verified membership to change")
        listed = resulting_members(head, action, identity.user, member)
        version, previous = head.version + 1, head.digest
    record = pb.MembershipRecord(
        group=group,
        version=version,
        previous=previous,
        actor=identity.user,
        action=action,
        member=member,
        members=listed,
    )
    record.signature = identity.sign(transcript(record))
    return record


def start(record: pb.MembershipRecord, identity_key: bytes | None) -> Head:
    """Trust the first record a client sees for a group: the operator's genesis or a signed create."""
    members = frozenset(record.members)
    if record.action == GENESIS:
        if record.actor or record.member or record.signature or record.previous != NO_PREVIOUS:
            raise MembershipError("its genesis is malformed")
    elif record.action == CREATE:
        if record.version != 1 or record.previous != NO_PREVIOUS or record.member or record.actor not in members:
            raise MembershipError("its creation is malformed")
        _check_signature(record, identity_key)
    else:
        raise MembershipError(f"its first change must set it up, not {record.action!r}")
    if list(record.members) != sorted(members) or not members:
        raise MembershipError("its first member list is malformed")
    return Head(record.group, record.version, record_hash(record), members)


def extend(head: Head, record: pb.MembershipRecord, identity_key: bytes | None) -> Head:
    """The head after `record`, or MembershipError saying why the change is refused."""
    who = record.actor or "the server"
    if record.group != head.group or record.version != head.version + 1 or record.previous != head.digest:
        raise MembershipError(f"the change by {who} does not follow the last change you saw")
    if record.action == LEAVE:
        allowed = record.actor == record.member and record.member in head.members
    elif record.action == ADD:
        allowed = record.actor in head.members and record.member not in head.members
    elif record.action == REMOVE:
        allowed = record.actor in head.members and record.member in head.members and record.actor != record.member
    else:
        allowed = False
    if not allowed:
        raise MembershipError(f"{who} may not {record.action or 'change'} {record.member or 'anyone'}")
    expected = resulting_members(head, record.action, record.actor, record.member)
    if list(record.members) != expected or not expected:
        raise MembershipError(f"the member list of the change by {who} does not match the change")
    _check_signature(record, identity_key)
    return Head(head.group, record.version, record_hash(record), frozenset(expected))


def _check_signature(record: pb.MembershipRecord, identity_key: bytes | None) -> None:
    if identity_key is None or not verify_signature(identity_key, transcript(record), record.signature):
        raise MembershipError(f"the change is not signed by {record.actor or 'a member'}")


def describe(record: pb.MembershipRecord) -> str:
    """The line a member is shown for a verified change."""
    group, actor, member = record.group, record.actor, record.member
    if record.action == GENESIS:
        return f"{group} was set up by the operator with {', '.join(record.members)}."
    if record.action == CREATE:
        return f"{actor} created {group} with {', '.join(record.members)}."
    if record.action == ADD:
        return f"{actor} added {member} to {group}."
    if record.action == LEAVE:
        return f"{actor} left {group}."
    return f"{actor} removed {member} from {group}."
