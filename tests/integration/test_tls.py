"""TLS on every hop: clients to gateways, gateways to presence and history, the operator command.

Certificates come from a throw-away CA made by the test (`tests/support/certs.py`).
Every service of the stack serves TLS with a certificate for `localhost` and
`127.0.0.1` and verifies its peers with the CA; clients that trust the CA chat,
clients that do not (plaintext, another CA, the system roots) fail with a clear error.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from spartan.client.headless import HeadlessClient
from spartan.config import TlsConfig
from spartan.rpc.credentials import (
    explain_connect_error,
    open_channel,
    server_credentials,
)
from spartan.v1 import pb, rpc
from tests.support.certs import ServerCert, make_ca, tls_settings
from tests.support.stack import ROOT, Stack


@pytest.fixture
def certs(tmp_path: Path) -> ServerCert:
    return make_ca(tmp_path / "ca").issue()


def without_tls(env: dict[str, str]) -> dict[str, str]:
    """The stack's environment minus its TLS settings: what a user's shell has."""
    return {key: value for key, value in env.items() if not key.startswith("SPARTAN_TLS__")}


def cli(stack: Stack, user: str, key_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "client.py"), user, "--server", stack.address(1),
                           "--key-dir", str(key_dir), *extra], input="/quit\n", capture_output=True, text=True,
                          env=without_tls(stack.env), cwd=key_dir.parent, timeout=60)


async def expect_unavailable(channel: grpc.aio.Channel) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc.SpartanStub(channel).GetChallenge(pb.ChallengeRequest(user="alice"), timeout=5)
    await channel.close()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    return caught.value.details() or ""


async def test_every_hop_uses_tls(stack_factory, certs: ServerCert, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=2, settings=tls_settings(certs))
    for name in stack.children:
        # The port accepts connections a moment before the service logs that it listens: wait for the line.
        said = f"{name.split('-')[0]} listening on"
        deadline = time.monotonic() + 10
        while said not in stack.log(name) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert said in stack.log(name) and "(TLS)" in stack.log(name)
    trusted = TlsConfig(ca=str(certs.ca))
    keys = str(tmp_path / "keys")
    alice = await HeadlessClient("alice", [stack.address(1)], keys, tls=trusted).start()
    bob = await HeadlessClient("bob", [stack.address(2)], keys, tls=trusted).start()
    try:
        await alice.send("bob", "over TLS all the way")
        await bob.wait_for(1)
        await bob.send("alice", "and back")
        await alice.wait_for(1)
        assert bob.texts() == ["over TLS all the way"] and alice.texts() == ["and back"]
        history = await alice.call("GetHistory", pb.HistoryRequest(peer="bob"))  # gateway -> history over TLS
        assert len(history.messages) == 2
    finally:
        await alice.close()
        await bob.close()

    # The internal services accept TLS only, so the gateways above reached them over TLS.
    for port in (stack.presence_port, stack.history_port):
        plain = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
        await plain.close()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        secure = open_channel(f"127.0.0.1:{port}", trusted)
        reply = await health_pb2_grpc.HealthStub(secure).Check(health_pb2.HealthCheckRequest(), timeout=5)
        await secure.close()
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    # Clients that do not trust the CA cannot connect, and are told why.
    plaintext = await expect_unavailable(open_channel(stack.address(1), TlsConfig()))
    assert "if the server uses TLS" in explain_connect_error(plaintext, TlsConfig())
    other_ca = make_ca(tmp_path / "other", "Another CA")
    untrusted = await expect_unavailable(open_channel(stack.address(1), TlsConfig(ca=str(other_ca.path))))
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted
    system_roots = await expect_unavailable(grpc.aio.secure_channel(stack.address(1), grpc.ssl_channel_credentials()))
    assert "CERTIFICATE_VERIFY_FAILED" in system_roots

    # The CLI: --ca works; without it, or with another CA, it exits 1 with a hint.
    key_dir = tmp_path / "keys"
    ok = cli(stack, "alice", key_dir, "--ca", str(certs.ca))
    assert ok.returncode == 0, ok.stderr
    assert "[Spartan] Connected to Spartan Server at port" in ok.stdout
    no_ca = cli(stack, "alice", key_dir)
    assert no_ca.returncode == 1
    assert "Could not connect to Spartan Server" in no_ca.stderr and "pass its CA certificate" in no_ca.stderr
    wrong_ca = cli(stack, "alice", key_dir, "--ca", str(other_ca.path))
    assert wrong_ca.returncode == 1 and "not signed by a trusted CA" in wrong_ca.stderr
    missing = cli(stack, "alice", key_dir, "--ca", str(tmp_path / "nowhere.pem"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "Traceback" not in no_ca.stderr + wrong_ca.stderr + missing.stderr

    # The operator command reads the same TLS settings as the services.
    shown = subprocess.run([sys.executable, "-m", "spartan.admin", "show-keys", "bob"], capture_output=True,
                           text=True, env=stack.env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    plain_admin = subprocess.run([sys.executable, "-m", "spartan.admin", "--timeout", "2", "show-keys", "bob"],
                                 capture_output=True, text=True, env=without_tls(stack.env), timeout=60)
    assert plain_admin.returncode == 1 and "cannot reach the presence service" in plain_admin.stderr


async def test_server_name_override_checks_the_name_in_the_certificate(tmp_path: Path) -> None:
    named = make_ca(tmp_path / "ca").issue("gateway", names=("gateway.spartan",))
    server = grpc.aio.server()
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(
        TlsConfig(cert=str(named.cert), key=str(named.key), ca=str(named.ca))))
    await server.start()
    tls = TlsConfig(ca=str(named.ca))
    try:
        wrong_name = open_channel(f"127.0.0.1:{port}", tls)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(wrong_name).Check(health_pb2.HealthCheckRequest(), timeout=5)
        await wrong_name.close()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "not for this host name" in explain_connect_error(caught.value.details() or "", tls)

        right_name = open_channel(f"127.0.0.1:{port}", tls, server_name="gateway.spartan")
        reply = await health_pb2_grpc.HealthStub(right_name).Check(health_pb2.HealthCheckRequest(), timeout=5)
        await right_name.close()
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)
