"""End-to-end encryption and identity for Spartan clients (and login checks for gateways).

Everything secret lives on the client: an `Identity` (Ed25519 for signatures and
login, X25519 for key agreement) is kept by `keystore`, peers' keys are pinned by
`pins` (trust on first use, with `safety` numbers to verify them), 1:1 messages
are sealed by `pairwise`, group messages by per-sender keys (`sender_keys`), and
gateways check logins and session tokens statelessly with `tokens`.

This module defines the names the submodules share (`DecryptError` and the
unambiguous field encoding used for every signed or authenticated transcript)
before re-exporting the public API, so `from spartan.crypto import X` works for
all of it.
"""
from __future__ import annotations

import struct

from spartan.errors import InvalidArgument


class DecryptError(InvalidArgument):
    """An envelope could not be opened: tampered, truncated, wrong key, wrong routing or version.

    One class on purpose: callers show one plain warning and must not learn (or
    leak) which check failed.
    """


def encode_fields(*fields: bytes | str | int) -> bytes:
    """Length-prefixed concatenation, so no two different field lists encode the same.

    Strings are UTF-8, ints are unsigned 64-bit big-endian; every field gets a
    4-byte length prefix. Used for associated data and signed transcripts.
    """
    out = bytearray()
    for field in fields:
        if isinstance(field, str):
            raw = field.encode("utf-8")
        elif isinstance(field, int):
            raw = struct.pack(">Q", field)
        else:
            raw = bytes(field)
        out += struct.pack(">I", len(raw))
        out += raw
    return bytes(out)


from spartan.crypto.identity import (  # noqa: E402
    Identity,
    fingerprint,
    verify_public_keys,
    verify_signature,
)
from spartan.crypto.keystore import KeyStoreError, key_path, load, load_or_create, save  # noqa: E402
from spartan.crypto.pairwise import PairwiseCipher, PairwiseCiphers  # noqa: E402
from spartan.crypto.pins import PinConflict, PinResult, PinStore  # noqa: E402
from spartan.crypto.safety import safety_number  # noqa: E402
from spartan.crypto.sender_keys import (  # noqa: E402
    SenderKey,
    SenderKeyRing,
    decrypt_group,
    encrypt_group,
    envelope_key_id,
    open_sender_key,
    seal_sender_key,
)
from spartan.crypto.tokens import (  # noqa: E402
    ChallengeIssuer,
    MemoryNonceGuard,
    SessionClaims,
    TokenIssuer,
    login_transcript,
    redis_seen_nonce,
    verify_login,
    verify_login_once,
)

__all__ = [
    "ChallengeIssuer", "DecryptError", "Identity", "KeyStoreError", "MemoryNonceGuard",
    "PairwiseCipher", "PairwiseCiphers", "PinConflict", "PinResult", "PinStore", "SenderKey",
    "SenderKeyRing", "SessionClaims", "TokenIssuer", "decrypt_group", "encode_fields",
    "encrypt_group", "envelope_key_id", "fingerprint", "key_path", "load", "load_or_create",
    "login_transcript", "open_sender_key", "redis_seen_nonce", "safety_number", "save", "seal_sender_key",
    "verify_login", "verify_login_once", "verify_public_keys", "verify_signature",
]
