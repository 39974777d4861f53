"""1:1 encryption: any change to an envelope or its routing is caught, every envelope is signed by its sender, so
a stolen key file cannot forge messages from its owner's peers, and plaintexts are padded to 64-byte blocks.
Older envelopes under the static pairwise key (padded version 3, unpadded version 2) are still read; unsigned
version 1 is not. Sealing to prekeys (version 4) has its own module, test_sealed_to_prekeys.py."""
from __future__ import annotations

import pytest
from Crypto.Cipher import AES
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from spartan.crypto import (
    DecryptError,
    Identity,
    PairwiseCipher,
    PairwiseCiphers,
)
from spartan.crypto.encoding import encode_fields
from spartan.crypto.identity import SIGNATURE_BYTES
from spartan.crypto.padding import PAD_BLOCK, pad, unpad
from spartan.crypto.pairwise import (
    AD_LABEL,
    ENVELOPE_VERSION,
    HEADER_BYTES,
    OVERHEAD,
    STATIC_ENVELOPE_VERSION,
    STATIC_OVERHEAD,
    TAG_BYTES,
    UNPADDED_ENVELOPE_VERSION,
    KeyDeleted,
    associated_data,
    derive_pairwise_key,
    signed_transcript,
)
from spartan.crypto.prekeys import (
    OwnPrekeys,
)
from spartan.errors import InvalidArgument
from tests.spartan.crypto.helpers import (
    ALICE,
    ALICE_KEYS,
    ALICE_PREKEYS,
    BACK,
    BOB,
    BOB_KEYS,
    BOB_PREKEYS,
    EPHEMERAL,
    KAT_ROUTE,
    MALLORY,
    MALLORY_PREKEYS,
    NONCE,
    RECIPIENT_WRAP,
    ROUTE,
    SENDER_WRAP,
    keys_with_prekey,
    resign,
    seal_static,
)


def test_both_sides_derive_the_same_key(alice_to_bob: PairwiseCipher, bob_from_alice: PairwiseCipher) -> None:
    key_at_alice = derive_pairwise_key(ALICE, "bob", BOB.public_keys())
    key_at_bob = derive_pairwise_key(BOB, "alice", ALICE.public_keys())
    assert key_at_alice == key_at_bob and len(key_at_alice) == 32
    assert derive_pairwise_key(MALLORY, "bob", BOB.public_keys()) != key_at_alice
    # The static key of old envelopes does not depend on the prekeys the keys carry now.
    assert alice_to_bob.static_key == bob_from_alice.static_key == key_at_alice


def test_round_trip_both_directions(alice_to_bob: PairwiseCipher, bob_from_alice: PairwiseCipher) -> None:
    for plaintext in (b"", b"hi bob", bytes(range(256)) * 256, b"ends in zeros\x00\x00", b"\x80" * 64):
        envelope = alice_to_bob.encrypt(plaintext, **ROUTE)
        assert envelope[0] == ENVELOPE_VERSION == 4
        assert len(envelope) == len(pad(plaintext)) + OVERHEAD
        assert plaintext not in envelope or not plaintext
        assert bob_from_alice.decrypt(envelope, **ROUTE) == plaintext
    assert alice_to_bob.decrypt(bob_from_alice.encrypt(b"hi alice", **BACK), **BACK) == b"hi alice"


def test_every_message_gets_a_fresh_nonce_and_ephemeral_key(alice_to_bob: PairwiseCipher) -> None:
    envelopes = {alice_to_bob.encrypt(b"same", **ROUTE) for _ in range(50)}
    assert len(envelopes) == 50
    assert len({envelope[NONCE] for envelope in envelopes}) == 50
    assert len({envelope[EPHEMERAL] for envelope in envelopes}) == 50
    # and a fresh content key: the same key would wrap the same way under each prekey
    assert len({envelope[RECIPIENT_WRAP] for envelope in envelopes}) == 50
    assert len({envelope[SENDER_WRAP] for envelope in envelopes}) == 50


def test_flipping_any_bit_is_detected(alice_to_bob: PairwiseCipher, bob_from_alice: PairwiseCipher) -> None:
    envelope = alice_to_bob.encrypt(b"attack at dawn", **ROUTE)
    for position in range(len(envelope)):
        for bit in range(8):
            tampered = bytearray(envelope)
            tampered[position] ^= 1 << bit
            with pytest.raises(DecryptError):
                bob_from_alice.decrypt(bytes(tampered), **ROUTE)


def test_truncation_and_extension_are_detected(alice_to_bob: PairwiseCipher,
                                               bob_from_alice: PairwiseCipher) -> None:
    envelope = alice_to_bob.encrypt(b"attack at dawn", **ROUTE)
    for length in range(len(envelope)):
        with pytest.raises(DecryptError):
            bob_from_alice.decrypt(envelope[:length], **ROUTE)
    with pytest.raises(DecryptError):
        bob_from_alice.decrypt(envelope + b"\x00", **ROUTE)


def test_unknown_version_is_rejected(alice_to_bob: PairwiseCipher, bob_from_alice: PairwiseCipher) -> None:
    envelope = alice_to_bob.encrypt(b"x", **ROUTE)
    unknown = ENVELOPE_VERSION + 1
    with pytest.raises(DecryptError, match=f"unknown envelope version {unknown}"):
        bob_from_alice.decrypt(bytes((unknown,)) + envelope[1:], **ROUTE)


def test_lengths_within_one_block_give_the_same_envelope_length(alice_to_bob: PairwiseCipher) -> None:
    # Version 4 carries more than the static versions (an ephemeral key and two prekey ids and wraps), but as
    # before the same for every message: the length still tells only the number of 64-byte blocks.
    assert OVERHEAD == HEADER_BYTES + TAG_BYTES + SIGNATURE_BYTES > STATIC_OVERHEAD
    lengths = {len(alice_to_bob.encrypt(b"y" * n, **ROUTE)) for n in range(PAD_BLOCK)}
    assert lengths == {PAD_BLOCK + OVERHEAD}
    assert len(alice_to_bob.encrypt(b"y" * PAD_BLOCK, **ROUTE)) == 2 * PAD_BLOCK + OVERHEAD


def test_padding_known_answer_and_bad_padding_refused() -> None:
    assert pad(b"abc") == b"abc\x80" + bytes(60)
    assert pad(b"") == b"\x80" + bytes(63)
    assert unpad(b"abc\x00\x80" + bytes(59)) == b"abc\x00"
    for bad in (b"", b"abc" + bytes(61), bytes(64), b"abc\x80" + bytes(59), b"\x80" + bytes(127)):
        with pytest.raises(DecryptError):
            unpad(bad)


def test_an_unpadded_version_2_envelope_is_still_read(bob_from_alice: PairwiseCipher) -> None:
    """What clients before padding sealed (and delivery logs may still hold) opens as it did."""
    route = dict(ROUTE)
    key = bob_from_alice.static_key
    assert key == derive_pairwise_key(ALICE, "bob", BOB.public_keys())
    nonce = bytes(range(12))
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=16)
    cipher.update(associated_data(**route, version=2))
    ciphertext, tag = cipher.encrypt_and_digest(b"sealed before padding")
    sealed = b"\x02" + nonce + ciphertext + tag
    envelope = sealed + ALICE.sign(signed_transcript(associated_data(**route, version=2), sealed))
    assert bob_from_alice.decrypt(envelope, **route) == b"sealed before padding"
    relabelled = b"\x03" + envelope[1:]  # claimed padded: the signature covers the version
    with pytest.raises(DecryptError):
        bob_from_alice.decrypt(relabelled, **route)


def test_a_padded_version_3_envelope_is_still_read(alice_to_bob: PairwiseCipher,
                                                   bob_from_alice: PairwiseCipher) -> None:
    """What clients before prekeys sealed opens for both sides, also for a reader holding no prekeys."""
    envelope = seal_static(ALICE, alice_to_bob.static_key, b"sealed before prekeys", ROUTE)
    assert len(envelope) == PAD_BLOCK + STATIC_OVERHEAD
    assert bob_from_alice.decrypt(envelope, **ROUTE) == b"sealed before prekeys"
    assert alice_to_bob.decrypt(envelope, **ROUTE) == b"sealed before prekeys"  # the sender's history
    without_prekeys = PairwiseCipher(BOB, "alice", ALICE.public_keys())
    assert without_prekeys.decrypt(envelope, **ROUTE) == b"sealed before prekeys"
    for version in (UNPADDED_ENVELOPE_VERSION, ENVELOPE_VERSION):  # relabelled: the signature covers the version
        with pytest.raises(DecryptError):
            bob_from_alice.decrypt(bytes((version,)) + envelope[1:], **ROUTE)
    with pytest.raises(DecryptError):  # under another key (mallory's with bob), even signed by alice
        bob_from_alice.decrypt(seal_static(ALICE, derive_pairwise_key(MALLORY, "bob", BOB.public_keys()),
                                           b"x", ROUTE), **ROUTE)


def test_unsigned_version_1_envelopes_are_refused(bob_from_alice: PairwiseCipher) -> None:
    """A valid envelope of the old unsigned layout: accepting it would let a forger drop the signature."""
    key = derive_pairwise_key(ALICE, "bob", BOB.public_keys())
    nonce = bytes(12)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=16)
    cipher.update(encode_fields(AD_LABEL, 1, *ROUTE.values()))
    ciphertext, tag = cipher.encrypt_and_digest(b"old layout, no signature" + bytes(64))
    with pytest.raises(DecryptError, match="unknown envelope version 1"):
        bob_from_alice.decrypt(b"\x01" + nonce + ciphertext + tag, **ROUTE)


def test_a_version_4_envelope_cannot_be_passed_off_as_an_old_one(alice_to_bob: PairwiseCipher,
                                                                 bob_from_alice: PairwiseCipher) -> None:
    """Relabelled to the static versions, even re-signed by its genuine sender: the static key does not open it."""
    envelope = alice_to_bob.encrypt(b"sealed to bob's prekey", **ROUTE)
    for version in (UNPADDED_ENVELOPE_VERSION, STATIC_ENVELOPE_VERSION):
        relabelled = bytes((version,)) + envelope[1:]
        with pytest.raises(DecryptError, match="valid signature"):
            bob_from_alice.decrypt(relabelled, **ROUTE)
        with pytest.raises(DecryptError, match="failed authentication"):
            bob_from_alice.decrypt(resign(ALICE, relabelled, ROUTE, version), **ROUTE)


# Known answer for the signed bytes: alice's Ed25519 seed is 00 01 … 1f; derived here and checked
# against a second Ed25519 implementation (the `cryptography` package).
KAT_SEED = bytes(range(32))
KAT_SEALED = b"\x02" + bytes(12) + b"\xaa" * 3 + b"\xbb" * 16  # version | nonce | 3-byte ciphertext | tag
KAT_TRANSCRIPT = bytes.fromhex(
    "00000017" + b"spartan/v1/dm-signature".hex()
    + "0000004c"  # the associated data, 76 bytes:
    + "00000015" + b"spartan/v1/dm-message".hex()
    + "00000008" + "0000000000000002"  # envelope version
    + "00000003" + b"m-1".hex() + "00000005" + b"alice".hex() + "00000003" + b"bob".hex()
    + "0000000c" + b"dm:alice:bob".hex()
    + "00000020" + KAT_SEALED.hex()
)
KAT_SIGNATURE = bytes.fromhex(
    "b1bb0dfba8e1549bdf50a508a427a789ead6e73eb1d15c648c84a087b3b9e419"
    "c435a9a15297bdf739bdad1f76af1c515380207f7ad9ff40f0cc01a7a14d8208"
)


KAT_V3_SEALED = b"\x03" + bytes(12) + b"\xaa" * 64 + b"\xbb" * 16  # a padded (one-block) ciphertext
KAT_V3_SIGNATURE = bytes.fromhex(
    "4d19cb98b3e00851d0615d600d644dd81ac96db8929bcbf80e574ec92bc51f42"
    "d3e8acea5d7101677b89f76aadf465e68815a0ed55c88aab387a2a064f5e6f06"
)


def test_signed_bytes_known_answer_of_the_padded_version() -> None:
    transcript = signed_transcript(associated_data(**KAT_ROUTE, version=STATIC_ENVELOPE_VERSION), KAT_V3_SEALED)
    assert transcript == bytes.fromhex(
        "00000017" + b"spartan/v1/dm-signature".hex()
        + "0000004c"
        + "00000015" + b"spartan/v1/dm-message".hex()
        + "00000008" + "0000000000000003"  # envelope version 3: padded
        + "00000003" + b"m-1".hex() + "00000005" + b"alice".hex() + "00000003" + b"bob".hex()
        + "0000000c" + b"dm:alice:bob".hex()
        + "0000005d" + KAT_V3_SEALED.hex()
    )
    assert len(transcript) == 204
    alice = Identity("alice", KAT_SEED, bytes(range(32, 64)))
    assert alice.sign(transcript) == KAT_V3_SIGNATURE
    assert Ed25519PrivateKey.from_private_bytes(KAT_SEED).sign(transcript) == KAT_V3_SIGNATURE


def test_signed_bytes_known_answer() -> None:
    assert signed_transcript(associated_data(**KAT_ROUTE, version=2), KAT_SEALED) == KAT_TRANSCRIPT
    assert len(KAT_TRANSCRIPT) == 143
    alice = Identity("alice", KAT_SEED, bytes(range(32, 64)))
    assert alice.sign(KAT_TRANSCRIPT) == KAT_SIGNATURE
    assert Ed25519PrivateKey.from_private_bytes(KAT_SEED).sign(KAT_TRANSCRIPT) == KAT_SIGNATURE
    Ed25519PublicKey.from_public_bytes(alice.identity_key).verify(KAT_SIGNATURE, KAT_TRANSCRIPT)


def test_envelope_signature_checks_with_a_second_implementation(alice_to_bob: PairwiseCipher) -> None:
    envelope = alice_to_bob.encrypt(b"signed for bob", **ROUTE)
    sealed, signature = envelope[:-64], envelope[-64:]
    public = Ed25519PublicKey.from_public_bytes(ALICE.identity_key)
    public.verify(signature, signed_transcript(associated_data(**ROUTE), sealed))
    with pytest.raises(InvalidSignature):
        public.verify(signature, signed_transcript(associated_data(**{**ROUTE, "message_id": "m-2"}), sealed))
    with pytest.raises(InvalidSignature):  # the version is signed: version 4 is not version 3
        public.verify(signature, signed_transcript(associated_data(**ROUTE, version=STATIC_ENVELOPE_VERSION),
                                                   sealed))


def test_a_stolen_key_file_cannot_forge_messages_from_a_peer(bob_from_alice: PairwiseCipher) -> None:
    """Key-compromise impersonation: with only alice's seeds, forge a message "from bob" to alice."""
    stolen = Identity("alice", *ALICE.private_seeds())
    alice_from_bob = PairwiseCipher(ALICE, "bob", BOB_KEYS, ALICE_PREKEYS)
    route = {"message_id": "m-9", "sender": "bob", "recipient": "alice", "conversation": "dm:alice:bob"}
    associated = associated_data(**route, version=STATIC_ENVELOPE_VERSION)
    key = derive_pairwise_key(stolen, "bob", BOB.public_keys())  # the very key alice and bob share
    nonce = bytes(range(12))
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=16)
    cipher.update(associated)
    ciphertext, tag = cipher.encrypt_and_digest(pad(b"bob here: send me the codes"))
    sealed = bytes((STATIC_ENVELOPE_VERSION,)) + nonce + ciphertext + tag
    for signer in (stolen, MALLORY):  # alice's own key, or any key the thief owns
        forged = sealed + signer.sign(signed_transcript(associated, sealed))
        with pytest.raises(DecryptError, match="does not carry a valid signature of bob"):
            alice_from_bob.decrypt(forged, **route)
    with pytest.raises(DecryptError):
        alice_from_bob.decrypt(sealed + bytes(64), **route)
    # The encryption itself was perfect: bob's genuine signature is all that is missing.
    genuine = sealed + BOB.sign(signed_transcript(associated, sealed))
    assert alice_from_bob.decrypt(genuine, **route) == b"bob here: send me the codes"


def test_a_stolen_key_directory_cannot_forge_version_4_messages_from_a_peer() -> None:
    """Anyone can seal to alice's published prekey; only bob's signature makes it a message from bob."""
    stolen = Identity("alice", *ALICE.private_seeds())
    alice_from_bob = PairwiseCipher(ALICE, "bob", BOB_KEYS, ALICE_PREKEYS)
    route = {"message_id": "m-9", "sender": "bob", "recipient": "alice", "conversation": "dm:alice:bob"}
    for thief_seeds in (stolen.private_seeds(), MALLORY.private_seeds()):
        impostor = Identity("bob", *thief_seeds)  # signs as "bob" with a key the thief holds
        sealed_by_thief = PairwiseCipher(impostor, "alice", ALICE_KEYS, OwnPrekeys(impostor))
        forged = sealed_by_thief.encrypt(b"bob here: send me the codes", **route)
        with pytest.raises(DecryptError, match="does not carry a valid signature of bob"):
            alice_from_bob.decrypt(forged, **route)
    # The sealing itself was perfect: bob's genuine signature is all that is missing.
    assert alice_from_bob.decrypt(resign(BOB, forged, route), **route) == b"bob here: send me the codes"


@pytest.mark.parametrize("field, value", [
    ("message_id", "m-2"),
    ("sender", "bob"),
    ("recipient", "alice"),
    ("conversation", "dm:alice:carol"),
    ("conversation", "group:friends"),
])
def test_changed_routing_fields_are_detected(alice_to_bob: PairwiseCipher, bob_from_alice: PairwiseCipher,
                                             field: str, value: str) -> None:
    envelope = alice_to_bob.encrypt(b"for bob in this conversation", **ROUTE)
    with pytest.raises(DecryptError):
        bob_from_alice.decrypt(envelope, **{**ROUTE, field: value})


def test_a_third_party_cannot_decrypt(alice_to_bob: PairwiseCipher) -> None:
    envelope = alice_to_bob.encrypt(b"secret", **ROUTE)
    mallory = PairwiseCipher(MALLORY, "alice", ALICE_KEYS, MALLORY_PREKEYS)
    with pytest.raises(DecryptError):
        mallory.decrypt(envelope, **ROUTE)


def test_messages_under_replaced_keys_do_not_open(alice_to_bob: PairwiseCipher) -> None:
    envelope = alice_to_bob.encrypt(b"before reset", **ROUTE)
    new_bob = Identity.generate("bob")
    bob_new_device = PairwiseCipher(new_bob, "alice", ALICE_KEYS, OwnPrekeys(new_bob))
    with pytest.raises(KeyDeleted):
        bob_new_device.decrypt(envelope, **ROUTE)


def test_encrypting_outside_the_pair_is_refused(alice_to_bob: PairwiseCipher) -> None:
    with pytest.raises(InvalidArgument, match="does not belong"):
        alice_to_bob.encrypt(b"x", **{**ROUTE, "recipient": "carol"})
    with pytest.raises(InvalidArgument, match="does not belong"):
        alice_to_bob.encrypt(b"x", **{**ROUTE, "sender": "mallory"})
    with pytest.raises(InvalidArgument, match="cannot sign a message as bob"):
        alice_to_bob.encrypt(b"x", **{**ROUTE, "sender": "bob", "recipient": "alice"})


def test_invalid_or_mislabelled_peer_keys_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="expected bob"):
        PairwiseCipher(ALICE, "bob", MALLORY.public_keys())
    forged = BOB.public_keys()
    forged.agreement_key = MALLORY.agreement_key
    with pytest.raises(InvalidArgument, match="not signed"):
        PairwiseCipher(ALICE, "bob", forged)


def test_cache_reuses_the_cipher_until_the_peer_keys_change() -> None:
    ciphers = PairwiseCiphers(ALICE, ALICE_PREKEYS)
    first = ciphers.get("bob", BOB_KEYS)
    assert ciphers.get("bob", keys_with_prekey(BOB, BOB_PREKEYS)) is first
    rotated = ciphers.get("bob", keys_with_prekey(BOB, OwnPrekeys(BOB)))  # bob published a new prekey
    assert rotated is not first and ciphers.cached("bob") is rotated
    assert rotated.peer_prekey != first.peer_prekey
    replacement = ciphers.get("bob", Identity.generate("bob").public_keys())
    assert replacement is not rotated and ciphers.cached("bob") is replacement
    assert replacement.peer_prekey is None and replacement.prekeys is ALICE_PREKEYS
    ciphers.forget("bob")
    assert ciphers.cached("bob") is None


def test_talking_to_oneself_works() -> None:
    me = PairwiseCipher(ALICE, "alice", ALICE_KEYS, ALICE_PREKEYS)
    route = {"message_id": "n", "sender": "alice", "recipient": "alice", "conversation": "dm:alice:alice"}
    assert me.decrypt(me.encrypt(b"note to self", **route), **route) == b"note to self"


@settings(max_examples=60, deadline=None)
@given(plaintext=st.binary(max_size=2048), message_id=st.text(max_size=40),
       conversation=st.text(max_size=40))
def test_round_trip_property(alice_to_bob: PairwiseCipher, bob_from_alice: PairwiseCipher,
                             plaintext: bytes, message_id: str, conversation: str) -> None:
    route = {"message_id": message_id, "sender": "alice", "recipient": "bob", "conversation": conversation}
    envelope = alice_to_bob.encrypt(plaintext, **route)
    assert bob_from_alice.decrypt(envelope, **route) == plaintext
    assert alice_to_bob.decrypt(envelope, **route) == plaintext


@settings(max_examples=200, deadline=None)
@given(garbage=st.one_of(
    st.binary(max_size=OVERHEAD + 2 * PAD_BLOCK),
    st.binary(min_size=OVERHEAD - 1, max_size=OVERHEAD + 2 * PAD_BLOCK).map(lambda body: b"\x04" + body),
    st.binary(min_size=STATIC_OVERHEAD - 1, max_size=STATIC_OVERHEAD + PAD_BLOCK).map(lambda body: b"\x03" + body),
))
def test_garbage_only_ever_raises_decrypt_error(bob_from_alice: PairwiseCipher, garbage: bytes) -> None:
    with pytest.raises(DecryptError):
        bob_from_alice.decrypt(garbage, **ROUTE)
