"""Signed membership changes: the exact signed bytes (checked against a second implementation), and
what a client accepts as the next change of a group and what it refuses."""
from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from spartan.crypto import Identity
from spartan.crypto.membership import (
    ADD,
    CREATE,
    GENESIS,
    LEAVE,
    NO_PREVIOUS,
    REMOVE,
    Head,
    MembershipError,
    describe,
    extend,
    record_hash,
    sign_change,
    start,
    transcript,
)
from spartan.v1 import pb

SEED = bytes(range(32))
ALICE = Identity("alice", SEED, bytes(range(32, 64)))
BOB = Identity.generate("bob")
EVE = Identity.generate("eve")
KEYS = {"alice": ALICE.identity_key, "bob": BOB.identity_key, "eve": EVE.identity_key}
HEAD = Head("group1", 1, bytes(range(100, 132)), frozenset({"alice", "bob", "charlie"}))

# alice adds eve to group1 on top of HEAD: the transcript she signs and the record's hash.
KNOWN_TRANSCRIPT = bytes.fromhex(
    "0000001c7370617274616e2f76312f6d656d626572736869702d6368616e676500000008000000000000000100000006"
    "67726f757031000000080000000000000002000000206465666768696a6b6c6d6e6f707172737475767778797a7b7c7d"
    "7e7f8081828300000005616c696365000000036164640000000365766500000008000000000000000400000005616c69"
    "636500000003626f6200000007636861726c696500000003657665"
)
KNOWN_HASH = bytes.fromhex("7ba22c47c1e88e658a15b75df30a0d5c08d23e0672440815b1f3b20e4698c583")


def fields(*values: bytes) -> bytes:
    """A second, independent writing of the length-prefixed encoding."""
    return b"".join(struct.pack(">I", len(v)) + v for v in values)


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def test_signed_record_bytes_match_the_known_answer_and_a_second_implementation() -> None:
    record = sign_change(ALICE, HEAD, ADD, "eve", group="group1")
    members = [b"alice", b"bob", b"charlie", b"eve"]
    independent = fields(b"spartan/v1/membership-change", u64(1), b"group1", u64(2), bytes(range(100, 132)),
                         b"alice", b"add", b"eve", u64(4), *members)
    assert transcript(record) == independent == KNOWN_TRANSCRIPT
    # Ed25519 is deterministic: the `cryptography` package signs the same bytes to the same signature.
    assert record.signature == Ed25519PrivateKey.from_private_bytes(SEED).sign(KNOWN_TRANSCRIPT)
    Ed25519PublicKey.from_public_bytes(ALICE.identity_key).verify(record.signature, KNOWN_TRANSCRIPT)
    digest = hashlib.sha256(fields(b"spartan/v1/membership-hash", KNOWN_TRANSCRIPT, record.signature)).digest()
    assert record_hash(record) == digest == KNOWN_HASH
    assert (record.version, record.previous, list(record.members)) == (2, HEAD.digest, ["alice", "bob", "charlie",
                                                                                          "eve"])


def test_create_add_remove_leave_each_extend_the_chain() -> None:
    created = sign_change(ALICE, None, CREATE, "", group="team", members=["bob"])
    head = start(created, KEYS["alice"])
    assert (head.version, head.members, head.digest) == (1, {"alice", "bob"}, record_hash(created))
    added = sign_change(BOB, head, ADD, "eve", group="team")
    head = extend(head, added, KEYS["bob"])
    removed = sign_change(EVE, head, REMOVE, "alice", group="team")
    head = extend(head, removed, KEYS["eve"])
    left = sign_change(BOB, head, LEAVE, "bob", group="team")
    head = extend(head, left, KEYS["bob"])
    assert (head.version, head.members) == (4, {"eve"})
    assert [describe(r) for r in (created, added, removed, left)] == [
        "alice created team with alice, bob.",
        "bob added eve to team.",
        "eve removed alice from team.",
        "bob left team.",
    ]


def test_operator_genesis_is_accepted_only_unsigned_and_first() -> None:
    genesis = pb.MembershipRecord(group="group1", version=1, previous=NO_PREVIOUS, action=GENESIS,
                                  members=["alice", "bob"])
    assert start(genesis, None).members == {"alice", "bob"}
    assert describe(genesis) == "group1 was set up by the operator with alice, bob."
    with pytest.raises(MembershipError, match="^its genesis is malformed$"):
        start(pb.MembershipRecord(group="group1", version=1, previous=NO_PREVIOUS, action=GENESIS, actor="eve",
                                  members=["alice", "eve"]), None)
    with pytest.raises(MembershipError, match="^its first change must set it up, not 'add'$"):
        start(sign_change(EVE, HEAD, ADD, "eve", group="group1"), KEYS["eve"])
    with pytest.raises(MembershipError, match="^the server may not genesis anyone$"):
        extend(HEAD, pb.MembershipRecord(group="group1", version=2, previous=HEAD.digest, action=GENESIS,
                                         members=["alice", "bob", "charlie", "eve"]), None)


def test_a_forged_signature_is_refused() -> None:
    record = sign_change(ALICE, HEAD, ADD, "eve", group="group1")
    with pytest.raises(MembershipError, match="^the change is not signed by alice$"):
        extend(HEAD, record, KEYS["bob"])  # the server says alice signed it; it is not alice's key
    tampered = pb.MembershipRecord()
    tampered.CopyFrom(record)
    tampered.signature = bytes(64)
    with pytest.raises(MembershipError, match="^the change is not signed by alice$"):
        extend(HEAD, tampered, KEYS["alice"])
    with pytest.raises(MembershipError, match="^the change is not signed by alice$"):
        extend(HEAD, record, None)  # alice has no key this client could check it with


def test_a_non_member_cannot_add_anyone_and_no_one_removes_on_anothers_behalf() -> None:
    with pytest.raises(MembershipError, match="^eve may not add eve$"):
        extend(HEAD, sign_change(EVE, HEAD, ADD, "eve", group="group1"), KEYS["eve"])
    with pytest.raises(MembershipError, match="^eve may not leave bob$"):
        extend(HEAD, sign_change(EVE, HEAD, LEAVE, "bob", group="group1"), KEYS["eve"])
    with pytest.raises(MembershipError, match="^alice may not add bob$"):
        extend(HEAD, sign_change(ALICE, HEAD, ADD, "bob", group="group1"), KEYS["alice"])


def test_a_change_must_follow_the_head_and_list_exactly_its_result() -> None:
    record = sign_change(ALICE, HEAD, ADD, "eve", group="group1")
    moved = Head("group1", 1, bytes(32), HEAD.members)
    with pytest.raises(MembershipError, match="^the change by alice does not follow the last change you saw$"):
        extend(moved, record, KEYS["alice"])  # names another previous record
    later = Head("group1", 2, HEAD.digest, HEAD.members)
    with pytest.raises(MembershipError, match="^the change by alice does not follow the last change you saw$"):
        extend(later, record, KEYS["alice"])  # an old change replayed
    padded = pb.MembershipRecord(group="group1", version=2, previous=HEAD.digest, actor="alice", action=ADD,
                                 member="eve", members=["alice", "bob", "charlie", "eve", "mallory"])
    padded.signature = ALICE.sign(transcript(padded))
    with pytest.raises(MembershipError, match="^the member list of the change by alice does not match the change$"):
        extend(HEAD, padded, KEYS["alice"])
