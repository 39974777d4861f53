"""Seals 1:1 messages between two users so only they can read them.

Key: X25519 agreement between my agreement key and the peer's, then
HKDF-SHA256 with a protocol label as salt and, as info, both user names in
sorted order with their identity and agreement keys. Both sides therefore
derive the same 32-byte key, and it is bound to who the two parties are.

Each message: AES-256-GCM with a fresh random 12-byte nonce; the associated
data are the routing fields (message id, sender, recipient, conversation), so
the server cannot re-attribute, re-address, or move a message to another
conversation without the receiver noticing. The sender then signs the
associated data and the sealed body with its Ed25519 identity key, and the
receiver checks that signature against the identity key it holds for the
sender *before* decrypting. Why: the shared key is symmetric, so whoever steals
alice's key file can derive the key she shares with bob and, without the
signature, seal messages "from bob" that alice would accept (key-compromise
impersonation). Envelope layout:

    version (1 byte = 0x03) | nonce (12) | ciphertext (n) | GCM tag (16) | signature (64)

    signature = Ed25519(sender identity key,
                        encode_fields(SIGN_LABEL, associated data, version ‖ nonce ‖ ciphertext ‖ tag))

The plaintext is padded to a multiple of 64 bytes before encryption
(`spartan.crypto.padding`), so the envelope's length gives the message's only to
within 64 bytes. Version 2 envelopes (the same, unpadded) are still read; version 1
envelopes (without a signature) are refused: accepting them would let a forger
simply omit the signature. The version is part of the associated data and the
signature, so a padded envelope cannot be passed off as an unpadded one.
Every failure to open an envelope raises `DecryptError`, whatever the cause.
Random 96-bit nonces are safe for far more messages than a conversation sees
(the GCM bound is about 2**32 messages per key).
"""

from __future__ import annotations

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF
from Crypto.Random import get_random_bytes

from spartan.crypto.encoding import DecryptError, encode_fields
from spartan.crypto.identity import SIGNATURE_BYTES, Identity, verify_public_keys, verify_signature
from spartan.crypto.padding import pad, unpad
from spartan.errors import InvalidArgument
from spartan.v1 import pb

ENVELOPE_VERSION = 3  # padded
UNPADDED_ENVELOPE_VERSION = 2  # still read
READ_VERSIONS = (UNPADDED_ENVELOPE_VERSION, ENVELOPE_VERSION)
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES + SIGNATURE_BYTES
KDF_SALT = b"spartan/v1/pairwise-key"
AD_LABEL = b"spartan/v1/dm-message"
SIGN_LABEL = b"spartan/v1/dm-signature"


def derive_pairwise_key(me: Identity, peer: str, peer_keys: pb.PublicKeys) -> bytes:
    """The 32-byte AES key `me` shares with `peer` (the peer derives the same one)."""
    shared = me.agree(peer_keys.agreement_key)
    parties = sorted(
        [(me.user, me.identity_key, me.agreement_key), (peer, peer_keys.identity_key, peer_keys.agreement_key)]
    )
    info = encode_fields(*(field for party in parties for field in party))
    return HKDF(shared, KEY_BYTES, KDF_SALT, SHA256, context=info)


def associated_data(
    *, message_id: str, sender: str, recipient: str, conversation: str, version: int = ENVELOPE_VERSION
) -> bytes:
    return encode_fields(AD_LABEL, version, message_id, sender, recipient, conversation)


def signed_transcript(associated: bytes, sealed: bytes) -> bytes:
    """What the sender's identity key signs: the associated data and the sealed body (all but the signature)."""
    return encode_fields(SIGN_LABEL, associated, sealed)


class PairwiseCipher:
    """Encrypts to and decrypts from one peer; construct once per peer and key (see `PairwiseCiphers`)."""

    def __init__(self, me: Identity, peer: str, peer_keys: pb.PublicKeys) -> None:
        verify_public_keys(peer_keys, user=peer)
        self.me = me
        self.peer = peer
        self.peer_identity_key: bytes = peer_keys.identity_key
        self.peer_agreement_key: bytes = peer_keys.agreement_key
        self._key = derive_pairwise_key(me, peer, peer_keys)
        self._parties = {me.user, peer}

    def encrypt(self, plaintext: bytes, *, message_id: str, sender: str, recipient: str, conversation: str) -> bytes:
        if {sender, recipient} != self._parties:
            raise InvalidArgument(
                f"a message from {sender} to {recipient} does not belong to the channel "
                f"between {self.me.user} and {self.peer}"
            )
        if sender != self.me.user:
            raise InvalidArgument(f"{self.me.user} cannot sign a message as {sender}")
        nonce = get_random_bytes(NONCE_BYTES)
        associated = associated_data(
            message_id=message_id, sender=sender, recipient=recipient, conversation=conversation
        )
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
        cipher.update(associated)
        ciphertext, tag = cipher.encrypt_and_digest(pad(plaintext))
        sealed = bytes((ENVELOPE_VERSION,)) + nonce + ciphertext + tag
        return sealed + self.me.sign(signed_transcript(associated, sealed))

    def decrypt(self, envelope: bytes, *, message_id: str, sender: str, recipient: str, conversation: str) -> bytes:
        if len(envelope) < OVERHEAD:
            raise DecryptError(f"message from {sender} is truncated ({len(envelope)} bytes)")
        version = envelope[0]
        if version not in READ_VERSIONS:
            raise DecryptError(f"message from {sender} uses unknown envelope version {version}")
        associated = associated_data(
            message_id=message_id, sender=sender, recipient=recipient, conversation=conversation, version=version
        )
        sealed, signature = envelope[:-SIGNATURE_BYTES], envelope[-SIGNATURE_BYTES:]
        signer = self.me.identity_key if sender == self.me.user else self.peer_identity_key
        if sender not in self._parties or not verify_signature(
            signer, signed_transcript(associated, sealed), signature
        ):
            raise DecryptError(f"message {message_id} does not carry a valid signature of {sender}")
        nonce = sealed[1 : 1 + NONCE_BYTES]
        ciphertext = sealed[1 + NONCE_BYTES : -TAG_BYTES]
        tag = sealed[-TAG_BYTES:]
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
        cipher.update(associated)
        try:
            plaintext = cipher.decrypt_and_verify(ciphertext, tag)
        except ValueError:
            raise DecryptError(
                f"message {message_id} from {sender} failed authentication "
                "(tampered, misrouted, or encrypted under other keys)"
            ) from None
        return unpad(plaintext) if version == ENVELOPE_VERSION else plaintext


class PairwiseCiphers:
    """Per-peer cache of `PairwiseCipher`s for one local identity.

    Key agreement costs far more than a message, so the derived key is reused
    while the peer's keys stay the same; new keys for a peer replace the entry.
    """

    def __init__(self, me: Identity) -> None:
        self.me = me
        self._by_peer: dict[str, PairwiseCipher] = {}

    def get(self, peer: str, peer_keys: pb.PublicKeys) -> PairwiseCipher:
        cached = self._by_peer.get(peer)
        if (
            cached is not None
            and cached.peer_identity_key == peer_keys.identity_key
            and cached.peer_agreement_key == peer_keys.agreement_key
        ):
            return cached
        cipher = PairwiseCipher(self.me, peer, peer_keys)
        self._by_peer[peer] = cipher
        return cipher

    def cached(self, peer: str) -> PairwiseCipher | None:
        return self._by_peer.get(peer)

    def forget(self, peer: str) -> None:
        self._by_peer.pop(peer, None)
