"""1:1 encryption: both sides share a key, and any change to an envelope or its routing is caught."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spartan.crypto import DecryptError, Identity, PairwiseCipher, PairwiseCiphers
from spartan.crypto.pairwise import OVERHEAD, derive_pairwise_key
from spartan.errors import InvalidArgument

ALICE = Identity.generate("alice")
BOB = Identity.generate("bob")
MALLORY = Identity.generate("mallory")
ROUTE = {"message_id": "m-1", "sender": "alice", "recipient": "bob", "conversation": "dm:alice:bob"}


@pytest.fixture(scope="module")
def alice_to_bob() -> PairwiseCipher:
    return PairwiseCipher(ALICE, "bob", BOB.public_keys())


@pytest.fixture(scope="module")
def bob_from_alice() -> PairwiseCipher:
    return PairwiseCipher(BOB, "alice", ALICE.public_keys())


def test_both_sides_derive_the_same_key() -> None:
    key_at_alice = derive_pairwise_key(ALICE, "bob", BOB.public_keys())
    key_at_bob = derive_pairwise_key(BOB, "alice", ALICE.public_keys())
    assert key_at_alice == key_at_bob and len(key_at_alice) == 32
    assert derive_pairwise_key(MALLORY, "bob", BOB.public_keys()) != key_at_alice


def test_round_trip_both_directions(alice_to_bob: PairwiseCipher, bob_from_alice: PairwiseCipher) -> None:
    for plaintext in (b"", b"hi bob", bytes(range(256)) * 256):
        envelope = alice_to_bob.encrypt(plaintext, **ROUTE)
        assert len(envelope) == len(plaintext) + OVERHEAD
        assert plaintext not in envelope or not plaintext
        assert bob_from_alice.decrypt(envelope, **ROUTE) == plaintext
    back = {"message_id": "m-2", "sender": "bob", "recipient": "alice", "conversation": "dm:alice:bob"}
    assert alice_to_bob.decrypt(bob_from_alice.encrypt(b"hi alice", **back), **back) == b"hi alice"


def test_every_message_gets_a_fresh_nonce(alice_to_bob: PairwiseCipher) -> None:
    envelopes = {alice_to_bob.encrypt(b"same", **ROUTE) for _ in range(50)}
    assert len(envelopes) == 50
    assert len({envelope[1:13] for envelope in envelopes}) == 50


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
    with pytest.raises(DecryptError, match="unknown envelope version 2"):
        bob_from_alice.decrypt(b"\x02" + envelope[1:], **ROUTE)


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
    mallory = PairwiseCipher(MALLORY, "alice", ALICE.public_keys())
    with pytest.raises(DecryptError):
        mallory.decrypt(envelope, **ROUTE)


def test_messages_under_replaced_keys_do_not_open(alice_to_bob: PairwiseCipher) -> None:
    envelope = alice_to_bob.encrypt(b"before reset", **ROUTE)
    bob_new_device = PairwiseCipher(Identity.generate("bob"), "alice", ALICE.public_keys())
    with pytest.raises(DecryptError):
        bob_new_device.decrypt(envelope, **ROUTE)


def test_encrypting_outside_the_pair_is_refused(alice_to_bob: PairwiseCipher) -> None:
    with pytest.raises(InvalidArgument, match="does not belong"):
        alice_to_bob.encrypt(b"x", **{**ROUTE, "recipient": "carol"})
    with pytest.raises(InvalidArgument, match="does not belong"):
        alice_to_bob.encrypt(b"x", **{**ROUTE, "sender": "mallory"})


def test_invalid_or_mislabelled_peer_keys_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="expected bob"):
        PairwiseCipher(ALICE, "bob", MALLORY.public_keys())
    forged = BOB.public_keys()
    forged.agreement_key = MALLORY.agreement_key
    with pytest.raises(InvalidArgument, match="not signed"):
        PairwiseCipher(ALICE, "bob", forged)


def test_cache_reuses_the_cipher_until_the_peer_keys_change() -> None:
    ciphers = PairwiseCiphers(ALICE)
    first = ciphers.get("bob", BOB.public_keys())
    assert ciphers.get("bob", BOB.public_keys()) is first
    replacement = ciphers.get("bob", Identity.generate("bob").public_keys())
    assert replacement is not first and ciphers.cached("bob") is replacement
    ciphers.forget("bob")
    assert ciphers.cached("bob") is None


def test_talking_to_oneself_works() -> None:
    me = PairwiseCipher(ALICE, "alice", ALICE.public_keys())
    route = {"message_id": "n", "sender": "alice", "recipient": "alice", "conversation": "dm:alice:alice"}
    assert me.decrypt(me.encrypt(b"note to self", **route), **route) == b"note to self"


@settings(max_examples=60, deadline=None)
@given(plaintext=st.binary(max_size=2048), message_id=st.text(max_size=40),
       conversation=st.text(max_size=40))
def test_round_trip_property(alice_to_bob: PairwiseCipher, bob_from_alice: PairwiseCipher,
                             plaintext: bytes, message_id: str, conversation: str) -> None:
    route = {"message_id": message_id, "sender": "alice", "recipient": "bob", "conversation": conversation}
    assert bob_from_alice.decrypt(alice_to_bob.encrypt(plaintext, **route), **route) == plaintext


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=200))
def test_garbage_only_ever_raises_decrypt_error(bob_from_alice: PairwiseCipher, garbage: bytes) -> None:
    with pytest.raises(DecryptError):
        bob_from_alice.decrypt(garbage, **ROUTE)
