"""Stateless login for gateway replicas: MAC'd challenges, signed logins, MAC'd session tokens.

Login is a challenge/response with the user's identity key:

1. `ChallengeIssuer.issue(user)` returns a nonce that carries its own expiry
   and an HMAC over (user, expiry, randomness). Nothing is stored, so any
   replica sharing the secret can check a nonce another replica issued.
2. The client signs `login_transcript(deployment_id, user, nonce, identity_key)`
   (a domain label keeps this signature from being valid for anything else; the
   deployment id, which the challenge names, keeps it from being valid at any
   other deployment).
3. `verify_login` checks the nonce (ours, for this user, not expired), that the
   key is the one registered for the user, and the signature. It returns the
   nonce's expiry so a gateway can plug in a replay guard (`verify_login_once`
   with a `seen_nonce` callback such as Redis `SET NX PX`).
4. `TokenIssuer.issue` returns a session token: a compact payload (deployment
   id, user, key fingerprint, expiry) and its HMAC-SHA256, base64url. Every
   replica verifies it with the shared secret alone; no session store. A
   gateway of another deployment refuses it even if it holds the same secret.

Token and challenge MAC keys are derived from the one configured secret with
different labels, so a nonce can never pass as a token or the other way round.
HMAC-SHA256 comes from the standard library (`hmac`, `hashlib`): the same
function as pycryptodome's, but token checks run on every RPC and the stdlib
call costs a few µs instead of ~70 µs here (see `python3 -m bench.crypto`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from spartan.crypto.encoding import encode_fields
from spartan.crypto.identity import fingerprint, verify_signature
from spartan.errors import InvalidArgument, Unauthenticated

TOKEN_VERSION = 2  # 1 carried no deployment id
NONCE_VERSION = 1
MIN_SECRET_BYTES = 16
FINGERPRINT_BYTES = 16
NONCE_RANDOM_BYTES = 16
NONCE_MAC_BYTES = 16
NONCE_BYTES = 1 + 8 + NONCE_RANDOM_BYTES + NONCE_MAC_BYTES
TOKEN_LABEL = b"spartan/v1/session-token"
CHALLENGE_LABEL = b"spartan/v1/login-challenge"
LOGIN_LABEL = b"spartan/v1/deployment-login"  # "spartan/v1/login" signed no deployment
MAX_DEPLOYMENT_ID_BYTES = 64

Clock = Callable[[], float]
SeenNonce = Callable[[bytes, float], Awaitable[bool]]
LOGIN_NONCE_PREFIX = "sp:login-nonce:"


def _subkey(secret: bytes | str, label: bytes) -> bytes:
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(raw) < MIN_SECRET_BYTES:
        raise InvalidArgument(f"the auth secret must be at least {MIN_SECRET_BYTES} bytes")
    return hmac.digest(raw, label, hashlib.sha256)


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, hashlib.sha256)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _deployment_bytes(deployment_id: str) -> bytes:
    raw = deployment_id.encode("utf-8")
    if not 1 <= len(raw) <= MAX_DEPLOYMENT_ID_BYTES:
        raise InvalidArgument(f"a deployment id must be 1 to {MAX_DEPLOYMENT_ID_BYTES} bytes, got {len(raw)}")
    return raw


def _now_us(clock: Clock) -> int:
    return int(clock() * 1_000_000)


@dataclass(frozen=True)
class SessionClaims:
    user: str
    identity_key_fingerprint: str  # hex, see spartan.crypto.identity.fingerprint
    expires_at_us: int
    deployment_id: str

    def matches_key(self, identity_key: bytes) -> bool:
        """True if the session was issued for this identity key (False after a key reset)."""
        return fingerprint(identity_key) == self.identity_key_fingerprint


class TokenIssuer:
    """Issues and verifies session tokens with a secret shared by all gateway replicas of one deployment.

    Payload: `version ‖ expiry (8) ‖ key fingerprint (16) ‖ len (1) ‖ deployment id ‖ user`.
    """

    def __init__(
        self, secret: bytes | str, ttl_seconds: float, *, deployment_id: str, clock: Clock = time.time
    ) -> None:
        if ttl_seconds <= 0:
            raise InvalidArgument("session token lifetime must be positive")
        self._key = _subkey(secret, TOKEN_LABEL)
        self._deployment = _deployment_bytes(deployment_id)
        self.deployment_id = deployment_id
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def issue(self, user: str, identity_key: bytes) -> tuple[str, int]:
        """A token for `user` logged in with `identity_key`; returns (token, expires_at_us)."""
        expires_at_us = _now_us(self._clock) + int(self.ttl_seconds * 1_000_000)
        payload = (
            bytes((TOKEN_VERSION,))
            + struct.pack(">q", expires_at_us)
            + bytes.fromhex(fingerprint(identity_key))
            + bytes((len(self._deployment),))
            + self._deployment
            + user.encode("utf-8")
        )
        return f"{_b64encode(payload)}.{_b64encode(_mac(self._key, payload))}", expires_at_us

    def verify(self, token: str) -> SessionClaims:
        """The claims of a valid token of this deployment; `Unauthenticated` if malformed, forged, foreign, expired."""
        try:
            payload_text, mac_text = token.split(".")
            payload, mac = _b64decode(payload_text), _b64decode(mac_text)
        except (ValueError, binascii.Error):
            raise Unauthenticated("session token is malformed; log in again") from None
        header = 1 + 8 + FINGERPRINT_BYTES
        if len(payload) <= header + 1 or len(mac) != 32 or payload[0] != TOKEN_VERSION:
            raise Unauthenticated("session token is malformed; log in again")
        if not hmac.compare_digest(_mac(self._key, payload), mac):
            raise Unauthenticated("session token signature is invalid (forged, altered, or issued with another secret)")
        deployment_end = header + 1 + payload[header]
        if len(payload) <= deployment_end:
            raise Unauthenticated("session token is malformed; log in again")
        if payload[header + 1 : deployment_end] != self._deployment:
            raise Unauthenticated("session token was issued by another Spartan deployment; log in again here")
        (expires_at_us,) = struct.unpack_from(">q", payload, 1)
        now_us = _now_us(self._clock)
        if now_us >= expires_at_us:
            raise Unauthenticated(f"session token expired {(now_us - expires_at_us) / 1e6:.0f} s ago; log in again")
        try:
            user = payload[deployment_end:].decode("utf-8")
        except UnicodeDecodeError:
            raise Unauthenticated("session token is malformed; log in again") from None
        return SessionClaims(
            user=user,
            identity_key_fingerprint=payload[9:header].hex(),
            expires_at_us=expires_at_us,
            deployment_id=self.deployment_id,
        )


class ChallengeIssuer:
    """Issues login nonces that any replica of the deployment can check, without storing them.

    The nonce's MAC covers the deployment id too, so a nonce is refused by a
    deployment that holds the same secret by mistake.
    """

    def __init__(
        self, secret: bytes | str, ttl_seconds: float, *, deployment_id: str, clock: Clock = time.time
    ) -> None:
        if ttl_seconds <= 0:
            raise InvalidArgument("login challenge lifetime must be positive")
        self._key = _subkey(secret, CHALLENGE_LABEL)
        _deployment_bytes(deployment_id)
        self.deployment_id = deployment_id
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def _nonce_mac(self, user: str, body: bytes) -> bytes:
        return _mac(self._key, encode_fields(self.deployment_id, user, body))[:NONCE_MAC_BYTES]

    def issue(self, user: str) -> tuple[bytes, int]:
        """A fresh nonce for `user`; returns (nonce, expires_at_us)."""
        expires_at_us = _now_us(self._clock) + int(self.ttl_seconds * 1_000_000)
        body = bytes((NONCE_VERSION,)) + struct.pack(">q", expires_at_us) + os.urandom(NONCE_RANDOM_BYTES)
        return body + self._nonce_mac(user, body), expires_at_us

    def check(self, user: str, nonce: bytes) -> int:
        """The nonce's expiry if it was issued (by any replica) for `user` and is still valid."""
        if len(nonce) != NONCE_BYTES or nonce[0] != NONCE_VERSION:
            raise Unauthenticated("login challenge is malformed; request a new one")
        body, mac = nonce[:-NONCE_MAC_BYTES], nonce[-NONCE_MAC_BYTES:]
        expected = self._nonce_mac(user, body)
        if not hmac.compare_digest(expected, mac):
            raise Unauthenticated(f"login challenge was not issued by this deployment for {user}; request a new one")
        (expires_at_us,) = struct.unpack_from(">q", body, 1)
        if _now_us(self._clock) >= expires_at_us:
            raise Unauthenticated("login challenge expired; request a new one")
        return expires_at_us

    def remaining_seconds(self, expires_at_us: int) -> float:
        return max(expires_at_us - _now_us(self._clock), 0) / 1e6


def login_transcript(deployment_id: str, user: str, nonce: bytes, identity_key: bytes) -> bytes:
    """What a client signs with its identity key to log in to the deployment its challenge names.

    `"spartan/v1/deployment-login" ‖ deployment id ‖ user ‖ nonce ‖ identity key`, each field
    length-prefixed (`encode_fields`).
    """
    return encode_fields(LOGIN_LABEL, deployment_id, user, nonce, identity_key)


def verify_login(
    challenges: ChallengeIssuer,
    *,
    user: str,
    nonce: bytes,
    signature: bytes,
    identity_key: bytes,
    registered_key: bytes | None = None,
) -> int:
    """Check a login; returns the nonce expiry (µs) or raises `Unauthenticated`.

    `registered_key` is the identity key the directory (or configuration) holds
    for `user`; None on first registration, when the presented key is accepted.
    """
    expires_at_us = challenges.check(user, nonce)
    if registered_key is not None and bytes(registered_key) != bytes(identity_key):
        raise Unauthenticated(
            f"the key presented for {user} ({fingerprint(identity_key)[:16]}) is not the key "
            f"registered for {user} ({fingerprint(registered_key)[:16]}); an administrator "
            "must reset the keys of a user who lost theirs"
        )
    transcript = login_transcript(challenges.deployment_id, user, nonce, identity_key)
    if not verify_signature(identity_key, transcript, signature):
        raise Unauthenticated(
            f"login signature of {user} does not verify: wrong challenge, wrong key or another deployment"
        )
    return expires_at_us


async def verify_login_once(
    challenges: ChallengeIssuer,
    *,
    user: str,
    nonce: bytes,
    signature: bytes,
    identity_key: bytes,
    registered_key: bytes | None = None,
    seen_nonce: SeenNonce,
) -> int:
    """`verify_login` plus a replay guard: each nonce is tried at most once.

    Cheap checks first: the nonce's MAC and expiry (an HMAC), then the replay guard,
    and only then the public-key signature, so a flood of bogus or replayed logins
    never costs a signature verification. A nonce is used up by any attempt, failed or
    not (the client requests a new one). `seen_nonce(nonce, ttl_seconds)` must
    atomically record the nonce for `ttl_seconds` and return True if it was already
    recorded (Redis: `not await redis.set(key, 1, nx=True, px=ms)`).
    """
    expires_at_us = challenges.check(user, nonce)
    if await seen_nonce(nonce, max(challenges.remaining_seconds(expires_at_us), 0.001)):
        raise Unauthenticated("login challenge was already used; request a new one")
    return verify_login(
        challenges,
        user=user,
        nonce=nonce,
        signature=signature,
        identity_key=identity_key,
        registered_key=registered_key,
    )


def nonce_key(nonce: bytes) -> str:
    """`sp:login-nonce:<hex>`: the replay guard's record of a used login nonce (this module owns the key)."""
    return LOGIN_NONCE_PREFIX + nonce.hex()


def redis_seen_nonce(redis: Any) -> SeenNonce:
    """The replay guard of every gateway: `SET sp:login-nonce:<nonce> 1 NX PX ttl` on a redis.asyncio client.

    Any replica may then accept a given nonce once; the key expires with the nonce.
    """

    async def seen_nonce(nonce: bytes, ttl_seconds: float) -> bool:
        first_use = await redis.set(nonce_key(nonce), b"1", nx=True, px=max(int(ttl_seconds * 1000), 1))
        return not first_use

    return seen_nonce
