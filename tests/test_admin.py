"""`spartan-admin` against a real stack: key reset and display, secrets, errors and exit codes."""
from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
import uuid

import grpc
import pytest

from services.gateway.auth import KEY_CHECK_TTL_SECONDS
from spartan.client.connection import Connection
from spartan.config import TlsConfig
from spartan.crypto.keystore import load_or_create
from spartan.errors import SpartanError
from spartan.v1 import pb
from tests.support.ports import free_port
from tests.support.stack import ROOT

# Slack over the key-check cache's lifetime: one 0.1 s polling step and one ListUsers call.
RESET_BOUND_SECONDS = KEY_CHECK_TTL_SECONDS + 1.0


def admin(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spartan.admin", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)


def test_help_lists_the_commands() -> None:
    done = admin("--help")
    assert done.returncode == 0
    for command in ("reset-keys", "show-keys", "gen-secret"):
        assert command in done.stdout
    assert admin("reset-keys", "--help").returncode == 0
    assert admin().returncode == 2  # a command is required


def test_gen_secret_prints_fresh_random_hex() -> None:
    first, second = admin("gen-secret"), admin("gen-secret")
    assert first.returncode == second.returncode == 0
    secret = first.stdout.strip()
    assert len(secret) == 64 and int(secret, 16) >= 0
    assert secret != second.stdout.strip()


def test_unreachable_presence_is_a_clear_failure() -> None:
    with_secret = {**os.environ, "SPARTAN_AUTH__SERVICE_SECRET": secrets.token_hex(32)}  # signs its calls
    done = admin("--presence", f"127.0.0.1:{free_port()}", "--timeout", "1", "show-keys", "bob", env=with_secret)
    assert done.returncode == 1
    assert "cannot reach the presence service" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_config_exits_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "config.yaml"
    bad.write_text("users: []\n")
    done = admin("--config", str(bad), "show-keys", "bob")
    assert done.returncode == 2 and "config error" in done.stderr


async def test_reset_keys_ends_sessions_and_lets_a_new_key_register(stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    env = stack.env
    old_identity, _ = load_or_create("bob", tmp_path / "old")
    conn = Connection(stack.addresses, old_identity, TlsConfig())
    await conn.open()
    try:
        shown = admin("show-keys", "bob", env=env)
        assert shown.returncode == 0, shown.stderr
        assert old_identity.fingerprint()[:4] in shown.stdout
        assert old_identity.fingerprint() == shown.stdout.split("fingerprint")[1].replace(" ", "").strip()

        unknown = admin("show-keys", "mallory", env=env)
        assert unknown.returncode == 1 and "mallory" in unknown.stderr
        never = admin("show-keys", "qux", env=env)
        assert never.returncode == 1 and "has not registered keys" in never.stderr

        reset = admin("reset-keys", "bob", env=env)
        reset_done = time.monotonic()  # the reset was written before the command exited
        assert reset.returncode == 0, reset.stderr

        # docs/SECURITY.md: the old session ends within KEY_CHECK_TTL_SECONDS on every gateway.
        assert conn.stub is not None
        code = None
        while code is None:
            try:
                await conn.stub.ListUsers(pb.ListUsersRequest(), metadata=conn.metadata, timeout=5)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
            else:
                assert time.monotonic() - reset_done <= RESET_BOUND_SECONDS, "the old session still works"
                await asyncio.sleep(0.1)
        took = time.monotonic() - reset_done
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert took <= RESET_BOUND_SECONDS, f"the old session ended {took:.2f}s after the reset"
        print(f"key reset: old session ended {took:.2f}s after the reset")

        assert "Reset the keys of bob" in reset.stdout
        enrolment_code = reset.stdout.split("--enrolment-code ")[1].strip()  # re-registration needs it
        assert admin("reset-keys", "bob", env=env).returncode == 1  # nothing left to reset
        assert admin("show-keys", "bob", env=env).returncode == 1

        # A new key pair registers on the next login and its session works at once.
        new_identity, _ = load_or_create("bob", tmp_path / "new")
        fresh = Connection(stack.addresses, new_identity, TlsConfig(), enrolment_code)
        await fresh.open()
        try:
            assert fresh.stub is not None
            await fresh.stub.ListUsers(pb.ListUsersRequest(), metadata=fresh.metadata, timeout=5)
        finally:
            await fresh.close()
        shown = admin("show-keys", "bob", env=env)
        assert new_identity.fingerprint()[:4] in shown.stdout
        with pytest.raises(SpartanError) as refused:
            await conn.login()  # the old key is no longer the registered one
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await conn.close()


async def test_an_open_stream_of_a_reset_key_ends_within_the_key_check_bound(stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/SECURITY.md: an open ReceiveMsg stream of the old key ends with its next delivery once
    KEY_CHECK_TTL_SECONDS have passed since its last check; the new key's registration is broadcast
    to every stream, so a stream open for a while ends right away, on another gateway too (within
    the bound + the same 1 s slack)."""
    stack = stack_factory(gateways=2)
    old_identity, _ = load_or_create("bob", tmp_path / "old")
    conn = Connection([stack.address(2)], old_identity, TlsConfig())
    await conn.open()
    try:
        assert conn.stub is not None
        stream = conn.stub.ReceiveMsg(pb.Message(sender="bob"), metadata=conn.metadata)
        await stream.initial_metadata()  # subscribed: the stream is open

        async def read_to_the_end() -> grpc.StatusCode:
            try:
                async for _ in stream:
                    pass
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        reader = asyncio.create_task(read_to_the_end())
        await asyncio.sleep(KEY_CHECK_TTL_SECONDS)  # open for a while: its last check is older than the bound
        assert not reader.done()
        reset = admin("reset-keys", "bob", env=stack.env)
        reset_done = time.monotonic()
        assert reset.returncode == 0, reset.stderr
        new_identity, _ = load_or_create("bob", tmp_path / "new")
        fresh = Connection([stack.address(1)], new_identity, TlsConfig(),
                           reset.stdout.split("--enrolment-code ")[1].strip())
        await fresh.open()  # registers the new key on the other gateway
        try:
            code = await asyncio.wait_for(reader, RESET_BOUND_SECONDS + 10)  # a wait; the bound is below
            took = time.monotonic() - reset_done
        finally:
            await fresh.close()
        assert code == grpc.StatusCode.UNAUTHENTICATED, code
        assert took <= RESET_BOUND_SECONDS, f"the old stream ended {took:.2f}s after the reset"
        print(f"key reset: old stream ended {took:.2f}s after the reset")
    finally:
        await conn.close()


async def test_a_stream_opened_just_before_a_reset_ends_with_its_next_delivery_and_carries_nothing(
        stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/SECURITY.md: a stream of the old key opened less than KEY_CHECK_TTL_SECONDS before the new key
    registers is not ended by that broadcast; it stays open, idle, and the first delivery after the bound
    ends it with UNAUTHENTICATED instead of being handed over."""
    stack = stack_factory(gateways=1)
    old_identity, _ = load_or_create("bob", tmp_path / "old")
    conn = Connection([stack.address(1)], old_identity, TlsConfig())
    await conn.open()
    alice_identity, _ = load_or_create("alice", tmp_path / "alice")
    alice = Connection([stack.address(1)], alice_identity, TlsConfig())
    await alice.open()
    try:
        assert conn.stub is not None and alice.stub is not None
        stream = conn.stub.ReceiveMsg(pb.Message(sender="bob"), metadata=conn.metadata)
        chats: list[pb.Message] = []

        async def read_to_the_end() -> grpc.StatusCode:
            try:
                async for message in stream:
                    if message.kind == pb.CHAT:
                        chats.append(message)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        reader = asyncio.create_task(read_to_the_end())
        await stream.initial_metadata()
        reset = admin("reset-keys", "bob", env=stack.env)
        assert reset.returncode == 0, reset.stderr
        new_identity, _ = load_or_create("bob", tmp_path / "new")
        fresh = Connection([stack.address(1)], new_identity, TlsConfig(),
                           reset.stdout.split("--enrolment-code ")[1].strip())
        await fresh.open()  # the broadcast of the new key reaches a stream checked moments ago
        try:
            await asyncio.sleep(KEY_CHECK_TTL_SECONDS + 0.5)
            assert not reader.done(), "documented: the stream stays open until a delivery"
            await alice.stub.SendMsg(pb.Message(id=uuid.uuid4().hex, kind=pb.CHAT, recipient="bob", body=b"x"),
                                     metadata=alice.metadata, timeout=10)
            code = await asyncio.wait_for(reader, 10)
        finally:
            await fresh.close()
        assert code == grpc.StatusCode.UNAUTHENTICATED, code
        assert chats == [], "the old key's stream was handed a message after the reset"
    finally:
        await alice.close()
        await conn.close()
