"""What the 1:1 encryption tests share: a clock to move by hand, users with prekeys, published keys with a
prekey, where the parts of a version 4 envelope lie, and old-format envelopes built by hand."""
from __future__ import annotations

from dataclasses import dataclass

from Crypto.Cipher import AES

from spartan.crypto import Identity, PairwiseCipher
from spartan.crypto.identity import SIGNATURE_BYTES
from spartan.crypto.padding import pad
from spartan.crypto.pairwise import (
    ENVELOPE_VERSION,
    HEADER_BYTES,
    ID_BYTES,
    KEY_BYTES,
    NONCE_BYTES,
    SLOT_BYTES,
    STATIC_ENVELOPE_VERSION,
    UNPADDED_ENVELOPE_VERSION,
    WRAP_BYTES,
    associated_data,
    signed_transcript,
)
from spartan.crypto.prekeys import OwnPrekeys
from spartan.v1 import pb

START = 1_700_000_000  # an arbitrary fixed Unix time


class Clock:
    """Unix seconds that move only when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def keys_with_prekey(identity: Identity, prekeys: OwnPrekeys) -> pb.PublicKeys:
    """`identity`'s published keys carrying its current signed prekey, as the key directory serves them."""
    keys = identity.public_keys()
    keys.prekey.CopyFrom(prekeys.current())
    return keys


@dataclass
class User:
    """An identity with its prekeys (in memory unless given)."""

    identity: Identity
    prekeys: OwnPrekeys

    @classmethod
    def make(cls, name: str, clock: Clock | None = None) -> User:
        identity = Identity.generate(name)
        return cls(identity, OwnPrekeys(identity) if clock is None else OwnPrekeys(identity, clock=clock))

    @property
    def name(self) -> str:
        return self.identity.user

    def keys(self) -> pb.PublicKeys:
        return keys_with_prekey(self.identity, self.prekeys)

    def channel(self, peer: User) -> PairwiseCipher:
        """My cipher for talking to `peer`, sealing to the prekey `peer` publishes now."""
        return PairwiseCipher(self.identity, peer.name, peer.keys(), self.prekeys)


# Where the parts of a version 4 envelope lie (see the layout in spartan.crypto.pairwise).
EPHEMERAL = slice(1, 1 + KEY_BYTES)
RECIPIENT_SLOT = 1 + KEY_BYTES
SENDER_SLOT = RECIPIENT_SLOT + SLOT_BYTES
RECIPIENT_ID = slice(RECIPIENT_SLOT, RECIPIENT_SLOT + ID_BYTES)
RECIPIENT_WRAP = slice(RECIPIENT_SLOT + ID_BYTES, RECIPIENT_SLOT + ID_BYTES + WRAP_BYTES)
SENDER_ID = slice(SENDER_SLOT, SENDER_SLOT + ID_BYTES)
SENDER_WRAP = slice(SENDER_SLOT + ID_BYTES, SENDER_SLOT + ID_BYTES + WRAP_BYTES)
NONCE = slice(HEADER_BYTES - NONCE_BYTES, HEADER_BYTES)
HEADER_FIELDS = {
    "ephemeral key": EPHEMERAL,
    "recipient prekey id": RECIPIENT_ID,
    "recipient wrap": RECIPIENT_WRAP,
    "sender prekey id": SENDER_ID,
    "sender wrap": SENDER_WRAP,
    "nonce": NONCE,
}

ALICE = Identity.generate("alice")
BOB = Identity.generate("bob")
MALLORY = Identity.generate("mallory")
ALICE_PREKEYS = OwnPrekeys(ALICE)
BOB_PREKEYS = OwnPrekeys(BOB)
MALLORY_PREKEYS = OwnPrekeys(MALLORY)
ALICE_KEYS = keys_with_prekey(ALICE, ALICE_PREKEYS)  # as the key directory serves them
BOB_KEYS = keys_with_prekey(BOB, BOB_PREKEYS)
ROUTE = {"message_id": "m-1", "sender": "alice", "recipient": "bob", "conversation": "dm:alice:bob"}
KAT_ROUTE = ROUTE  # the route of the known-answer vectors
BACK = {"message_id": "m-2", "sender": "bob", "recipient": "alice", "conversation": "dm:alice:bob"}


def resign(signer: Identity, envelope: bytes, route: dict[str, str], version: int = ENVELOPE_VERSION) -> bytes:
    """`envelope` with its signature replaced by `signer`'s over its (possibly tampered) body."""
    sealed = envelope[:-SIGNATURE_BYTES]
    return sealed + signer.sign(signed_transcript(associated_data(**route, version=version), sealed))


def seal_static(sender: Identity, key: bytes, plaintext: bytes, route: dict[str, str], *,
                version: int = STATIC_ENVELOPE_VERSION, nonce: bytes = bytes(range(12))) -> bytes:
    """An envelope of the old static-key format, built by hand as clients before prekeys sealed them."""
    associated = associated_data(**route, version=version)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=16)
    cipher.update(associated)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext if version == UNPADDED_ENVELOPE_VERSION else pad(plaintext))
    sealed = bytes((version,)) + nonce + ciphertext + tag
    return sealed + sender.sign(signed_transcript(associated, sealed))
