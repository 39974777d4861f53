"""Identities: key generation, signatures, and rejection of malformed or mismatched public keys."""
from __future__ import annotations

import pytest

from spartan.crypto import Identity, verify_public_keys, verify_signature
from spartan.errors import InvalidArgument
from spartan.v1 import pb


@pytest.fixture(scope="module")
def alice() -> Identity:
    return Identity.generate("alice")


@pytest.fixture(scope="module")
def bob() -> Identity:
    return Identity.generate("bob")


def test_public_keys_are_raw_32_byte_keys_with_a_valid_signature(alice: Identity) -> None:
    keys = alice.public_keys()
    assert keys.user == "alice"
    assert len(keys.identity_key) == 32 and len(keys.agreement_key) == 32
    assert len(keys.agreement_signature) == 64
    verify_public_keys(keys)
    verify_public_keys(keys, user="alice")


def test_public_keys_returns_an_independent_copy(alice: Identity) -> None:
    keys = alice.public_keys()
    keys.user = "mallory"
    assert alice.public_keys().user == "alice"


def test_signatures_verify_only_for_the_signed_data_and_key(alice: Identity, bob: Identity) -> None:
    signature = alice.sign(b"hello")
    assert verify_signature(alice.identity_key, b"hello", signature)
    assert not verify_signature(alice.identity_key, b"hellO", signature)
    assert not verify_signature(bob.identity_key, b"hello", signature)
    assert not verify_signature(alice.identity_key, b"hello", signature[:-1])
    assert not verify_signature(alice.identity_key[:31], b"hello", signature)
    assert not verify_signature(b"\xff" * 32, b"hello", signature)  # not a curve point


def test_agreement_is_symmetric_and_distinct_per_pair(alice: Identity, bob: Identity) -> None:
    carol = Identity.generate("carol")
    assert alice.agree(bob.agreement_key) == bob.agree(alice.agreement_key)
    assert alice.agree(bob.agreement_key) != alice.agree(carol.agreement_key)


def test_seeds_recreate_the_same_identity(alice: Identity) -> None:
    again = Identity("alice", *alice.private_seeds())
    assert again.identity_key == alice.identity_key
    assert again.agreement_key == alice.agreement_key


def test_repr_does_not_leak_private_material(alice: Identity) -> None:
    text = repr(alice)
    for seed in alice.private_seeds():
        assert seed.hex() not in text


def _keys(identity: Identity, **changes: object) -> pb.PublicKeys:
    keys = identity.public_keys()
    for name, value in changes.items():
        setattr(keys, name, value)
    return keys


@pytest.mark.parametrize("change, message", [
    ({"identity_key": b"\x01" * 31}, "must be 32 bytes, got 31"),
    ({"identity_key": b""}, "must be 32 bytes, got 0"),
    ({"identity_key": b"\xff" * 32}, "not a valid Ed25519 public key"),
    ({"agreement_key": b"\x01" * 33}, "must be 32 bytes, got 33"),
    ({"agreement_key": bytes(32)}, "not a valid X25519 public key"),  # low-order point
    ({"agreement_signature": b"\x00" * 63}, "must be 64 bytes, got 63"),
    ({"agreement_signature": b"\x00" * 64}, "not signed by its identity key"),
    ({"user": ""}, "do not name their user"),
])
def test_malformed_keys_are_rejected(alice: Identity, change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        verify_public_keys(_keys(alice, **change))


def test_a_swapped_agreement_key_is_rejected(alice: Identity, bob: Identity) -> None:
    """A directory cannot pair alice's identity key with an agreement key it controls."""
    with pytest.raises(InvalidArgument, match="not signed by its identity key"):
        verify_public_keys(_keys(alice, agreement_key=bob.agreement_key))


def test_keys_relabelled_for_another_user_are_rejected(alice: Identity) -> None:
    """The signature binds the user name: alice's keys cannot be published as mallory's."""
    with pytest.raises(InvalidArgument, match="not signed"):
        verify_public_keys(_keys(alice, user="mallory"))
    with pytest.raises(InvalidArgument, match="expected bob"):
        verify_public_keys(alice.public_keys(), user="bob")


def test_identity_rejects_bad_seeds() -> None:
    with pytest.raises(InvalidArgument):
        Identity("alice", b"\x00" * 31, b"\x00" * 32)
    with pytest.raises(InvalidArgument):
        Identity("", b"\x00" * 32, b"\x00" * 32)
