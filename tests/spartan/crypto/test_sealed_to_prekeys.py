"""1:1 messages sealed to prekeys (envelope version 4): the recipient and the sender's own copy open, nobody
else does, and nothing opens once the prekey it was sealed to is deleted (a stolen key directory included);
every header field is bound; prekeys that are not signed by their user's identity key, relabelled, of low
order or the wrong length are refused. Known answers: test_prekey_known_answers.py."""
from __future__ import annotations

import secrets
import struct
from pathlib import Path

import pytest

from spartan.crypto import (
    DecryptError,
    Identity,
    PairwiseCipher,
    PairwiseCiphers,
    keystore,
    verify_public_keys,
)
from spartan.crypto.identity import prekey_transcript
from spartan.crypto.pairwise import (
    KeyDeleted,
)
from spartan.crypto.prekeys import (
    DAY_SECONDS,
    KEEP_RETIRED_SECONDS,
    ROTATE_SECONDS,
    WINDOW_DAYS,
    WINDOW_SECONDS,
    OwnPrekeys,
    Prekey,
)
from spartan.errors import InvalidArgument
from spartan.v1 import pb
from tests.spartan.crypto.helpers import (
    ALICE,
    ALICE_KEYS,
    ALICE_PREKEYS,
    BOB,
    BOB_KEYS,
    HEADER_FIELDS,
    MALLORY,
    MALLORY_PREKEYS,
    RECIPIENT_ID,
    ROUTE,
    SENDER_ID,
    START,
    Clock,
    User,
    resign,
)

P = 2**255 - 19


def _with_prekey(keys: pb.PublicKeys, prekey: pb.SignedPrekey) -> pb.PublicKeys:
    changed = pb.PublicKeys()
    changed.CopyFrom(keys)
    changed.prekey.CopyFrom(prekey)
    return changed


def _signed_by(signer: Identity, *, user: str, prekey_id: int, key: bytes, created_at_s: int) -> pb.SignedPrekey:
    signature = signer.sign(prekey_transcript(user, prekey_id, key, created_at_s))
    return pb.SignedPrekey(id=prekey_id, key=key, created_at_s=created_at_s, signature=signature)


def _refused(keys: pb.PublicKeys, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        verify_public_keys(keys, user="bob")
    with pytest.raises(InvalidArgument, match=match):
        PairwiseCipher(ALICE, "bob", keys, ALICE_PREKEYS)
    with pytest.raises(InvalidArgument, match=match):
        PairwiseCiphers(ALICE, ALICE_PREKEYS).get("bob", keys)


LOW_ORDER_OR_INVALID = {  # X25519 points a prekey must never be: each would make the shared secret guessable
    "zero": bytes(32),
    "one": (1).to_bytes(32, "little"),
    "order 8 (a)": bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    "order 8 (b)": bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    "p - 1": (P - 1).to_bytes(32, "little"),
    "p (zero, non-canonical)": P.to_bytes(32, "little"),
    "p + 1 (one, non-canonical)": (P + 1).to_bytes(32, "little"),
}


def test_sealing_needs_the_peers_prekey_and_my_own() -> None:
    without_peer_prekey = PairwiseCipher(ALICE, "bob", BOB.public_keys(), ALICE_PREKEYS)
    with pytest.raises(InvalidArgument, match="bob has not published a prekey"):
        without_peer_prekey.encrypt(b"x", **ROUTE)
    without_own_prekeys = PairwiseCipher(ALICE, "bob", BOB_KEYS)
    with pytest.raises(InvalidArgument, match="alice has no prekeys"):
        without_own_prekeys.encrypt(b"x", **ROUTE)
    # Without prekeys of its own a reader has nothing a version 4 envelope was sealed to.
    envelope = PairwiseCipher(ALICE, "bob", BOB_KEYS, ALICE_PREKEYS).encrypt(b"x", **ROUTE)
    with pytest.raises(KeyDeleted):
        PairwiseCipher(BOB, "alice", ALICE_KEYS).decrypt(envelope, **ROUTE)


def test_a_prekey_signed_by_another_identity_is_refused() -> None:
    genuine = BOB_KEYS.prekey
    verify_public_keys(BOB_KEYS, user="bob")  # the genuine one passes
    # the same prekey, signed by a key other than bob's
    by_mallory = _signed_by(MALLORY, user="bob", prekey_id=genuine.id, key=genuine.key,
                            created_at_s=genuine.created_at_s)
    _refused(_with_prekey(BOB_KEYS, by_mallory), "prekey of bob is not signed")
    mallorys_own = MALLORY_PREKEYS.current()  # mallory's genuine prekey, offered as bob's
    _refused(_with_prekey(BOB_KEYS, mallorys_own), "prekey of bob is not signed")
    _refused(_with_prekey(BOB_KEYS, pb.SignedPrekey(id=genuine.id, key=genuine.key,
                                                    created_at_s=genuine.created_at_s, signature=bytes(64))),
             "prekey of bob is not signed")


def test_a_prekey_relabelled_for_another_user_or_altered_is_refused() -> None:
    genuine = BOB_KEYS.prekey
    # Signed by bob's own identity key, but for carol: it does not vouch for a prekey of bob.
    for_carol = _signed_by(BOB, user="carol", prekey_id=genuine.id, key=genuine.key,
                           created_at_s=genuine.created_at_s)
    _refused(_with_prekey(BOB_KEYS, for_carol), "prekey of bob is not signed")
    # Bob's genuine prekey, presented in carol's keys (whose identity key never signed it, nor for her).
    carol = Identity.generate("carol")
    relabelled = _with_prekey(carol.public_keys(), genuine)
    with pytest.raises(InvalidArgument, match="prekey of carol is not signed"):
        verify_public_keys(relabelled, user="carol")
    with pytest.raises(InvalidArgument, match="prekey of carol is not signed"):
        PairwiseCipher(ALICE, "carol", relabelled, ALICE_PREKEYS)
    # Bob's keys relabelled as carol's are refused as before (and carol's signature would not cover them).
    as_carol = _with_prekey(BOB_KEYS, genuine)
    as_carol.user = "carol"
    with pytest.raises(InvalidArgument):
        verify_public_keys(as_carol, user="carol")
    # Each signed field counts: another id, another time, or another key under the genuine signature.
    for changed in (
        pb.SignedPrekey(id=genuine.id ^ 1, key=genuine.key, created_at_s=genuine.created_at_s,
                        signature=genuine.signature),
        pb.SignedPrekey(id=genuine.id, key=genuine.key, created_at_s=genuine.created_at_s + DAY_SECONDS,
                        signature=genuine.signature),
        pb.SignedPrekey(id=genuine.id, key=MALLORY_PREKEYS.current().key, created_at_s=genuine.created_at_s,
                        signature=genuine.signature),
    ):
        _refused(_with_prekey(BOB_KEYS, changed), "prekey of bob is not signed")


@pytest.mark.parametrize("name", LOW_ORDER_OR_INVALID)
def test_a_prekey_of_low_order_or_off_the_curve_is_refused_even_when_signed(name: str) -> None:
    point = LOW_ORDER_OR_INVALID[name]
    prekey = _signed_by(BOB, user="bob", prekey_id=7, key=point, created_at_s=START)
    _refused(_with_prekey(BOB_KEYS, prekey), "prekey of bob is not a valid X25519 public key")


def test_a_prekey_of_the_wrong_length_is_refused() -> None:
    for length in (0, 31, 33):
        prekey = _signed_by(BOB, user="bob", prekey_id=7, key=b"\x09" * length, created_at_s=START)
        _refused(_with_prekey(BOB_KEYS, prekey), "prekey of bob must be 32 bytes")
    short_signature = pb.SignedPrekey()
    short_signature.CopyFrom(BOB_KEYS.prekey)
    short_signature.signature = short_signature.signature[:-1]
    _refused(_with_prekey(BOB_KEYS, short_signature), "prekey signature of bob must be 64 bytes")


def test_version_4_opens_for_the_recipient_and_for_the_senders_own_copy(
        alice_to_bob: PairwiseCipher, bob_from_alice: PairwiseCipher) -> None:
    envelope = alice_to_bob.encrypt(b"meet at noon", **ROUTE)
    assert envelope[RECIPIENT_ID] == struct.pack(">Q", BOB_KEYS.prekey.id)  # sealed to bob's published prekey
    assert envelope[SENDER_ID] == struct.pack(">Q", ALICE_PREKEYS.current().id)  # and to alice's own current one
    assert bob_from_alice.decrypt(envelope, **ROUTE) == b"meet at noon"
    assert alice_to_bob.decrypt(envelope, **ROUTE) == b"meet at noon"  # alice reads her history back
    # A second device of alice's holding the same prekeys (PairwiseCiphers, as the client uses) reads it too.
    assert PairwiseCiphers(ALICE, ALICE_PREKEYS).get("bob", BOB_KEYS).decrypt(envelope, **ROUTE) == b"meet at noon"


def test_a_third_party_without_either_prekey_cannot_open_version_4(alice_to_bob: PairwiseCipher) -> None:
    envelope = alice_to_bob.encrypt(b"secret", **ROUTE)
    bob_prekey_id = BOB_KEYS.prekey.id
    # Even holding bob's (or alice's) long-term keys, all the old static scheme needed, but prekeys of its own.
    for victim, peer_keys, prekey_id in ((BOB, ALICE_KEYS, bob_prekey_id),
                                         (ALICE, BOB_KEYS, ALICE_PREKEYS.current().id)):
        thief = Identity(victim.user, *victim.private_seeds())
        thief_prekeys = OwnPrekeys(thief)
        thief_prekeys.current()
        reader = PairwiseCipher(thief, peer_keys.user, peer_keys, thief_prekeys)
        with pytest.raises(KeyDeleted):
            reader.decrypt(envelope, **ROUTE)
        # A prekey of its own under the very id the message names does not unwrap it either.
        thief_prekeys._keys[prekey_id] = Prekey(prekey_id, secrets.token_bytes(32), START)
        with pytest.raises(DecryptError, match="key wrap"):
            reader.decrypt(envelope, **ROUTE)
    # And with the cipher of a bystander (mallory), nothing opens either.
    with pytest.raises(DecryptError):
        PairwiseCipher(MALLORY, "alice", ALICE_KEYS, MALLORY_PREKEYS).decrypt(envelope, **ROUTE)


@pytest.mark.parametrize("field", HEADER_FIELDS)
def test_flipping_any_header_bit_is_detected(alice_to_bob: PairwiseCipher, bob_from_alice: PairwiseCipher,
                                             field: str) -> None:
    envelope = alice_to_bob.encrypt(b"attack at dawn", **ROUTE)
    region = HEADER_FIELDS[field]
    for position in range(region.start, region.stop):
        for bit in range(8):
            tampered = bytearray(envelope)
            tampered[position] ^= 1 << bit
            for reader in (bob_from_alice, alice_to_bob):
                with pytest.raises(DecryptError, match="valid signature"):
                    reader.decrypt(bytes(tampered), **ROUTE)


READ_BY = {  # the header fields each reader's opening depends on
    "bob": ("ephemeral key", "recipient prekey id", "recipient wrap", "nonce"),
    "alice": ("ephemeral key", "sender prekey id", "sender wrap", "nonce"),
}


@pytest.mark.parametrize("reader_name", READ_BY)
def test_the_header_a_reader_uses_is_bound_by_the_keys_too_not_only_by_the_signature(
        alice_to_bob: PairwiseCipher, bob_from_alice: PairwiseCipher, reader_name: str) -> None:
    """Tampered and then re-signed by the genuine sender: still refused (the ephemeral key, prekey id and
    wrap are bound into the wrapping key and its tag, the nonce by the content's tag)."""
    reader = bob_from_alice if reader_name == "bob" else alice_to_bob
    envelope = alice_to_bob.encrypt(b"attack at dawn", **ROUTE)
    assert reader.decrypt(resign(ALICE, envelope, ROUTE), **ROUTE) == b"attack at dawn"
    for field in READ_BY[reader_name]:
        region = HEADER_FIELDS[field]
        for position in range(region.start, region.stop):
            for bit in range(8):
                tampered = bytearray(envelope)
                tampered[position] ^= 1 << bit
                with pytest.raises(DecryptError):
                    reader.decrypt(resign(ALICE, bytes(tampered), ROUTE), **ROUTE)


def test_a_message_sealed_to_a_deleted_prekey_raises_key_deleted() -> None:
    assert issubclass(KeyDeleted, DecryptError)
    assert WINDOW_SECONDS == ROTATE_SECONDS + KEEP_RETIRED_SECONDS
    clock = Clock()
    alice, bob = User.make("alice", clock), User.make("bob", clock)
    old = alice.channel(bob).encrypt(b"day 0", **ROUTE)
    bob_reader = PairwiseCipher(bob.identity, "alice", alice.keys(), bob.prekeys)
    alice_reader = PairwiseCipher(alice.identity, "bob", bob.keys(), alice.prekeys)

    clock.advance(ROTATE_SECONDS + 1)  # both rotate: the prekeys of day 0 are retired, not deleted
    new_prekey = bob.keys().prekey
    alice.prekeys.current()
    assert struct.pack(">Q", new_prekey.id) != old[RECIPIENT_ID]
    recent_route = {**ROUTE, "message_id": "m-recent"}
    recent = alice.channel(bob).encrypt(b"day 1", **recent_route)  # sealed to the new prekeys
    assert recent[RECIPIENT_ID] == struct.pack(">Q", new_prekey.id)
    assert bob_reader.decrypt(old, **ROUTE) == b"day 0"  # retired, not deleted

    clock.advance(KEEP_RETIRED_SECONDS - 1)  # the last second of the window: still readable
    bob.prekeys.current()
    alice.prekeys.current()
    assert bob_reader.decrypt(old, **ROUTE) == b"day 0"
    assert alice_reader.decrypt(old, **ROUTE) == b"day 0"

    clock.advance(1)  # retired KEEP_RETIRED_SECONDS ago: deleted
    bob.prekeys.current()
    alice.prekeys.current()
    with pytest.raises(KeyDeleted):
        bob_reader.decrypt(old, **ROUTE)
    with pytest.raises(KeyDeleted):
        alice_reader.decrypt(old, **ROUTE)  # the sender's own copy is gone too
    assert bob_reader.decrypt(recent, **recent_route) == b"day 1"  # sealed within the window: still opens
    assert alice_reader.decrypt(recent, **recent_route) == b"day 1"


def test_a_stolen_key_directory_does_not_open_messages_older_than_the_window(tmp_path: Path) -> None:
    """The issue's promise: bob's key files plus everything the server stores (the envelope, the published
    keys) open a message for `WINDOW_DAYS` days after it was sealed, and not after that."""
    clock = Clock()
    alice = User.make("alice", clock)
    bob_identity = Identity.generate("bob")
    keystore.save(bob_identity, tmp_path)
    bob = User(bob_identity, OwnPrekeys.for_user(bob_identity, tmp_path, clock=clock))  # bob's running client
    envelope = alice.channel(bob).encrypt(b"the codes are 1234", **ROUTE)
    alice_keys = alice.keys()  # the server holds these and the envelope: all a reader needs besides bob's files

    def thief_opens(at: float) -> bytes:
        """A fresh load of bob's key directory as it is now, as whoever copies it would."""
        stolen = keystore.load("bob", tmp_path)
        prekeys = OwnPrekeys.for_user(stolen, tmp_path, clock=lambda: at)
        return PairwiseCipher(stolen, "alice", alice_keys, prekeys).decrypt(envelope, **ROUTE)

    assert thief_opens(clock()) == b"the codes are 1234"
    for _day in range(1, WINDOW_DAYS):  # bob's client runs every day: a new prekey each day
        clock.advance(DAY_SECONDS)
        bob.prekeys.current()
        assert thief_opens(clock()) == b"the codes are 1234"  # within the window: the window is real
    clock.advance(DAY_SECONDS)  # WINDOW_DAYS after sealing
    bob.prekeys.current()
    assert clock() - START == WINDOW_SECONDS
    with pytest.raises(KeyDeleted):
        thief_opens(clock())
    with pytest.raises(KeyDeleted):
        thief_opens(START)  # winding the clock back brings nothing back: the key is gone from the file
    assert bob.prekeys.private(struct.unpack(">Q", envelope[RECIPIENT_ID])[0]) is None


# ------------------------------------------------- known answers against a second implementation
