"""Seals 1:1 messages between two users so only they can read them, and only for a bounded time.

Each message (envelope version 4) is sealed to the recipient's signed prekey
(`spartan.crypto.prekeys`), which its owner replaces daily and deletes 30 days
later, so the owner's key file plus everything the server stores stops opening
a message after `prekeys.WINDOW_SECONDS` (forward secrecy, bounded):

- a fresh random 32-byte content key encrypts the padded plaintext with
  AES-256-GCM under a fresh random 12-byte nonce; the associated data are the
  routing fields (message id, sender, recipient, conversation), so the server
  cannot re-attribute, re-address, or move a message without the receiver
  noticing;
- a fresh ephemeral X25519 key E wraps the content key twice: for the
  recipient, under `HKDF-SHA256(X25519(e, recipient prekey), salt = WRAP_LABEL,
  info = owner ‖ prekey id ‖ prekey ‖ E)` (AES-256-GCM, all-zero nonce: each
  wrapping key is used once), and the same for the sender's own current prekey,
  so the sender can read its own message back from history;
- the sender signs the associated data and everything before the signature
  with its Ed25519 identity key, and the receiver checks that signature against
  the identity key it holds for the sender *before* decrypting: without it,
  whoever steals alice's key file could seal messages "from bob" to her
  (key-compromise impersonation).

    version (1 = 0x04) | E (32) | recipient prekey id (8) | recipient wrap (48)
    | sender prekey id (8) | sender wrap (48) | nonce (12) | ciphertext | tag (16) | signature (64)

    signature = Ed25519(sender identity key,
                        encode_fields(SIGN_LABEL, associated data, everything before the signature))

The ephemeral private key is dropped once the message is sealed. A message
sealed to a prekey its reader has deleted raises `KeyDeleted` (a `DecryptError`):
the reader can say so instead of calling it forged.

Older envelopes are still read: version 3 (padded) and 2 (unpadded) are sealed
under a static key from both users' long-term agreement keys (X25519, HKDF over
both identities) and have no forward secrecy; version 1 (unsigned) is refused,
since accepting it would let a forger simply omit the signature. The version is
part of the associated data and the signature, so one cannot be passed off as
another. Every other failure to open an envelope raises `DecryptError`.
"""

from __future__ import annotations

import struct

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol import DH
from Crypto.Protocol.KDF import HKDF
from Crypto.Random import get_random_bytes

from spartan.crypto.encoding import DecryptError, encode_fields
from spartan.crypto.identity import SIGNATURE_BYTES, Identity, verify_public_keys, verify_signature
from spartan.crypto.padding import pad, unpad
from spartan.crypto.prekeys import OwnPrekeys
from spartan.errors import InvalidArgument
from spartan.v1 import pb

ENVELOPE_VERSION = 4  # sealed to prekeys
STATIC_ENVELOPE_VERSION = 3  # padded, static key: still read
UNPADDED_ENVELOPE_VERSION = 2  # unpadded, static key: still read
READ_VERSIONS = (UNPADDED_ENVELOPE_VERSION, STATIC_ENVELOPE_VERSION, ENVELOPE_VERSION)
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
ID_BYTES = 8
WRAP_BYTES = KEY_BYTES + TAG_BYTES
SLOT_BYTES = ID_BYTES + WRAP_BYTES
HEADER_BYTES = 1 + KEY_BYTES + 2 * SLOT_BYTES + NONCE_BYTES  # version, E, two wraps, nonce
STATIC_OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES + SIGNATURE_BYTES
OVERHEAD = HEADER_BYTES + TAG_BYTES + SIGNATURE_BYTES
KDF_SALT = b"spartan/v1/pairwise-key"
WRAP_LABEL = b"spartan/v1/prekey-wrap"
AD_LABEL = b"spartan/v1/dm-message"
SIGN_LABEL = b"spartan/v1/dm-signature"
ZERO_NONCE = bytes(NONCE_BYTES)


class KeyDeleted(DecryptError):
    """A correctly signed message sealed to a prekey I do not hold (deleted for forward secrecy, or made
    by another device of mine that did not share my prekeys file)."""


def derive_pairwise_key(me: Identity, peer: str, peer_keys: pb.PublicKeys) -> bytes:
    """The static key of version 2 and 3 envelopes (both sides derive the same one)."""
    shared = me.agree(peer_keys.agreement_key)
    parties = sorted(
        [(me.user, me.identity_key, me.agreement_key), (peer, peer_keys.identity_key, peer_keys.agreement_key)]
    )
    info = encode_fields(*(field for party in parties for field in party))
    return HKDF(shared, KEY_BYTES, KDF_SALT, SHA256, context=info)


def wrapping_key(shared: bytes, *, owner: str, prekey_id: int, prekey: bytes, ephemeral: bytes) -> bytes:
    """The one-use key that wraps a message's content key for the owner of `prekey`."""
    if not any(shared):
        raise DecryptError("an ephemeral or prekey yields an all-zero shared secret")
    return HKDF(shared, KEY_BYTES, WRAP_LABEL, SHA256, context=encode_fields(owner, prekey_id, prekey, ephemeral))


def _wrap(key: bytes, content_key: bytes) -> bytes:
    cipher = AES.new(key, AES.MODE_GCM, nonce=ZERO_NONCE, mac_len=TAG_BYTES)
    wrapped, tag = cipher.encrypt_and_digest(content_key)
    return wrapped + tag


def _unwrap(key: bytes, wrapped: bytes) -> bytes:
    cipher = AES.new(key, AES.MODE_GCM, nonce=ZERO_NONCE, mac_len=TAG_BYTES)
    return cipher.decrypt_and_verify(wrapped[:KEY_BYTES], wrapped[KEY_BYTES:])


def associated_data(
    *, message_id: str, sender: str, recipient: str, conversation: str, version: int = ENVELOPE_VERSION
) -> bytes:
    return encode_fields(AD_LABEL, version, message_id, sender, recipient, conversation)


def signed_transcript(associated: bytes, sealed: bytes) -> bytes:
    """What the sender's identity key signs: the associated data and the sealed body (all but the signature)."""
    return encode_fields(SIGN_LABEL, associated, sealed)


class PairwiseCipher:
    """Encrypts to and decrypts from one peer; construct once per peer and key (see `PairwiseCiphers`).

    Sealing needs `prekeys` (mine: my own copy is sealed to my current one) and a
    prekey in `peer_keys`; opening a version 4 envelope needs `prekeys` too.
    """

    def __init__(self, me: Identity, peer: str, peer_keys: pb.PublicKeys, prekeys: OwnPrekeys | None = None) -> None:
        verify_public_keys(peer_keys, user=peer)
        self.me = me
        self.peer = peer
        self.prekeys = prekeys
        self.peer_identity_key: bytes = peer_keys.identity_key
        self.peer_agreement_key: bytes = peer_keys.agreement_key
        self.peer_prekey: pb.SignedPrekey | None = peer_keys.prekey if peer_keys.HasField("prekey") else None
        self._static_key: bytes | None = None
        self._parties = {me.user, peer}

    @property
    def static_key(self) -> bytes:
        """Derived on first use: only older envelopes need it."""
        if self._static_key is None:
            self._static_key = derive_pairwise_key(
                self.me,
                self.peer,
                pb.PublicKeys(identity_key=self.peer_identity_key, agreement_key=self.peer_agreement_key),
            )
        return self._static_key

    def encrypt(self, plaintext: bytes, *, message_id: str, sender: str, recipient: str, conversation: str) -> bytes:
        if {sender, recipient} != self._parties:
            raise InvalidArgument(
                f"a message from {sender} to {recipient} does not belong to the channel "
                f"between {self.me.user} and {self.peer}"
            )
        if sender != self.me.user:
            raise InvalidArgument(f"{self.me.user} cannot sign a message as {sender}")
        if self.peer_prekey is None:
            raise InvalidArgument(f"{self.peer} has not published a prekey yet, so nothing can be sealed to them")
        if self.prekeys is None:
            raise InvalidArgument(f"{self.me.user} has no prekeys to seal a copy of its own message to")
        mine = self.prekeys.current()
        ephemeral = DH.import_x25519_private_key(get_random_bytes(KEY_BYTES))
        e_public: bytes = ephemeral.public_key().export_key(format="raw")
        content_key = get_random_bytes(KEY_BYTES)
        header = bytearray((ENVELOPE_VERSION,)) + e_public
        for owner, prekey in ((recipient, self.peer_prekey), (sender, mine)):
            shared = DH.key_agreement(
                eph_priv=ephemeral, static_pub=DH.import_x25519_public_key(prekey.key), kdf=lambda secret: secret
            )
            key = wrapping_key(shared, owner=owner, prekey_id=prekey.id, prekey=prekey.key, ephemeral=e_public)
            header += struct.pack(">Q", prekey.id) + _wrap(key, content_key)
        nonce = get_random_bytes(NONCE_BYTES)
        header += nonce
        associated = associated_data(
            message_id=message_id, sender=sender, recipient=recipient, conversation=conversation
        )
        cipher = AES.new(content_key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
        cipher.update(associated)
        ciphertext, tag = cipher.encrypt_and_digest(pad(plaintext))
        sealed = bytes(header) + ciphertext + tag
        return sealed + self.me.sign(signed_transcript(associated, sealed))

    def decrypt(self, envelope: bytes, *, message_id: str, sender: str, recipient: str, conversation: str) -> bytes:
        version = envelope[0] if envelope else 0
        if len(envelope) < (OVERHEAD if version == ENVELOPE_VERSION else STATIC_OVERHEAD):
            raise DecryptError(f"message from {sender} is truncated ({len(envelope)} bytes)")
        if version not in READ_VERSIONS:
            raise DecryptError(f"message from {sender} uses unknown envelope version {version}")
        associated = associated_data(
            message_id=message_id, sender=sender, recipient=recipient, conversation=conversation, version=version
        )
        sealed, signature = envelope[:-SIGNATURE_BYTES], envelope[-SIGNATURE_BYTES:]
        signer = self.me.identity_key if sender == self.me.user else self.peer_identity_key
        if {sender, recipient} != self._parties or not verify_signature(
            signer, signed_transcript(associated, sealed), signature
        ):
            raise DecryptError(f"message {message_id} does not carry a valid signature of {sender}")
        if version == ENVELOPE_VERSION:
            key, start = (
                self._content_key(sealed, message_id=message_id, sender=sender, recipient=recipient),
                HEADER_BYTES,
            )
        else:
            key, start = self.static_key, 1 + NONCE_BYTES
        nonce = sealed[start - NONCE_BYTES : start]
        cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
        cipher.update(associated)
        try:
            plaintext = cipher.decrypt_and_verify(sealed[start:-TAG_BYTES], sealed[-TAG_BYTES:])
        except ValueError:
            raise DecryptError(
                f"message {message_id} from {sender} failed authentication "
                "(tampered, misrouted, or encrypted under other keys)"
            ) from None
        return plaintext if version == UNPADDED_ENVELOPE_VERSION else unpad(plaintext)

    def _content_key(self, sealed: bytes, *, message_id: str, sender: str, recipient: str) -> bytes:
        """Unwrap the content key from my slot (the recipient's, or the sender's own copy)."""
        e_public = sealed[1 : 1 + KEY_BYTES]
        mine = self.me.user
        slot = 1 + KEY_BYTES + (0 if recipient == mine else SLOT_BYTES)
        (prekey_id,) = struct.unpack(">Q", sealed[slot : slot + ID_BYTES])
        private = self.prekeys.private(prekey_id) if self.prekeys is not None else None
        if private is None:
            raise KeyDeleted(
                f"message {message_id} from {sender} was sealed to a prekey this device does not hold "
                "(deleted for forward secrecy, or made by another device)"
            )
        try:
            ephemeral = DH.import_x25519_public_key(e_public)
        except ValueError:
            raise DecryptError(f"message {message_id} from {sender} carries an invalid ephemeral key") from None
        shared = DH.key_agreement(static_priv=private, eph_pub=ephemeral, kdf=lambda secret: secret)
        own: bytes = private.public_key().export_key(format="raw")
        key = wrapping_key(shared, owner=mine, prekey_id=prekey_id, prekey=own, ephemeral=e_public)
        try:
            return _unwrap(key, sealed[slot + ID_BYTES : slot + SLOT_BYTES])
        except ValueError:
            raise DecryptError(f"message {message_id} from {sender} failed authentication (its key wrap)") from None


class PairwiseCiphers:
    """Per-peer cache of `PairwiseCipher`s for one local identity.

    Checking a peer's keys costs more than a message, so the cipher is reused
    while the peer's keys (and prekey) stay the same; new ones replace the entry.
    """

    def __init__(self, me: Identity, prekeys: OwnPrekeys | None = None) -> None:
        self.me = me
        self.prekeys = prekeys
        self._by_peer: dict[str, PairwiseCipher] = {}

    def get(self, peer: str, peer_keys: pb.PublicKeys) -> PairwiseCipher:
        cached = self._by_peer.get(peer)
        if (
            cached is not None
            and cached.peer_identity_key == peer_keys.identity_key
            and cached.peer_agreement_key == peer_keys.agreement_key
            and cached.peer_prekey == (peer_keys.prekey if peer_keys.HasField("prekey") else None)
        ):
            return cached
        cipher = PairwiseCipher(self.me, peer, peer_keys, self.prekeys)
        self._by_peer[peer] = cipher
        return cipher

    def cached(self, peer: str) -> PairwiseCipher | None:
        return self._by_peer.get(peer)

    def forget(self, peer: str) -> None:
        self._by_peer.pop(peer, None)
