"""A login or session token from one deployment is refused by another, even one that shares its token secret.

Two real stacks, each with its own Redis (so each generates its own deployment id) and
the same `auth.token_secret` (the mistake the deployment id guards against). Alice logs
in at deployment A; her token, a login request captured at A, and a login signed for A's
id over B's challenge are each UNAUTHENTICATED at B with one sentence, while A's
gateways all name the same id and accept the normal login.
"""
from __future__ import annotations

import secrets

import grpc
import redis as redis_sync

from spartan.crypto.keystore import load_or_create
from spartan.crypto.tokens import login_transcript
from spartan.deployment import DEPLOYMENT_KEY
from spartan.v1 import pb, rpc
from tests.support.refusals import refusal


async def test_login_and_token_of_one_deployment_are_refused_by_another(stack_factory, client_factory,
                                                                        tmp_path) -> None:  # type: ignore[no-untyped-def]
    shared = {"SPARTAN_AUTH__TOKEN_SECRET": secrets.token_hex(32)}  # shared by mistake
    a = stack_factory(gateways=2, settings=shared)
    b = stack_factory(gateways=1, settings=shared)
    alice = await client_factory("alice", [a.address(1)])  # the normal flow works
    identity = load_or_create("alice", tmp_path / "keys")[0]
    keys = identity.public_keys()
    channels = [grpc.aio.insecure_channel(address) for address in (a.address(1), a.address(2), b.address(1))]
    try:
        at_a1, at_a2, at_b = (rpc.SpartanStub(channel) for channel in channels)
        ids = [(await stub.GetChallenge(pb.ChallengeRequest(user="bob"), timeout=10)).deployment_id
               for stub in (at_a1, at_a2, at_b)]
        assert ids[0] == ids[1] == alice.conn.deployment_id  # every gateway of A names one id
        assert ids[2] != ids[0] and len(ids[2]) == 32  # B generated its own (16 random bytes, hex)
        assert redis_sync.Redis.from_url(a.redis.url).get(DEPLOYMENT_KEY) == ids[0].encode()  # kept in A's Redis

        # Alice's session token of A, presented at B.
        metadata = alice.conn.metadata
        assert await at_a2.PendingRequests(pb.PendingRequestsRequest(), metadata=metadata, timeout=10) is not None
        error = await refusal(at_b.PendingRequests(pb.PendingRequestsRequest(), metadata=metadata, timeout=10))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == "session token was issued by another Spartan deployment; log in again here"

        # A login request captured at A (its challenge, signed for A), presented at B.
        challenge = await at_a1.GetChallenge(pb.ChallengeRequest(user="alice"), timeout=10)
        captured = pb.LoginRequest(user="alice", nonce=challenge.nonce, keys=keys, signature=identity.sign(
            login_transcript(challenge.deployment_id, "alice", challenge.nonce, keys.identity_key)))
        error = await refusal(at_b.Login(captured, timeout=10))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == "login challenge was not issued by this deployment for alice; request a new one"

        # B's own challenge, signed for A's id (what a client fooled about the deployment would sign).
        challenge = await at_b.GetChallenge(pb.ChallengeRequest(user="alice"), timeout=10)
        relayed = pb.LoginRequest(user="alice", nonce=challenge.nonce, keys=keys, signature=identity.sign(
            login_transcript(ids[0], "alice", challenge.nonce, keys.identity_key)))
        error = await refusal(at_b.Login(relayed, timeout=10))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == ("login signature of alice does not verify: "
                                   "wrong challenge, wrong key or another deployment")

        # The request captured at A is still good at A (it was never used there).
        session = await at_a2.Login(captured, timeout=10)
        assert session.token
    finally:
        for channel in channels:
            await channel.close()
