"""Key-based identity against an attacker on the network: impostors, stolen, forged and expired tokens,
replayed logins; session checks keep working from the last known key while presence is down.

Real processes: presence, history and gateways against a private redis-server; the attacker
talks to the gateways with a raw gRPC channel.
"""
from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from services.gateway.auth import KEY_CHECK_TTL_SECONDS
from spartan.client.connection import Connection
from spartan.config import TlsConfig
from spartan.crypto.keystore import load_or_create
from spartan.crypto.tokens import TokenIssuer, login_transcript
from spartan.v1 import pb, rpc
from tests.support.refusals import refusal
from tests.support.stack import Stack


async def stream_error(stub: rpc.SpartanStub, sender: str, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.aio.AioRpcError:
    call = stub.ReceiveMsg(pb.Message(sender=sender), metadata=metadata, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    return caught.value


@pytest.fixture
async def raw_channel(stack_factory) -> AsyncIterator[tuple[Stack, grpc.aio.Channel]]:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=2)
    channel = grpc.aio.insecure_channel(stack.address(1))
    yield stack, channel
    await channel.close()


async def test_impostors_and_bad_tokens_are_refused(raw_channel, client_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack, channel = raw_channel
    alice = await client_factory("alice", stack.addresses)
    await client_factory("bob", stack.addresses)
    stub = rpc.SpartanStub(channel)

    # Same name, another key pair: the login is refused.
    impostor = Connection(stack.addresses, load_or_create("alice", tmp_path / "impostor")[0], TlsConfig())
    refused = await refusal(impostor.open())
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "not the key registered for alice" in (refused.details() or "")
    await impostor.close()

    # Without a token nothing works: stream, send, pending requests, history.
    for metadata in ((), (("authorization", "Bearer not-a-token"),)):
        assert (await stream_error(stub, "alice", metadata)).code() == grpc.StatusCode.UNAUTHENTICATED
        send = stub.SendMsg(pb.Message(id=uuid.uuid4().hex, kind=pb.CHAT, recipient="bob", body=b"\x01" * 40),
                            metadata=metadata, timeout=10)
        for call in (send, stub.PendingRequests(pb.PendingRequestsRequest(), metadata=metadata, timeout=10),
                     stub.GetHistory(pb.HistoryRequest(peer="bob"), metadata=metadata, timeout=10),
                     stub.GetKeys(pb.GetKeysRequest(user="bob"), metadata=metadata, timeout=10)):
            assert (await refusal(call)).code() == grpc.StatusCode.UNAUTHENTICATED

    # Alice's own token cannot open bob's stream.
    denied = await stream_error(stub, "bob", alice.conn.metadata)
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED

    # Forged tokens: alice's token relabelled as bob's, one minted with another secret, an expired one.
    payload_text, mac_text = alice.conn.token.split(".")
    payload = base64.urlsafe_b64decode(payload_text + "=" * (-len(payload_text) % 4))
    relabelled = base64.urlsafe_b64encode(payload[:-len(b"alice")] + b"bob").rstrip(b"=").decode()
    secret = stack.env["SPARTAN_AUTH__TOKEN_SECRET"]
    identity_key = alice.conn.identity.public_keys().identity_key
    deployment = alice.conn.deployment_id
    foreign, _ = TokenIssuer("another-secret-of-enough-length", 3600, deployment_id=deployment).issue(
        "alice", identity_key)
    expired, _ = TokenIssuer(secret, 60, deployment_id=deployment, clock=lambda: time.time() - 3600).issue(
        "alice", identity_key)
    for token, reason in ((f"{relabelled}.{mac_text}", "signature is invalid"), (foreign, "signature is invalid"),
                          (expired, "expired")):
        metadata = (("authorization", f"Bearer {token}"),)
        error = await refusal(stub.PendingRequests(pb.PendingRequestsRequest(), metadata=metadata, timeout=10))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and reason in (error.details() or "")
        assert (await stream_error(stub, "alice", metadata)).code() == grpc.StatusCode.UNAUTHENTICATED

    # A signed login works once; replaying it (same nonce and signature) fails on every gateway.
    challenge = await stub.GetChallenge(pb.ChallengeRequest(user="alice"), timeout=10)
    keys = alice.conn.identity.public_keys()
    login = pb.LoginRequest(user="alice", nonce=challenge.nonce, keys=keys,
                            signature=alice.conn.identity.sign(login_transcript(
                                challenge.deployment_id, "alice", challenge.nonce, keys.identity_key)))
    session = await stub.Login(login, timeout=10)
    assert session.token
    other = grpc.aio.insecure_channel(stack.address(2))
    try:
        for replay_stub in (stub, rpc.SpartanStub(other)):
            replayed = await refusal(replay_stub.Login(login, timeout=10))
            assert replayed.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "already used" in (replayed.details() or "")
    finally:
        await other.close()
    # The impostor's signature over a fresh challenge with alice's registered key does not verify either.
    challenge = await stub.GetChallenge(pb.ChallengeRequest(user="alice"), timeout=10)
    impostor_identity = load_or_create("alice", tmp_path / "impostor")[0]
    forged = pb.LoginRequest(user="alice", nonce=challenge.nonce, keys=keys,
                             signature=impostor_identity.sign(login_transcript(
                                 challenge.deployment_id, "alice", challenge.nonce, keys.identity_key)))
    assert (await refusal(stub.Login(forged, timeout=10))).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_session_checks_survive_a_presence_outage(stack_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    alice = await client_factory("alice", stack.addresses)
    bob = await client_factory("bob", stack.addresses)
    await alice.send("bob", "before the outage")
    await bob.wait_for(1)
    stack.kill("presence")
    await asyncio.sleep(KEY_CHECK_TTL_SECONDS + 0.5)  # the cached directory answers have expired
    await alice.send("bob", "during the outage")  # checked against the last key seen for alice
    await bob.wait_for(2)
    assert bob.texts() == ["before the outage", "during the outage"]
    # A session of a user this gateway never checked is not let through unchecked.
    secret = stack.env["SPARTAN_AUTH__TOKEN_SECRET"]
    charlie, _ = load_or_create("charlie", stack.workdir / "charlie")
    token, _ = TokenIssuer(secret, 600, deployment_id=alice.conn.deployment_id).issue(
        "charlie", charlie.public_keys().identity_key)
    channel = grpc.aio.insecure_channel(stack.address(1))
    try:
        error = await refusal(rpc.SpartanStub(channel).PendingRequests(
            pb.PendingRequestsRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=10))
    finally:
        await channel.close()
    assert error.code() == grpc.StatusCode.UNAVAILABLE
