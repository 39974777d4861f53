"""Stateless login: MAC'd challenges, signed logins, session tokens any replica can verify."""
from __future__ import annotations

import base64

import pytest
from redis.asyncio import Redis

from spartan.crypto import (
    ChallengeIssuer,
    Identity,
    TokenIssuer,
    fingerprint,
    login_transcript,
    redis_seen_nonce,
    verify_login,
    verify_login_once,
)
from spartan.errors import InvalidArgument, Unauthenticated

SECRET = b"s" * 32
DEPLOYMENT = "deployment-a"
ALICE = Identity.generate("alice")
BOB = Identity.generate("bob")


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- session tokens ---------------------------------------------------------------------------

def test_token_round_trip_on_another_replica() -> None:
    token, expires_at_us = TokenIssuer(SECRET, 60, deployment_id=DEPLOYMENT).issue("alice", ALICE.identity_key)
    claims = TokenIssuer(SECRET, 60, deployment_id=DEPLOYMENT).verify(token)  # a replica that never saw the login
    assert claims.user == "alice"
    assert claims.identity_key_fingerprint == fingerprint(ALICE.identity_key)
    assert claims.expires_at_us == expires_at_us
    assert claims.matches_key(ALICE.identity_key) and not claims.matches_key(BOB.identity_key)
    assert "=" not in token and "+" not in token and "/" not in token


def test_expired_token_is_rejected() -> None:
    clock = FakeClock()
    issuer = TokenIssuer(SECRET, 60, deployment_id=DEPLOYMENT, clock=clock)
    token, _ = issuer.issue("alice", ALICE.identity_key)
    clock.now += 59.9
    issuer.verify(token)
    clock.now += 0.2
    with pytest.raises(Unauthenticated, match="session token expired 0 s ago; log in again"):
        issuer.verify(token)


def test_token_from_another_secret_is_rejected() -> None:
    token, _ = TokenIssuer(b"x" * 32, 60, deployment_id=DEPLOYMENT).issue("alice", ALICE.identity_key)
    with pytest.raises(Unauthenticated, match="signature is invalid"):
        TokenIssuer(SECRET, 60, deployment_id=DEPLOYMENT).verify(token)


def _reencode(token: str, edit: bytes) -> str:
    payload, mac = token.split(".")
    return base64.urlsafe_b64encode(edit).rstrip(b"=").decode() + "." + mac


def _payload(token: str) -> bytes:
    text = token.split(".")[0]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_token_cannot_be_rewritten_for_another_user_or_longer_life() -> None:
    issuer = TokenIssuer(SECRET, 60, deployment_id=DEPLOYMENT)
    token, _ = issuer.issue("alice", ALICE.identity_key)
    payload = _payload(token)
    as_bob = payload[:-len(b"alice")] + b"bob"
    with pytest.raises(Unauthenticated, match="signature is invalid"):
        issuer.verify(_reencode(token, as_bob))
    longer = payload[:1] + (int.from_bytes(payload[1:9], "big") + 10**9).to_bytes(8, "big") + payload[9:]
    with pytest.raises(Unauthenticated, match="signature is invalid"):
        issuer.verify(_reencode(token, longer))
    # A token for bob is a token for bob: the claims say so and a gateway compares them.
    bob_token, _ = issuer.issue("bob", BOB.identity_key)
    assert issuer.verify(bob_token).user == "bob"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "!!!.???", "AQ.AQ", ".", "a" * 40 + "."])
def test_malformed_tokens_are_rejected(token: str) -> None:
    with pytest.raises(Unauthenticated, match="malformed"):
        TokenIssuer(SECRET, 60, deployment_id=DEPLOYMENT).verify(token)


def test_weak_secrets_and_lifetimes_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="at least 16 bytes"):
        TokenIssuer(b"short", 60, deployment_id=DEPLOYMENT)
    with pytest.raises(InvalidArgument, match="positive"):
        TokenIssuer(SECRET, 0, deployment_id=DEPLOYMENT)
    TokenIssuer("a text secret of enough length", 60, deployment_id=DEPLOYMENT)


# --- login challenges -------------------------------------------------------------------------

def _login(identity: Identity, challenges: ChallengeIssuer) -> tuple[bytes, bytes]:
    nonce, _ = challenges.issue(identity.user)
    return nonce, identity.sign(login_transcript(DEPLOYMENT, identity.user, nonce, identity.identity_key))


def test_login_verifies_on_any_replica() -> None:
    nonce, signature = _login(ALICE, ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT))
    other_replica = ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT)
    verify_login(other_replica, user="alice", nonce=nonce, signature=signature,
                 identity_key=ALICE.identity_key, registered_key=ALICE.identity_key)
    verify_login(other_replica, user="alice", nonce=nonce, signature=signature,
                 identity_key=ALICE.identity_key)  # first registration


def test_signature_over_the_wrong_challenge_is_rejected() -> None:
    challenges = ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT)
    old_nonce, old_signature = _login(ALICE, challenges)
    new_nonce, _ = challenges.issue("alice")
    with pytest.raises(Unauthenticated, match="wrong challenge, wrong key"):
        verify_login(challenges, user="alice", nonce=new_nonce, signature=old_signature,
                     identity_key=ALICE.identity_key)
    assert old_nonce != new_nonce


def test_signature_by_another_key_is_rejected() -> None:
    challenges = ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT)
    nonce, _ = challenges.issue("alice")
    signature = BOB.sign(login_transcript(DEPLOYMENT, "alice", nonce, ALICE.identity_key))
    with pytest.raises(Unauthenticated, match="does not verify"):
        verify_login(challenges, user="alice", nonce=nonce, signature=signature,
                     identity_key=ALICE.identity_key)


def test_key_other_than_the_registered_one_is_rejected() -> None:
    """Bob signs correctly with his own key, but alice's registered key is different."""
    challenges = ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT)
    nonce, _ = challenges.issue("alice")
    signature = BOB.sign(login_transcript(DEPLOYMENT, "alice", nonce, BOB.identity_key))
    with pytest.raises(Unauthenticated, match="not the key registered for alice"):
        verify_login(challenges, user="alice", nonce=nonce, signature=signature,
                     identity_key=BOB.identity_key, registered_key=ALICE.identity_key)


def test_expired_nonce_is_rejected() -> None:
    clock = FakeClock()
    challenges = ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT, clock=clock)
    nonce, signature = _login(ALICE, challenges)
    clock.now += 30
    with pytest.raises(Unauthenticated, match="challenge expired"):
        verify_login(challenges, user="alice", nonce=nonce, signature=signature,
                     identity_key=ALICE.identity_key)


def test_nonce_from_another_secret_or_for_another_user_is_rejected() -> None:
    nonce, signature = _login(ALICE, ChallengeIssuer(b"y" * 32, 30, deployment_id=DEPLOYMENT))
    with pytest.raises(Unauthenticated, match="not issued by this deployment for alice"):
        verify_login(ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT), user="alice", nonce=nonce,
                     signature=signature,
                     identity_key=ALICE.identity_key)
    challenges = ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT)
    bobs_nonce, _ = challenges.issue("bob")
    signature = ALICE.sign(login_transcript(DEPLOYMENT, "alice", bobs_nonce, ALICE.identity_key))
    with pytest.raises(Unauthenticated, match="not issued by this deployment for alice"):
        verify_login(challenges, user="alice", nonce=bobs_nonce, signature=signature,
                     identity_key=ALICE.identity_key)


def test_tampered_nonce_expiry_is_rejected() -> None:
    challenges = ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT)
    nonce, _ = challenges.issue("alice")
    later = nonce[:1] + (int.from_bytes(nonce[1:9], "big") + 10**9).to_bytes(8, "big") + nonce[9:]
    with pytest.raises(Unauthenticated, match="not issued by this deployment"):
        challenges.check("alice", later)


@pytest.mark.parametrize("nonce", [b"", b"\x01" * 40, b"\x02" + b"\x00" * 40, b"\x01" * 41])
def test_malformed_nonce_is_rejected(nonce: bytes) -> None:
    with pytest.raises(Unauthenticated, match="malformed|not issued"):
        ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT).check("alice", nonce)


def test_nonces_and_tokens_are_not_interchangeable() -> None:
    nonce, _ = ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT).issue("alice")
    with pytest.raises(Unauthenticated):
        TokenIssuer(SECRET, 60, deployment_id=DEPLOYMENT).verify(base64.urlsafe_b64encode(nonce).decode())
    token, _ = TokenIssuer(SECRET, 60, deployment_id=DEPLOYMENT).issue("alice", ALICE.identity_key)
    with pytest.raises(Unauthenticated):
        ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT).check("alice", token.encode())


async def test_replay_guard_accepts_each_nonce_once(redis: Redis) -> None:
    challenges = ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT)
    guard = redis_seen_nonce(redis)
    nonce, signature = _login(ALICE, challenges)
    arguments = {"user": "alice", "nonce": nonce, "signature": signature,
                 "identity_key": ALICE.identity_key, "seen_nonce": guard}
    await verify_login_once(challenges, **arguments)
    with pytest.raises(Unauthenticated, match="already used"):
        await verify_login_once(challenges, **arguments)
    other_nonce, other_signature = _login(ALICE, challenges)
    await verify_login_once(challenges, **{**arguments, "nonce": other_nonce,
                                           "signature": other_signature})


async def test_replay_guard_is_asked_before_the_signature_check() -> None:
    """Cheap before expensive: a made-up nonce never reaches the guard, a used one never reaches the signature."""
    asked: list[tuple[bytes, float]] = []

    async def seen_nonce(nonce: bytes, ttl_seconds: float) -> bool:
        seen = any(earlier == nonce for earlier, _ in asked)
        asked.append((nonce, ttl_seconds))
        return seen

    challenges = ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT)
    with pytest.raises(Unauthenticated, match="malformed"):
        await verify_login_once(challenges, user="alice", nonce=b"made up", signature=b"\x00" * 64,
                                identity_key=ALICE.identity_key, seen_nonce=seen_nonce)
    assert asked == []
    nonce, signature = _login(ALICE, challenges)
    await verify_login_once(challenges, user="alice", nonce=nonce, signature=signature,
                            identity_key=ALICE.identity_key, seen_nonce=seen_nonce)
    assert asked[0][0] == nonce and 0 < asked[0][1] <= 30
    with pytest.raises(Unauthenticated, match="already used"):  # refused before the bad signature is looked at
        await verify_login_once(challenges, user="alice", nonce=nonce, signature=b"\x00" * 64,
                                identity_key=ALICE.identity_key, seen_nonce=seen_nonce)


async def test_redis_guard_accepts_a_nonce_once_across_replicas(redis: Redis) -> None:
    replica_a = ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT)
    replica_b = ChallengeIssuer(SECRET, 30, deployment_id=DEPLOYMENT)
    nonce, signature = _login(ALICE, replica_a)
    arguments = {"user": "alice", "nonce": nonce, "signature": signature,
                 "identity_key": ALICE.identity_key}
    await verify_login_once(replica_a, **arguments, seen_nonce=redis_seen_nonce(redis))
    with pytest.raises(Unauthenticated, match="already used"):
        await verify_login_once(replica_b, **arguments, seen_nonce=redis_seen_nonce(redis))
    ttl_ms = await redis.pttl("sp:login-nonce:" + nonce.hex())
    assert 0 < ttl_ms <= 30_000


# --- deployments ------------------------------------------------------------------------------
# Two deployments that share a token secret by mistake: A's logins and tokens are still refused by B.

def test_a_token_of_another_deployment_is_refused_even_with_the_same_secret() -> None:
    token, _ = TokenIssuer(SECRET, 60, deployment_id="deployment-a").issue("alice", ALICE.identity_key)
    with pytest.raises(Unauthenticated) as refused:
        TokenIssuer(SECRET, 60, deployment_id="deployment-b").verify(token)
    assert str(refused.value) == "session token was issued by another Spartan deployment; log in again here"
    claims = TokenIssuer(SECRET, 60, deployment_id="deployment-a").verify(token)
    assert (claims.user, claims.deployment_id) == ("alice", "deployment-a")


def test_a_token_cannot_be_relabelled_for_another_deployment() -> None:
    issuer = TokenIssuer(SECRET, 60, deployment_id="deployment-b")
    token, _ = TokenIssuer(SECRET, 60, deployment_id="deployment-a").issue("alice", ALICE.identity_key)
    payload = _payload(token)
    relabelled = payload.replace(b"deployment-a", b"deployment-b")
    assert relabelled != payload
    with pytest.raises(Unauthenticated, match="signature is invalid"):
        issuer.verify(_reencode(token, relabelled))


def test_a_login_signed_at_one_deployment_is_refused_by_another() -> None:
    at_a = ChallengeIssuer(SECRET, 30, deployment_id="deployment-a")
    at_b = ChallengeIssuer(SECRET, 30, deployment_id="deployment-b")
    # A captured login of A (its nonce and signature) presented at B: the nonce is A's.
    nonce, _ = at_a.issue("alice")
    signature = ALICE.sign(login_transcript("deployment-a", "alice", nonce, ALICE.identity_key))
    with pytest.raises(Unauthenticated) as refused:
        verify_login(at_b, user="alice", nonce=nonce, signature=signature, identity_key=ALICE.identity_key)
    assert str(refused.value) == "login challenge was not issued by this deployment for alice; request a new one"
    # B's own nonce, signed for deployment A (a client told another deployment's id): the signature fails.
    nonce_b, _ = at_b.issue("alice")
    signature = ALICE.sign(login_transcript("deployment-a", "alice", nonce_b, ALICE.identity_key))
    with pytest.raises(Unauthenticated) as refused:
        verify_login(at_b, user="alice", nonce=nonce_b, signature=signature, identity_key=ALICE.identity_key)
    assert str(refused.value) == (
        "login signature of alice does not verify: wrong challenge, wrong key or another deployment"
    )
    # The normal flow: signed for B, accepted by B.
    signature = ALICE.sign(login_transcript("deployment-b", "alice", nonce_b, ALICE.identity_key))
    verify_login(at_b, user="alice", nonce=nonce_b, signature=signature, identity_key=ALICE.identity_key)


@pytest.mark.parametrize("deployment_id", ["", "x" * 65])
def test_an_empty_or_overlong_deployment_id_is_refused(deployment_id: str) -> None:
    with pytest.raises(InvalidArgument, match="deployment id must be 1 to 64 bytes"):
        TokenIssuer(SECRET, 60, deployment_id=deployment_id)
    with pytest.raises(InvalidArgument, match="deployment id must be 1 to 64 bytes"):
        ChallengeIssuer(SECRET, 30, deployment_id=deployment_id)


# Known answers: the bytes a login signs, derived here and checked field by field; the signature
# over them checked with a second Ed25519 implementation (the `cryptography` package).
KAT_NONCE = bytes(range(41))
KAT_KEY = bytes.fromhex("11" * 32)
KAT_TRANSCRIPT = (
    "0000001b" + b"spartan/v1/deployment-login".hex()
    + "0000000c" + b"deployment-a".hex()
    + "00000005" + b"alice".hex()
    + "00000029" + KAT_NONCE.hex()
    + "00000020" + "11" * 32
)


def test_login_transcript_known_answer() -> None:
    assert login_transcript("deployment-a", "alice", KAT_NONCE, KAT_KEY).hex() == KAT_TRANSCRIPT


def test_login_signature_verifies_with_a_second_implementation() -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    alice = Identity("alice", bytes(range(32)), bytes(range(32, 64)))
    transcript = login_transcript("deployment-a", "alice", KAT_NONCE, alice.identity_key)
    signature = alice.sign(transcript)
    public = Ed25519PublicKey.from_public_bytes(alice.identity_key)
    public.verify(signature, transcript)
    with pytest.raises(InvalidSignature):
        public.verify(signature, login_transcript("deployment-b", "alice", KAT_NONCE, alice.identity_key))


def test_token_payload_layout_known_answer() -> None:
    clock = FakeClock(1_700_000_000.0)
    token, expires_at_us = TokenIssuer(SECRET, 60, deployment_id="deployment-a", clock=clock).issue(
        "alice", ALICE.identity_key)
    assert expires_at_us == 1_700_000_060_000_000
    assert _payload(token) == (b"\x02" + expires_at_us.to_bytes(8, "big")
                               + bytes.fromhex(fingerprint(ALICE.identity_key))
                               + bytes((12,)) + b"deployment-a" + b"alice")
