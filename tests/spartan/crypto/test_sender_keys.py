"""Group encryption: signed per-sender keys, forgery by members, rotation on membership change, and
plaintexts padded to 64-byte blocks (older unpadded envelopes still read). Sender keys travel over the 1:1
channel, sealed to each member's prekey, and a sender replaces its own key once it is a day old."""
from __future__ import annotations

import struct

import pytest
from Crypto.Cipher import AES
from hypothesis import given, settings
from hypothesis import strategies as st

from spartan.crypto import (
    DecryptError,
    Identity,
    PairwiseCipher,
    SenderKey,
    SenderKeyRing,
    decrypt_group,
    encrypt_group,
    envelope_key_id,
    open_sender_key,
    seal_sender_key,
)
from spartan.crypto.encoding import encode_fields
from spartan.crypto.pairwise import KeyDeleted
from spartan.crypto.prekeys import KEEP_RETIRED_SECONDS, ROTATE_SECONDS, OwnPrekeys
from spartan.crypto.sender_keys import (
    KEYS_KEPT_PER_SENDER,
    MembershipView,
    envelope_view,
)
from spartan.errors import InvalidArgument
from tests.spartan.crypto.helpers import Clock, keys_with_prekey

ALICE = Identity.generate("alice")
BOB = Identity.generate("bob")
CAROL = Identity.generate("carol")
PREKEYS = {identity.user: OwnPrekeys(identity) for identity in (ALICE, BOB, CAROL)}
GROUP = "friends"


def channel(me: Identity, peer: Identity) -> PairwiseCipher:
    """`me`'s 1:1 cipher with `peer`, sealing to the prekey `peer` publishes."""
    return PairwiseCipher(me, peer.user, keys_with_prekey(peer, PREKEYS[peer.user]), PREKEYS[me.user])


@pytest.fixture
def alice_key() -> SenderKey:
    return SenderKey.generate(GROUP, "alice", version=1)


def test_sender_key_serialization_round_trip(alice_key: SenderKey) -> None:
    assert SenderKey.from_bytes(alice_key.to_bytes()) == alice_key
    assert alice_key.secret.hex() not in repr(alice_key)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=120))
def test_malformed_sender_keys_raise_decrypt_error_only(data: bytes) -> None:
    try:
        SenderKey.from_bytes(data)
    except DecryptError:
        pass


def test_truncated_sender_key_is_rejected(alice_key: SenderKey) -> None:
    raw = alice_key.to_bytes()
    for length in range(len(raw)):
        with pytest.raises(DecryptError):
            SenderKey.from_bytes(raw[:length])


def test_group_round_trip_for_every_member(alice_key: SenderKey) -> None:
    envelope = encrypt_group(ALICE, alice_key, b"hello group", message_id="g-1", group=GROUP)
    assert envelope_key_id(envelope) == alice_key.key_id
    for _member in ("bob", "carol"):
        received = SenderKey.from_bytes(alice_key.to_bytes())
        assert decrypt_group(envelope, sender_identity_key=ALICE.identity_key, sender_key=received,
                             message_id="g-1", group=GROUP) == b"hello group"


def test_flipping_any_bit_is_detected(alice_key: SenderKey) -> None:
    envelope = encrypt_group(ALICE, alice_key, b"hi", message_id="g-1", group=GROUP)
    for position in range(len(envelope)):
        for bit in range(8):
            tampered = bytearray(envelope)
            tampered[position] ^= 1 << bit
            with pytest.raises(DecryptError):
                decrypt_group(bytes(tampered), sender_identity_key=ALICE.identity_key,
                              sender_key=alice_key, message_id="g-1", group=GROUP)


def test_truncation_is_detected(alice_key: SenderKey) -> None:
    envelope = encrypt_group(ALICE, alice_key, b"hi", message_id="g-1", group=GROUP)
    for length in range(len(envelope)):
        with pytest.raises(DecryptError):
            decrypt_group(envelope[:length], sender_identity_key=ALICE.identity_key,
                          sender_key=alice_key, message_id="g-1", group=GROUP)


@pytest.mark.parametrize("field, value", [("message_id", "g-2"), ("group", "others")])
def test_changed_routing_is_detected(alice_key: SenderKey, field: str, value: str) -> None:
    envelope = encrypt_group(ALICE, alice_key, b"hi", message_id="g-1", group=GROUP)
    route = {"message_id": "g-1", "group": GROUP, field: value}
    with pytest.raises(DecryptError):
        decrypt_group(envelope, sender_identity_key=ALICE.identity_key, sender_key=alice_key, **route)


def test_a_member_cannot_forge_another_member(alice_key: SenderKey) -> None:
    """Bob holds alice's sender key, so he can encrypt under it, but he cannot sign as alice."""
    bob_copy = SenderKey.from_bytes(alice_key.to_bytes())
    with pytest.raises(InvalidArgument):
        encrypt_group(BOB, bob_copy, b"alice says: pay bob", message_id="g-9", group=GROUP)
    # Build the envelope by hand, as a malicious client would, and sign with bob's key.
    impostor = Identity("alice", *BOB.private_seeds())
    forged = encrypt_group(impostor, bob_copy, b"alice says: pay bob", message_id="g-9", group=GROUP)
    with pytest.raises(DecryptError, match="valid signature of alice"):
        decrypt_group(forged, sender_identity_key=ALICE.identity_key, sender_key=alice_key,
                      message_id="g-9", group=GROUP)
    # Re-using a genuine signature on another message fails too.
    genuine = encrypt_group(ALICE, alice_key, b"hi", message_id="g-1", group=GROUP)
    with pytest.raises(DecryptError):
        decrypt_group(genuine[:-64] + forged[-64:], sender_identity_key=ALICE.identity_key,
                      sender_key=alice_key, message_id="g-1", group=GROUP)


def test_wrong_sender_key_is_rejected(alice_key: SenderKey) -> None:
    envelope = encrypt_group(ALICE, alice_key, b"hi", message_id="g-1", group=GROUP)
    older = SenderKey.generate(GROUP, "alice", version=0)
    with pytest.raises(DecryptError, match="sender key this device does not have"):
        decrypt_group(envelope, sender_identity_key=ALICE.identity_key, sender_key=older,
                      message_id="g-1", group=GROUP)
    same_id_other_secret = SenderKey(GROUP, "alice", alice_key.key_id, 1, b"\x00" * 32)
    with pytest.raises(DecryptError):
        decrypt_group(envelope, sender_identity_key=ALICE.identity_key,
                      sender_key=same_id_other_secret, message_id="g-1", group=GROUP)


def _distribute(sender: Identity, key: SenderKey, receiver: Identity, ring: SenderKeyRing) -> None:
    """Send `key` from `sender` to `receiver` over their pairwise channel and store it."""
    sealed = seal_sender_key(channel(sender, receiver), key, message_id=f"sk-{key.key_id}")
    opened = open_sender_key(channel(receiver, sender), sealed, message_id=f"sk-{key.key_id}", group=key.group)
    assert opened == key
    ring.add(opened)


def test_removed_member_cannot_read_after_rotation() -> None:
    rings = {name: SenderKeyRing(name) for name in ("alice", "bob", "carol")}
    for ring in rings.values():
        ring.on_membership(GROUP, 1, ["alice", "bob", "carol"])
    old_key, created = rings["alice"].ensure_own_key(GROUP, 1)
    assert created
    for receiver in (BOB, CAROL):
        _distribute(ALICE, old_key, receiver, rings[receiver.user])

    # carol is removed: membership version 2; alice rotates and sends only to bob.
    assert rings["bob"].on_membership(GROUP, 2, ["alice", "bob"]) is None  # bob has not sent yet
    new_key = rings["alice"].on_membership(GROUP, 2, ["alice", "bob"])
    assert new_key is not None and rings["alice"].ensure_own_key(GROUP, 2) == (new_key, False)
    assert new_key.key_id != old_key.key_id and new_key.secret != old_key.secret
    _distribute(ALICE, new_key, BOB, rings["bob"])

    envelope = encrypt_group(ALICE, new_key, b"after carol left", message_id="g-2", group=GROUP)
    bob_key = rings["bob"].key_for(GROUP, "alice", envelope)
    assert bob_key is not None
    assert decrypt_group(envelope, sender_identity_key=ALICE.identity_key, sender_key=bob_key,
                         message_id="g-2", group=GROUP) == b"after carol left"
    assert rings["carol"].key_for(GROUP, "alice", envelope) is None
    carol_old = rings["carol"].latest(GROUP, "alice")
    assert carol_old == old_key
    with pytest.raises(DecryptError):
        decrypt_group(envelope, sender_identity_key=ALICE.identity_key, sender_key=carol_old,
                      message_id="g-2", group=GROUP)
    # Forcing the new key id onto carol's old secret does not help either.
    guessed = SenderKey(GROUP, "alice", new_key.key_id, 2, carol_old.secret)
    with pytest.raises(DecryptError):
        decrypt_group(envelope, sender_identity_key=ALICE.identity_key, sender_key=guessed,
                      message_id="g-2", group=GROUP)


def test_membership_change_drops_keys_of_removed_members_and_rotates() -> None:
    ring = SenderKeyRing("bob")
    assert ring.on_membership(GROUP, 1, ["alice", "bob", "carol"]) is None  # nothing sent yet
    own, _ = ring.ensure_own_key(GROUP, 1)
    carol_key = SenderKey.generate(GROUP, "carol", 1)
    assert ring.add(carol_key) and not ring.add(carol_key)
    rotated = ring.on_membership(GROUP, 2, ["alice", "bob"])
    assert rotated is not None and rotated.version == 2 and ring.own_key(GROUP) == rotated
    assert ring.get(GROUP, "carol", carol_key.key_id) is None
    assert not ring.add(SenderKey.generate(GROUP, "carol", 2)), "keys of non-members are refused"
    assert ring.get(GROUP, "bob", own.key_id) == own, "own old keys stay readable for history"
    assert ring.on_membership(GROUP, 2, ["alice", "bob"]) is None  # same version: no rotation
    assert ring.on_membership(GROUP, 3, ["alice"]) is None  # bob removed: forget the group
    assert ring.own_key(GROUP) is None and ring.get(GROUP, "bob", own.key_id) is None


def test_ring_keeps_a_bounded_number_of_keys_per_sender() -> None:
    ring = SenderKeyRing("bob")
    keys = [SenderKey.generate(GROUP, "alice", version) for version in range(KEYS_KEPT_PER_SENDER + 3)]
    for key in keys:
        ring.add(key)
    assert ring.latest(GROUP, "alice") == keys[-1]
    assert ring.get(GROUP, "alice", keys[0].key_id) is None
    assert ring.get(GROUP, "alice", keys[-KEYS_KEPT_PER_SENDER].key_id) == keys[-KEYS_KEPT_PER_SENDER]


def test_own_key_is_replaced_once_a_day_old() -> None:
    """A sender key reaches members sealed to their prekeys: replacing it daily bounds what one key opens."""
    clock = Clock()
    ring = SenderKeyRing("alice", clock=clock)
    ring.on_membership(GROUP, 1, ["alice", "bob"])
    first, created = ring.ensure_own_key(GROUP, 1)
    assert created
    clock.advance(ROTATE_SECONDS - 1)
    assert ring.ensure_own_key(GROUP, 1) == (first, False)
    clock.advance(1)
    second, created = ring.ensure_own_key(GROUP, 1)
    assert created and second.version == 1 and ring.own_key(GROUP) == second
    assert second.key_id != first.key_id and second.secret != first.secret
    assert ring.get(GROUP, "alice", first.key_id) == first, "own old keys stay readable for history"
    assert ring.ensure_own_key(GROUP, 1) == (second, False)
    clock.advance(ROTATE_SECONDS)  # a day later again, and with a membership change at the same time
    third, created = ring.ensure_own_key(GROUP, 2)
    assert created and third.version == 2 and third.key_id not in (first.key_id, second.key_id)


def test_a_sender_key_sealed_to_a_deleted_prekey_does_not_open() -> None:
    """The group key's distribution has the prekeys' bounded window too."""
    clock = Clock()
    bob_prekeys = OwnPrekeys(BOB, clock=clock)
    key = SenderKey.generate(GROUP, "alice", 1)
    to_bob = PairwiseCipher(ALICE, "bob", keys_with_prekey(BOB, bob_prekeys), OwnPrekeys(ALICE, clock=clock))
    sealed = seal_sender_key(to_bob, key, message_id="sk-old")
    bob_side = PairwiseCipher(BOB, "alice", ALICE.public_keys(), bob_prekeys)
    assert open_sender_key(bob_side, sealed, message_id="sk-old", group=GROUP) == key
    clock.advance(ROTATE_SECONDS)
    bob_prekeys.current()  # replaced: kept for messages still on their way
    assert open_sender_key(bob_side, sealed, message_id="sk-old", group=GROUP) == key
    clock.advance(KEEP_RETIRED_SECONDS)
    bob_prekeys.current()  # deleted
    with pytest.raises(KeyDeleted):
        open_sender_key(bob_side, sealed, message_id="sk-old", group=GROUP)


def test_sender_key_delivery_cannot_be_moved_or_misattributed(alice_key: SenderKey) -> None:
    sealed = seal_sender_key(channel(ALICE, BOB), alice_key, message_id="sk")
    bob_side = channel(BOB, ALICE)
    with pytest.raises(DecryptError):
        open_sender_key(bob_side, sealed, message_id="sk", group="others")
    with pytest.raises(DecryptError):
        open_sender_key(bob_side, sealed, message_id="sk-other", group=GROUP)
    with pytest.raises(InvalidArgument):
        seal_sender_key(channel(BOB, ALICE), alice_key, message_id="sk")


def test_sender_key_for_someone_else_is_rejected() -> None:
    """Alice cannot hand bob a key that claims to be carol's."""
    carol_key = SenderKey.generate(GROUP, "carol", 1)
    body = channel(ALICE, BOB).encrypt(carol_key.to_bytes(), message_id="sk", sender="alice", recipient="bob",
                                       conversation=f"group:{GROUP}")
    with pytest.raises(DecryptError, match="is for carol"):
        open_sender_key(channel(BOB, ALICE), body, message_id="sk", group=GROUP)


def test_new_member_cannot_read_messages_from_before_joining() -> None:
    ring = SenderKeyRing("alice")
    before, _ = ring.ensure_own_key(GROUP, 1)
    old_message = encrypt_group(ALICE, before, b"before dave", message_id="g-1", group=GROUP)
    after = ring.on_membership(GROUP, 2, ["alice", "bob", "dave"])
    assert after is not None
    dave_ring = SenderKeyRing("dave")
    dave_ring.add(after)
    assert dave_ring.key_for(GROUP, "alice", old_message) is None
    assert struct.unpack(">Q", old_message[1:9])[0] == before.key_id


def test_the_senders_membership_view_travels_signed_in_the_envelope(alice_key: SenderKey) -> None:
    view = MembershipView(7, bytes(range(32)))
    envelope = encrypt_group(ALICE, alice_key, b"hi", message_id="g-1", group=GROUP, view=view)
    assert envelope_view(envelope) == view
    assert envelope[9:49] == struct.pack(">Q", 7) + bytes(range(32))  # after version and key id
    assert decrypt_group(envelope, sender_identity_key=ALICE.identity_key, sender_key=alice_key,
                         message_id="g-1", group=GROUP) == b"hi"
    older = bytearray(envelope)
    older[16] = 6  # a relay claiming the sender saw an older membership
    with pytest.raises(DecryptError):
        decrypt_group(bytes(older), sender_identity_key=ALICE.identity_key, sender_key=alice_key,
                      message_id="g-1", group=GROUP)


def test_a_legacy_envelope_without_a_view_is_still_read(alice_key: SenderKey) -> None:
    """Version 1, written here by hand: no membership view; history from before keeps opening."""
    nonce = bytes(12)
    cipher = AES.new(alice_key.secret, AES.MODE_GCM, nonce=nonce, mac_len=16)
    cipher.update(encode_fields(b"spartan/v1/group-message", 1, GROUP, "alice", alice_key.key_id, "g-0"))
    ciphertext, tag = cipher.encrypt_and_digest(b"from before")
    body = b"\x01" + struct.pack(">Q", alice_key.key_id) + nonce + ciphertext + tag
    signed = encode_fields(b"spartan/v1/group-signature", 1, GROUP, "alice", alice_key.key_id, "g-0", body)
    envelope = body + ALICE.sign(signed)
    assert envelope_view(envelope) is None
    assert decrypt_group(envelope, sender_identity_key=ALICE.identity_key, sender_key=alice_key,
                         message_id="g-0", group=GROUP) == b"from before"


def test_group_plaintexts_are_padded_to_64_byte_blocks(alice_key: SenderKey) -> None:
    lengths = {len(encrypt_group(ALICE, alice_key, b"z" * n, message_id="g-p", group=GROUP)) for n in range(64)}
    assert len(lengths) == 1
    longer = encrypt_group(ALICE, alice_key, b"z" * 64, message_id="g-p", group=GROUP)
    assert len(longer) == lengths.pop() + 64
    assert decrypt_group(longer, sender_identity_key=ALICE.identity_key, sender_key=alice_key,
                         message_id="g-p", group=GROUP) == b"z" * 64


def test_an_unpadded_version_2_envelope_is_still_read(alice_key: SenderKey) -> None:
    """Version 2, written here by hand: a view but no padding, as sealed before padding came."""
    view = MembershipView(7, bytes(range(32)))
    nonce = bytes(12)
    cipher = AES.new(alice_key.secret, AES.MODE_GCM, nonce=nonce, mac_len=16)
    cipher.update(encode_fields(b"spartan/v1/group-message", 2, GROUP, "alice", alice_key.key_id, "g-2"))
    ciphertext, tag = cipher.encrypt_and_digest(b"unpadded")
    body = b"\x02" + struct.pack(">QQ", alice_key.key_id, view.version) + view.digest + nonce + ciphertext + tag
    signed = encode_fields(b"spartan/v1/group-signature", 2, GROUP, "alice", alice_key.key_id, "g-2", body)
    envelope = body + ALICE.sign(signed)
    assert envelope_view(envelope) == view
    assert decrypt_group(envelope, sender_identity_key=ALICE.identity_key, sender_key=alice_key,
                         message_id="g-2", group=GROUP) == b"unpadded"
    with pytest.raises(DecryptError):  # claimed padded: the signature covers the version
        decrypt_group(b"\x03" + envelope[1:], sender_identity_key=ALICE.identity_key, sender_key=alice_key,
                      message_id="g-2", group=GROUP)
