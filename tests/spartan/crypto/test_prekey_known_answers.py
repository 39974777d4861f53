"""Known answers for sealing to prekeys, checked against a second implementation (`cryptography`): a version 4
envelope opens there and one sealed there opens here; the wrapping key and a whole envelope are pinned."""
from __future__ import annotations

import hashlib
import struct

import pytest
from Crypto.Protocol import DH
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from spartan.crypto import (
    DecryptError,
    Identity,
    PairwiseCipher,
)
from spartan.crypto.padding import PAD_BLOCK, unpad
from spartan.crypto.pairwise import (
    OVERHEAD,
    WRAP_LABEL,
    wrapping_key,
)
from spartan.crypto.prekeys import (
    OwnPrekeys,
    Prekey,
)
from tests.spartan.crypto.helpers import (
    ALICE,
    ALICE_PREKEYS,
    BOB_PREKEYS,
    KAT_ROUTE,
    RECIPIENT_ID,
    ROUTE,
    SENDER_ID,
    START,
    Clock,
    keys_with_prekey,
)


def lp(*fields: bytes | str | int) -> bytes:
    """The documented field encoding, written again here: 4-byte big-endian length, then the bytes
    (strings UTF-8, integers 8-byte big-endian)."""
    out = b""
    for field in fields:
        if isinstance(field, str):
            raw = field.encode()
        elif isinstance(field, int):
            raw = struct.pack(">Q", field)
        else:
            raw = field
        out += struct.pack(">I", len(raw)) + raw
    return out


def x25519_public(seed: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def wrapping_key_by_cryptography(shared: bytes, owner: str, prekey_id: int, prekey: bytes, ephemeral: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"spartan/v1/prekey-wrap",
                info=lp(owner, prekey_id, prekey, ephemeral))
    return hkdf.derive(shared)


def dm_associated_data(route: dict[str, str], version: int = 4) -> bytes:
    return lp(b"spartan/v1/dm-message", version, route["message_id"], route["sender"], route["recipient"],
              route["conversation"])


def open_with_cryptography(envelope: bytes, *, owner: str, slot: int, prekey_seed: bytes,
                           sender_identity_key: bytes, route: dict[str, str]) -> bytes:
    """Open a version 4 envelope with the `cryptography` package only, following the documented layout."""
    version, e_public = envelope[0], envelope[1:33]
    assert version == 4
    prekey_id = struct.unpack(">Q", envelope[slot:slot + 8])[0]
    wrapped = envelope[slot + 8:slot + 56]
    nonce = envelope[145:157]
    body, signature = envelope[157:-64], envelope[-64:]
    associated = dm_associated_data(route)
    Ed25519PublicKey.from_public_bytes(sender_identity_key).verify(
        signature, lp(b"spartan/v1/dm-signature", associated, envelope[:-64]))
    prekey = X25519PrivateKey.from_private_bytes(prekey_seed)
    shared = prekey.exchange(X25519PublicKey.from_public_bytes(e_public))
    key = wrapping_key_by_cryptography(shared, owner, prekey_id, x25519_public(prekey_seed), e_public)
    content_key = AESGCM(key).decrypt(bytes(12), wrapped, None)
    return unpad(AESGCM(content_key).decrypt(nonce, body, associated))


def test_a_version_4_envelope_opens_with_a_second_implementation(alice_to_bob: PairwiseCipher) -> None:
    """The format is exactly as documented: `cryptography` alone opens either copy."""
    envelope = alice_to_bob.encrypt(b"read me with another library", **ROUTE)
    for owner, slot, prekeys in (("bob", RECIPIENT_ID.start, BOB_PREKEYS), ("alice", SENDER_ID.start, ALICE_PREKEYS)):
        prekey_id = struct.unpack(">Q", envelope[slot:slot + 8])[0]
        seed = prekeys._keys[prekey_id].seed
        assert open_with_cryptography(envelope, owner=owner, slot=slot, prekey_seed=seed,
                                      sender_identity_key=ALICE.identity_key,
                                      route=ROUTE) == b"read me with another library"
        # the wrap is bound to its owner's name: bob's slot does not open as alice's
        with pytest.raises(InvalidTag):
            open_with_cryptography(envelope, owner="mallory", slot=slot, prekey_seed=seed,
                                   sender_identity_key=ALICE.identity_key, route=ROUTE)


# Fixed inputs for the known answers of version 4.
KAT_ALICE = Identity("alice", bytes(range(32)), bytes(range(32, 64)))
KAT_BOB = Identity("bob", bytes(range(64, 96)), bytes(range(96, 128)))
KAT_BOB_PREKEY = Prekey(id=0x0102030405060708, seed=bytes(range(128, 160)), created_at_s=START)
KAT_ALICE_PREKEY = Prekey(id=0x1112131415161718, seed=bytes(range(160, 192)), created_at_s=START)
KAT_EPHEMERAL_SEED = bytes(range(192, 224))
KAT_CONTENT_KEY = bytes(range(224, 256))
KAT_NONCE = bytes(range(12))
KAT_WRAPPING_KEY = "05764cd3eda9440f70db6cddba5531fca827e5e8279cb75b48ac12ff6f9b306e"
KAT_ENVELOPE_SHA256 = "dd8cc5e1b664d269f8f761a2c7a89694632d520b91c1f8ba29989a5b3eea3c13"


def test_wrapping_key_known_answer() -> None:
    """X25519 and HKDF-SHA256 as documented, computed by `cryptography` and by the product, pinned."""
    prekey_public = x25519_public(KAT_BOB_PREKEY.seed)
    e_public = x25519_public(KAT_EPHEMERAL_SEED)
    assert prekey_public == KAT_BOB_PREKEY.public()
    shared = X25519PrivateKey.from_private_bytes(KAT_EPHEMERAL_SEED).exchange(
        X25519PublicKey.from_public_bytes(prekey_public))
    assert shared == X25519PrivateKey.from_private_bytes(KAT_BOB_PREKEY.seed).exchange(
        X25519PublicKey.from_public_bytes(e_public))
    assert shared == DH.key_agreement(static_priv=KAT_BOB_PREKEY.private,
                                      eph_pub=DH.import_x25519_public_key(e_public), kdf=lambda secret: secret)
    prekey_id = KAT_BOB_PREKEY.id
    ours = wrapping_key(shared, owner="bob", prekey_id=prekey_id, prekey=prekey_public, ephemeral=e_public)
    assert WRAP_LABEL == b"spartan/v1/prekey-wrap"
    assert ours == wrapping_key_by_cryptography(shared, "bob", prekey_id, prekey_public, e_public)
    assert ours.hex() == KAT_WRAPPING_KEY
    for changed in (  # every field counts
        wrapping_key(shared, owner="alice", prekey_id=prekey_id, prekey=prekey_public, ephemeral=e_public),
        wrapping_key(shared, owner="bob", prekey_id=prekey_id + 1, prekey=prekey_public, ephemeral=e_public),
        wrapping_key(shared, owner="bob", prekey_id=prekey_id, prekey=e_public, ephemeral=e_public),
        wrapping_key(shared, owner="bob", prekey_id=prekey_id, prekey=prekey_public, ephemeral=prekey_public),
    ):
        assert changed != ours
    with pytest.raises(DecryptError, match="all-zero"):
        wrapping_key(bytes(32), owner="bob", prekey_id=prekey_id, prekey=prekey_public, ephemeral=e_public)


def kat_prekeys(identity: Identity, prekey: Prekey) -> OwnPrekeys:
    own = OwnPrekeys(identity, clock=Clock(START))
    own._keys = {prekey.id: prekey}  # fixed seeds: only a known answer wants them
    return own


def seal_with_cryptography(plaintext: bytes, route: dict[str, str]) -> bytes:
    """The KAT envelope from alice to bob, built with `cryptography` alone from the fixed inputs above."""
    e_public = x25519_public(KAT_EPHEMERAL_SEED)
    ephemeral = X25519PrivateKey.from_private_bytes(KAT_EPHEMERAL_SEED)
    header = b"\x04" + e_public
    for owner, prekey in (("bob", KAT_BOB_PREKEY), ("alice", KAT_ALICE_PREKEY)):
        public = x25519_public(prekey.seed)
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public))
        key = wrapping_key_by_cryptography(shared, owner, prekey.id, public, e_public)
        header += struct.pack(">Q", prekey.id) + AESGCM(key).encrypt(bytes(12), KAT_CONTENT_KEY, None)
    header += KAT_NONCE
    associated = dm_associated_data(route)
    padded = plaintext + b"\x80" + bytes(-(len(plaintext) + 1) % 64)
    sealed = header + AESGCM(KAT_CONTENT_KEY).encrypt(KAT_NONCE, padded, associated)
    signer = Ed25519PrivateKey.from_private_bytes(KAT_ALICE.private_seeds()[0])
    return sealed + signer.sign(lp(b"spartan/v1/dm-signature", associated, sealed))


def test_a_version_4_envelope_sealed_by_a_second_implementation_opens() -> None:
    """Known answer: fixed keys, ephemeral, content key and nonce give this very envelope, which the product opens
    for bob and for alice's own copy."""
    alice_prekeys, bob_prekeys = kat_prekeys(KAT_ALICE, KAT_ALICE_PREKEY), kat_prekeys(KAT_BOB, KAT_BOB_PREKEY)
    alice_keys, bob_keys = keys_with_prekey(KAT_ALICE, alice_prekeys), keys_with_prekey(KAT_BOB, bob_prekeys)
    envelope = seal_with_cryptography(b"known answer", KAT_ROUTE)
    assert len(envelope) == PAD_BLOCK + OVERHEAD
    assert hashlib.sha256(envelope).hexdigest() == KAT_ENVELOPE_SHA256
    bob = PairwiseCipher(KAT_BOB, "alice", alice_keys, bob_prekeys)
    alice = PairwiseCipher(KAT_ALICE, "bob", bob_keys, alice_prekeys)
    assert bob.decrypt(envelope, **KAT_ROUTE) == b"known answer"
    assert alice.decrypt(envelope, **KAT_ROUTE) == b"known answer"
    # and what the product seals from the same keys opens with `cryptography`
    sealed_here = alice.encrypt(b"known answer", **KAT_ROUTE)
    assert open_with_cryptography(sealed_here, owner="bob", slot=RECIPIENT_ID.start, prekey_seed=KAT_BOB_PREKEY.seed,
                                  sender_identity_key=KAT_ALICE.identity_key, route=KAT_ROUTE) == b"known answer"
