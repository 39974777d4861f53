"""Wrapping a key file's private seeds under a passphrase: scrypt, then AES-256-GCM.

A stolen key file is a stolen account and every 1:1 message ever sent to it; a
passphrase makes the file alone useless. The wrapping key is
`scrypt(passphrase, salt, N=2^17, r=8, p=1, 32 bytes)` (128 MiB and about 0.4 s per
unlock, so each guess costs an attacker the same), with a fresh random 16-byte salt
per write. The two 32-byte seeds (Ed25519 ‖ X25519) are sealed with AES-256-GCM under
a fresh random 12-byte nonce; the associated data binds the file's user, public
identity key and scrypt parameters, so none of them can be edited without the
unwrapping failing. The passphrase is NFC-normalised UTF-8, so the same characters
typed on another system unlock the same file. pycryptodome's primitives throughout.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from Crypto.Cipher import AES
from Crypto.Protocol.KDF import scrypt
from Crypto.Random import get_random_bytes

from spartan.crypto.encoding import encode_fields
from spartan.errors import InvalidArgument

LABEL = b"spartan/v1/key-file"
SALT_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
# What a file may ask for: enough to refuse weakened files and files that would exhaust memory.
MIN_LOG2_N, MAX_LOG2_N, MAX_R, MAX_P = 14, 20, 16, 4


class WrongPassphrase(InvalidArgument):
    """The passphrase does not unwrap the seeds (or the wrapped file was altered)."""


@dataclass(frozen=True)
class Wrapped:
    """What the key file stores besides the user and public identity key."""

    salt: bytes
    n: int
    r: int
    p: int
    nonce: bytes
    ciphertext: bytes  # the sealed seeds followed by the 16-byte GCM tag


def _passphrase_bytes(passphrase: str) -> bytes:
    if not passphrase:
        raise InvalidArgument("a passphrase cannot be empty")
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def check_parameters(n: int, r: int, p: int) -> None:
    """Refuse scrypt parameters outside what this client writes or can afford to run."""
    if n < 2 or n & (n - 1) or not MIN_LOG2_N <= n.bit_length() - 1 <= MAX_LOG2_N:
        raise InvalidArgument(f"scrypt N must be a power of two from 2^{MIN_LOG2_N} to 2^{MAX_LOG2_N}, got {n}")
    if not 1 <= r <= MAX_R or not 1 <= p <= MAX_P:
        raise InvalidArgument(f"scrypt r must be 1 to {MAX_R} and p 1 to {MAX_P}, got r={r}, p={p}")


def wrapping_key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    check_parameters(n, r, p)
    key: bytes = scrypt(_passphrase_bytes(passphrase), salt, KEY_BYTES, N=n, r=r, p=p)
    return key


def associated_data(user: str, identity_key: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    """`"spartan/v1/key-file" ‖ user ‖ identity key ‖ salt ‖ N ‖ r ‖ p`, each length-prefixed."""
    return encode_fields(LABEL, user, identity_key, salt, n, r, p)


def wrap(
    seeds: bytes,
    passphrase: str,
    *,
    user: str,
    identity_key: bytes,
    salt: bytes | None = None,
    nonce: bytes | None = None,
    n: int = SCRYPT_N,
    r: int = SCRYPT_R,
    p: int = SCRYPT_P,
) -> Wrapped:
    """Seal `seeds` under `passphrase` (salt and nonce are fresh unless given, which only tests do)."""
    salt = get_random_bytes(SALT_BYTES) if salt is None else salt
    nonce = get_random_bytes(NONCE_BYTES) if nonce is None else nonce
    cipher = AES.new(wrapping_key(passphrase, salt, n, r, p), AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
    cipher.update(associated_data(user, identity_key, salt, n, r, p))
    sealed, tag = cipher.encrypt_and_digest(seeds)
    return Wrapped(salt=salt, n=n, r=r, p=p, nonce=nonce, ciphertext=sealed + tag)


def unwrap(wrapped: Wrapped, passphrase: str, *, user: str, identity_key: bytes) -> bytes:
    """The seeds; `WrongPassphrase` if the passphrase (or anything the associated data binds) differs."""
    if len(wrapped.nonce) != NONCE_BYTES or len(wrapped.ciphertext) <= TAG_BYTES:
        raise InvalidArgument("the wrapped seeds are truncated")
    key = wrapping_key(passphrase, wrapped.salt, wrapped.n, wrapped.r, wrapped.p)
    cipher = AES.new(key, AES.MODE_GCM, nonce=wrapped.nonce, mac_len=TAG_BYTES)
    cipher.update(associated_data(user, identity_key, wrapped.salt, wrapped.n, wrapped.r, wrapped.p))
    try:
        seeds: bytes = cipher.decrypt_and_verify(wrapped.ciphertext[:-TAG_BYTES], wrapped.ciphertext[-TAG_BYTES:])
    except ValueError:
        raise WrongPassphrase("wrong passphrase") from None
    return seeds
