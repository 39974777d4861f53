"""End-to-end encryption and identity for Spartan clients (and login checks for gateways).

Everything secret lives on the client: an `Identity` (Ed25519 for signatures and
login, X25519 for key agreement) is kept by `keystore`, peers' keys are pinned by
`pins` (trust on first use, with `safety` numbers to verify them), 1:1 messages
are sealed by `pairwise`, group messages by per-sender keys (`sender_keys`), and
gateways check logins and session tokens statelessly with `tokens`.

The names the submodules share (`DecryptError` and the unambiguous field
encoding used for every signed or authenticated transcript) live in `encoding`;
this module re-exports the public API, so `from spartan.crypto import X` works
for all of it.
"""

from __future__ import annotations

from spartan.crypto.encoding import DecryptError, encode_fields
from spartan.crypto.identity import (
    Identity,
    fingerprint,
    verify_public_keys,
    verify_signature,
)
from spartan.crypto.keystore import KeyStoreError, key_path, load, load_or_create, save
from spartan.crypto.pairwise import PairwiseCipher, PairwiseCiphers
from spartan.crypto.pins import PinConflict, PinResult, PinStore
from spartan.crypto.safety import safety_number
from spartan.crypto.sender_keys import (
    SenderKey,
    SenderKeyRing,
    decrypt_group,
    encrypt_group,
    envelope_key_id,
    open_sender_key,
    seal_sender_key,
)
from spartan.crypto.tokens import (
    ChallengeIssuer,
    SessionClaims,
    TokenIssuer,
    login_transcript,
    redis_seen_nonce,
    verify_login,
    verify_login_once,
)

__all__ = [
    "ChallengeIssuer",
    "DecryptError",
    "Identity",
    "KeyStoreError",
    "PairwiseCipher",
    "PairwiseCiphers",
    "PinConflict",
    "PinResult",
    "PinStore",
    "SenderKey",
    "SenderKeyRing",
    "SessionClaims",
    "TokenIssuer",
    "decrypt_group",
    "encode_fields",
    "encrypt_group",
    "envelope_key_id",
    "fingerprint",
    "key_path",
    "load",
    "load_or_create",
    "login_transcript",
    "open_sender_key",
    "redis_seen_nonce",
    "safety_number",
    "save",
    "seal_sender_key",
    "verify_login",
    "verify_login_once",
    "verify_public_keys",
    "verify_signature",
]
