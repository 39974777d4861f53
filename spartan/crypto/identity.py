"""A user's identity: the key pairs that are both their login and the root of their encryption.

An `Identity` holds two private keys that never leave the client:

- an Ed25519 key (the *identity key*) that signs logins, group messages and
  the agreement key, and that peers pin and compare as safety numbers;
- an X25519 key (the *agreement key*), from which older (version 2 and 3) 1:1
  envelopes derived their key; new ones are sealed to short-lived signed
  prekeys (`spartan.crypto.prekeys`), which the identity key vouches for too.

On the wire both are raw 32-byte public keys in `pb.PublicKeys`, together with
the identity key's signature over the agreement key (bound to the user name
and a domain label), so a key directory cannot swap in its own agreement key
for a pinned identity. `verify_public_keys` is what every receiver of a
`PublicKeys` (gateway, presence, peer client) runs before using it.
"""

from __future__ import annotations

import hashlib

from Crypto.Protocol import DH
from Crypto.PublicKey.ECC import EccKey
from Crypto.Random import get_random_bytes
from Crypto.Signature import eddsa

from spartan.crypto.encoding import encode_fields
from spartan.errors import InvalidArgument
from spartan.v1 import pb

KEY_BYTES = 32
SIGNATURE_BYTES = 64
AGREEMENT_LABEL = b"spartan/v1/agreement-key"
PREKEY_LABEL = b"spartan/v1/prekey"
FINGERPRINT_BYTES = 16


def agreement_transcript(user: str, agreement_key: bytes) -> bytes:
    """What the identity key signs to vouch for an agreement key."""
    return encode_fields(AGREEMENT_LABEL, user, agreement_key)


def prekey_transcript(user: str, prekey_id: int, key: bytes, created_at_s: int) -> bytes:
    """What the identity key signs to vouch for a prekey."""
    return encode_fields(PREKEY_LABEL, user, prekey_id, key, created_at_s)


def verify_prekey(prekey: pb.SignedPrekey, *, user: str, identity_key: bytes) -> None:
    """Raise `InvalidArgument` unless `prekey` is a valid X25519 key that `identity_key` signed for `user`."""
    if len(prekey.key) != KEY_BYTES:
        raise InvalidArgument(f"prekey of {user} must be {KEY_BYTES} bytes, got {len(prekey.key)}")
    if len(prekey.signature) != SIGNATURE_BYTES:
        raise InvalidArgument(f"prekey signature of {user} must be {SIGNATURE_BYTES} bytes")
    try:
        DH.import_x25519_public_key(prekey.key)
    except ValueError:
        raise InvalidArgument(f"prekey of {user} is not a valid X25519 public key") from None
    transcript = prekey_transcript(user, prekey.id, prekey.key, prekey.created_at_s)
    if not verify_signature(identity_key, transcript, prekey.signature):
        raise InvalidArgument(f"prekey of {user} is not signed by its identity key")


def fingerprint(identity_key: bytes) -> str:
    """Short stable hex id of an identity key (first 16 bytes of its SHA-256)."""
    return hashlib.sha256(identity_key).digest()[:FINGERPRINT_BYTES].hex()


class Identity:
    """One user's private keys; create with `generate` or load with `spartan.crypto.keystore`."""

    __slots__ = (
        "user",
        "_signing_seed",
        "_agreement_seed",
        "_signing_key",
        "_agreement_key",
        "identity_key",
        "agreement_key",
        "_public_keys",
    )

    def __init__(self, user: str, signing_seed: bytes, agreement_seed: bytes) -> None:
        if not user:
            raise InvalidArgument("an identity needs a user name")
        if len(signing_seed) != KEY_BYTES or len(agreement_seed) != KEY_BYTES:
            raise InvalidArgument(f"private key seeds must be {KEY_BYTES} bytes each")
        self.user = user
        self._signing_seed = bytes(signing_seed)
        self._agreement_seed = bytes(agreement_seed)
        self._signing_key: EccKey = eddsa.import_private_key(self._signing_seed)
        self._agreement_key: EccKey = DH.import_x25519_private_key(self._agreement_seed)
        self.identity_key: bytes = self._signing_key.public_key().export_key(format="raw")
        self.agreement_key: bytes = self._agreement_key.public_key().export_key(format="raw")
        self._public_keys: bytes | None = None

    @classmethod
    def generate(cls, user: str) -> Identity:
        return cls(user, get_random_bytes(KEY_BYTES), get_random_bytes(KEY_BYTES))

    def private_seeds(self) -> tuple[bytes, bytes]:
        """(Ed25519 seed, X25519 seed): what the key store writes to disk."""
        return self._signing_seed, self._agreement_seed

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature (RFC 8032, 64 bytes) of `data` by the identity key."""
        return eddsa.new(self._signing_key, "rfc8032").sign(data)

    def public_keys(self) -> pb.PublicKeys:
        """The keys to publish: identity key, agreement key and the signature binding them."""
        if self._public_keys is None:
            signature = self.sign(agreement_transcript(self.user, self.agreement_key))
            self._public_keys = pb.PublicKeys(
                user=self.user,
                identity_key=self.identity_key,
                agreement_key=self.agreement_key,
                agreement_signature=signature,
            ).SerializeToString()
        return pb.PublicKeys.FromString(self._public_keys)

    def agree(self, peer_agreement_key: bytes) -> bytes:
        """Raw X25519 shared secret with a peer's agreement key (feed it to a KDF, never use as is)."""
        peer = _import_agreement_key(peer_agreement_key, "peer")
        shared: bytes = DH.key_agreement(static_priv=self._agreement_key, static_pub=peer, kdf=lambda secret: secret)
        if not any(shared):
            raise InvalidArgument("the peer's agreement key yields an all-zero shared secret")
        return shared

    def fingerprint(self) -> str:
        return fingerprint(self.identity_key)

    def __repr__(self) -> str:  # never print private material
        return f"Identity(user={self.user!r}, fingerprint={self.fingerprint()})"


_PARSED_IDENTITY_KEYS: dict[bytes, EccKey] = {}
_PARSED_IDENTITY_KEYS_MAX = 4096


def _parse_identity_key(identity_key: bytes) -> EccKey:
    """Decode a raw Ed25519 public key, remembering recent ones (decoding costs ~150 µs)."""
    key = _PARSED_IDENTITY_KEYS.get(identity_key)
    if key is None:
        key = eddsa.import_public_key(identity_key)  # ValueError if not a curve point
        if len(_PARSED_IDENTITY_KEYS) >= _PARSED_IDENTITY_KEYS_MAX:
            _PARSED_IDENTITY_KEYS.clear()
        _PARSED_IDENTITY_KEYS[bytes(identity_key)] = key
    return key


def _import_identity_key(identity_key: bytes, user: str) -> EccKey:
    if len(identity_key) != KEY_BYTES:
        raise InvalidArgument(f"identity key of {user} must be {KEY_BYTES} bytes, got {len(identity_key)}")
    try:
        return _parse_identity_key(identity_key)
    except ValueError:
        raise InvalidArgument(f"identity key of {user} is not a valid Ed25519 public key") from None


def _import_agreement_key(agreement_key: bytes, user: str) -> EccKey:
    if len(agreement_key) != KEY_BYTES:
        raise InvalidArgument(f"agreement key of {user} must be {KEY_BYTES} bytes, got {len(agreement_key)}")
    try:
        return DH.import_x25519_public_key(agreement_key)
    except ValueError:
        raise InvalidArgument(f"agreement key of {user} is not a valid X25519 public key") from None


def verify_public_keys(keys: pb.PublicKeys, *, user: str | None = None) -> None:
    """Raise `InvalidArgument` unless `keys` are well formed and self-consistent.

    Checks the lengths, that both keys are valid curve points (rejecting
    low-order X25519 points), and that the identity key signed the agreement key
    for `keys.user`. With `user`, also that the keys are labelled for that user.
    """
    who = keys.user or "<unnamed user>"
    if not keys.user:
        raise InvalidArgument("public keys do not name their user")
    if user is not None and keys.user != user:
        raise InvalidArgument(f"public keys are for {keys.user}, expected {user}")
    identity = _import_identity_key(keys.identity_key, who)
    _import_agreement_key(keys.agreement_key, who)
    signature = keys.agreement_signature
    if len(signature) != SIGNATURE_BYTES:
        raise InvalidArgument(f"agreement key signature of {who} must be {SIGNATURE_BYTES} bytes, got {len(signature)}")
    try:
        eddsa.new(identity, "rfc8032").verify(agreement_transcript(keys.user, keys.agreement_key), signature)
    except ValueError:
        raise InvalidArgument(f"agreement key of {who} is not signed by its identity key") from None
    if keys.HasField("prekey"):
        verify_prekey(keys.prekey, user=keys.user, identity_key=keys.identity_key)


def verify_signature(identity_key: bytes, data: bytes, signature: bytes) -> bool:
    """True if `signature` is a valid Ed25519 signature of `data` by `identity_key`.

    Malformed keys or signatures are simply invalid (False), never an exception.
    """
    if len(identity_key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        key = _parse_identity_key(identity_key)
        eddsa.new(key, "rfc8032").verify(data, signature)
    except ValueError:
        return False
    return True
