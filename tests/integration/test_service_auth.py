"""Presence and history authenticate their callers: forged internal calls are refused.

The attacker is a process that reaches the internal ports directly (as any process on
the host, or any pod in the cluster, could) and tries what a compromised neighbour
would: reset bob's keys, read alice and bob's conversation, add itself to a group as
alice, and append a message "from alice". Without the service secret every call is
UNAUTHENTICATED; a real credential copied from one call does not authorize another
method, another acting user or a later time. The gateways, which hold the secret, keep
working, and health checks stay open for load balancers and probes.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spartan.naming import dm_conversation
from spartan.rpc.service_auth import CALLER_HEADER, USER_HEADER, sign, signing_interceptors
from spartan.v1 import pb, rpc
from tests.support.stack import ROOT

PRESENCE = "/spartan.v1.Presence/"
HISTORY = "/spartan.v1.History/"


async def refused(call: grpc.aio.UnaryUnaryCall) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value
    return caught.value


async def test_forged_internal_calls_are_refused(stack_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    alice = await client_factory("alice", stack.addresses)
    bob = await client_factory("bob", stack.addresses)
    await alice.send("bob", "for bob only")
    await bob.wait_for(1)
    presence_address = stack.env["SPARTAN_SERVICES__PRESENCE"]
    history_address = stack.env["SPARTAN_SERVICES__HISTORY"]
    conversation = dm_conversation("alice", "bob")

    async with grpc.aio.insecure_channel(presence_address) as p, grpc.aio.insecure_channel(history_address) as h:
        presence, history = rpc.PresenceStub(p), rpc.HistoryStub(h)
        # No credential at all.
        error = await refused(presence.ResetKeys(pb.UserRef(user="bob"), timeout=5))
        assert "service secret" in (error.details() or "")
        await refused(presence.AddMember(pb.GroupRequest(group="group2", user="eve"),
                                         metadata=((USER_HEADER, "foo"),), timeout=5))
        await refused(history.Read(pb.HistoryRequest(conversation=conversation, limit=10), timeout=5))
        await refused(history.Read(pb.HistoryRequest(conversation=conversation, after_offset=1), timeout=5))
        await refused(presence.IssueEnrolmentCode(pb.UserRef(user="qux"), timeout=5))

        # Signed with a secret of the attacker's own.
        wrong = sign(secrets.token_hex(32), PRESENCE + "ResetKeys")
        error = await refused(presence.ResetKeys(pb.UserRef(user="bob"), metadata=((CALLER_HEADER, wrong),), timeout=5))
        assert "does not match" in (error.details() or "")

        # A genuine credential, replayed elsewhere: another method, another acting user, too late.
        secret = stack.env["SPARTAN_AUTH__SERVICE_SECRET"]
        for_read = sign(secret, HISTORY + "Read")
        await refused(presence.GetKeys(pb.UserRef(user="bob"), metadata=((CALLER_HEADER, for_read),), timeout=5))
        as_foo = sign(secret, PRESENCE + "AddMember", "foo")
        await refused(presence.AddMember(pb.GroupRequest(group="group2", user="eve"),
                                         metadata=((CALLER_HEADER, as_foo), (USER_HEADER, "bar")), timeout=5))
        stale = sign(secret, PRESENCE + "ResetKeys", now=time.time() - 3600)
        error = await refused(presence.ResetKeys(pb.UserRef(user="bob"), metadata=((CALLER_HEADER, stale),),
                                                 timeout=5))
        assert "clock" in (error.details() or "")

        # Health checking needs no credential (load balancers, Kubernetes probes).
        for channel in (p, h):
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    # Nothing the attacker tried happened: bob's keys are his, the conversation holds only alice's message.
    async with grpc.aio.insecure_channel(presence_address, interceptors=signing_interceptors(secret)) as p, \
            grpc.aio.insecure_channel(history_address, interceptors=signing_interceptors(secret)) as h:
        keys = await rpc.PresenceStub(p).GetKeys(pb.UserRef(user="bob"), timeout=5)
        assert keys.identity_key == bob.conn.identity.identity_key
        group = await rpc.PresenceStub(p).GetGroup(pb.GroupRequest(group="group2"), timeout=5)
        assert "eve" not in group.members
        stored = await rpc.HistoryStub(h).Read(pb.HistoryRequest(conversation=conversation, limit=10), timeout=5)
        assert [m.sender for m in stored.messages] == ["alice"] and stored.messages[0].body != b"forged"

    # The gateway signs its calls: the users it serves notice nothing.
    await bob.send("alice", "still fine")
    assert [r.text for r in await alice.wait_for(1)] == ["still fine"]


@pytest.mark.parametrize("module", ["services.presence.main", "services.history.main", "services.gateway.main"])
def test_services_refuse_to_start_without_the_secret(module: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARTAN_")}
    env |= {"PYTHONPATH": str(ROOT), "SPARTAN_REDIS__URL": "redis://127.0.0.1:9/0",
            "SPARTAN_AUTH__TOKEN_SECRET": secrets.token_hex(32)}
    done = subprocess.run([sys.executable, "-m", module, "--config", str(ROOT / "config.yaml")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode != 0
    assert "auth.service_secret is not set" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
