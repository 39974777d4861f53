"""End-to-end encryption and key-based identity, proven against the running system.

Real processes throughout: presence, history and two gateways against a private
redis-server; headless clients and the real CLI (stdin piped) as users. The tests
look where an attacker with access to the servers would look — every Redis key of
every type and every service log — and act as the attacker would: an impostor with
another key pair, stolen/forged/expired tokens, a replayed login, flipped bits in
stored and relayed ciphertext, and a swapped key in the directory. Session checks
against the key directory keep working from the last known key while presence is down.
"""
from __future__ import annotations

import asyncio
import base64
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis as redis_sync

from spartan import naming
from spartan.client.connection import Connection
from spartan.config import TlsConfig
from spartan.crypto.keystore import load_or_create
from spartan.crypto.tokens import TokenIssuer, login_transcript
from services.gateway.auth import KEY_CHECK_TTL_SECONDS
from spartan.delivery_log import conversation_keys as delivery_keys
from spartan.history_store import KEY_PREFIX
from spartan.v1 import pb, rpc
from tests.support.stack import ROOT, Stack, rates

DEBUG_LOGS = {"SPARTAN_LOG__LEVEL": "DEBUG", "SPARTAN_MAX_NUM_MESSAGES_PER_USER": "20"}  # keep all 8 in history
SENDS = rates(send=100)  # each side sends 4 messages within seconds
ENVELOPE_OVERHEAD = 93  # version (1) + nonce (12) + tag (16) + signature (64)
UNDECRYPTABLE = "[Spartan] A message from alice could not be decrypted or verified and was dropped."


# ---------------------------------------------------------------- helpers
class PipedCli:
    """`client.py USER` with stdin and stdout piped; lines are read on a thread so waits can time out."""

    def __init__(self, user: str, stack: Stack, key_dir: Path, gateway: int = 1, *extra: str) -> None:
        command = [sys.executable, str(ROOT / "client.py"), user, "--server", stack.address(gateway),
                   "--key-dir", str(key_dir), *extra]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=stack.env, cwd=key_dir.parent)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def type(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def read_until(self, text: str, timeout: float = 30.0) -> list[str]:
        """Lines up to and including the first that contains `text`."""
        start = len(self.lines)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} within {timeout}s; got {self.lines}") from None
            if line is None:
                raise AssertionError(f"client ended before printing {text!r}; got {self.lines}")
            self.lines.append(line)
            if text in line:
                return self.lines[start:]

    def quit(self) -> int:
        if self.process.poll() is None:
            try:
                self.type("/quit")
            except (BrokenPipeError, OSError):
                pass
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def secret_texts(count: int, who: str) -> list[str]:
    return [f"{who}-says-{i}-aubergine-{uuid.uuid4().hex}-zither" for i in range(count)]


def redis_dump(url: str) -> list[bytes]:
    """Every key and every value of every type in every database, plus each key's DUMP."""
    client = redis_sync.Redis.from_url(url)
    found: list[bytes] = []
    try:
        databases = [int(name[2:]) for name in client.info("keyspace")] or [0]
        for db in databases:
            client.execute_command("SELECT", db)
            for key in client.scan_iter(count=1000):
                found.append(key)
                kind = client.type(key).decode()
                if kind == "string":
                    found.append(client.get(key) or b"")
                elif kind == "list":
                    found.extend(client.lrange(key, 0, -1))
                elif kind == "hash":
                    for field, value in client.hgetall(key).items():
                        found += [field, value]
                elif kind == "set":
                    found.extend(client.smembers(key))
                elif kind == "zset":
                    found.extend(member for member, _ in client.zrange(key, 0, -1, withscores=True))
                elif kind == "stream":
                    for entry_id, fields in client.xrange(key, "-", "+"):
                        found.append(entry_id)
                        for field, value in fields.items():
                            found += [field, value]
                else:
                    raise AssertionError(f"unexpected Redis type {kind} of {key!r}")
                found.append(client.dump(key) or b"")
    finally:
        client.close()
    return found


def stored_messages(url: str, conversation: str) -> list[pb.Message]:
    client = redis_sync.Redis.from_url(url)
    try:
        return [pb.Message.FromString(raw) for raw in client.lrange(f"{KEY_PREFIX}log:{conversation}", 0, -1)]
    finally:
        client.close()


def flip_stored_body(url: str, conversation: str, index: int) -> pb.Message:
    """Flip one bit in the ciphertext of a stored entry, in place, in both stores that keep it
    (the recent-history cache and the delivery log); returns the altered history entry."""
    client = redis_sync.Redis.from_url(url)
    try:
        altered = []
        for log_key in (f"{KEY_PREFIX}log:{conversation}", delivery_keys(conversation)[1]):
            message = pb.Message.FromString(client.lindex(log_key, index))
            body = bytearray(message.body)
            body[len(body) // 2] ^= 0x01
            message.body = bytes(body)
            client.lset(log_key, index, message.SerializeToString())
            altered.append(message)
        return altered[0]
    finally:
        client.close()


def copy_identity(user: str, source: Path, target: Path) -> None:
    """The same identity in another folder (its own pins file), as on a second device."""
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copy(source / f"{user}.json", target / f"{user}.json")
    os.chmod(target / f"{user}.json", 0o600)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return tmp_path / "keys"  # the folder client_factory keeps keys in


async def rpc_error(awaitable: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable  # type: ignore[misc]
    return caught.value


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


# ---------------------------------------------------------------- tests
async def test_servers_store_and_log_only_ciphertext(stack_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=2, settings={**DEBUG_LOGS, **SENDS})
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(2)])
    from_alice, from_bob = secret_texts(4, "alice"), secret_texts(4, "bob")
    for turn in range(4):
        await alice.send("bob", from_alice[turn])
        await bob.wait_for(turn + 1)
        await bob.send("alice", from_bob[turn])
        await alice.wait_for(turn + 1)
    assert bob.texts() == from_alice and alice.texts() == from_bob
    history = await bob.call("GetHistory", pb.HistoryRequest(peer="alice"))
    assert len(history.messages) == 8

    plaintexts = [text.encode() for text in from_alice + from_bob]
    needles = [*plaintexts, *(p.hex().encode() for p in plaintexts), *(base64.b64encode(p) for p in plaintexts),
               b"aubergine", b"zither"]
    dump = redis_dump(stack.redis.url)
    assert len(dump) > 20  # history, presence, keys and more really were read
    leaks = [(needle, value[:80]) for value in dump for needle in needles if needle in value]
    assert not leaks, f"plaintext in Redis: {leaks[:3]}"
    logs = {name: stack.log(name).encode() for name in stack.children}
    assert all(logs.values()), "every service wrote a log"
    leaked_logs = [(name, needle) for name, text in logs.items() for needle in needles if needle in text]
    assert not leaked_logs, f"plaintext in service logs: {leaked_logs[:3]}"

    stored = stored_messages(stack.redis.url, naming.dm_conversation("alice", "bob"))
    by_id = {message.id: message for message in stored}
    sent = {r.message.id: r.text for r in bob.received + alice.received}
    assert set(by_id) == set(sent)
    for message_id, text in sent.items():
        body = by_id[message_id].body
        assert text is not None and body != text.encode() and text.encode() not in body
        assert body[0] == 2 and len(body) == len(text.encode()) + ENVELOPE_OVERHEAD  # version, nonce, tag, signature
    assert len({by_id[i].body[1:13] for i in sent}) == len(sent)  # a fresh nonce per message


async def test_impostors_and_bad_tokens_are_refused(raw_channel, client_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack, channel = raw_channel
    alice = await client_factory("alice", stack.addresses)
    await client_factory("bob", stack.addresses)
    stub = rpc.SpartanStub(channel)

    # Same name, another key pair: the login is refused.
    impostor = Connection(stack.addresses, load_or_create("alice", tmp_path / "impostor")[0], TlsConfig())
    refused = await rpc_error(impostor.open())
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
            assert (await rpc_error(call)).code() == grpc.StatusCode.UNAUTHENTICATED

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
        error = await rpc_error(stub.PendingRequests(pb.PendingRequestsRequest(), metadata=metadata, timeout=10))
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
            replayed = await rpc_error(replay_stub.Login(login, timeout=10))
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
    assert (await rpc_error(stub.Login(forged, timeout=10))).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_flipped_bits_in_stored_or_relayed_ciphertext_are_detected(stack_factory, client_factory,
                                                                         keys: Path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=2)
    bob = await client_factory("bob", [stack.address(2)])
    await bob.close()  # bob registered his keys and went offline
    alice = await client_factory("alice", [stack.address(1)])
    conversation = naming.dm_conversation("alice", "bob")
    await alice.send("bob", "first, intact")
    await alice.send("bob", "second, to be altered")
    flip_stored_body(stack.redis.url, conversation, 1)
    await alice.send("bob", "third, intact")  # a new last offset: no history cache can hold the old entry

    # The headless client replaying history over its stream, and reading it with GetHistory.
    reader_dir = keys.parent / "bob-second-device"
    copy_identity("bob", keys, reader_dir)
    from spartan.client.headless import HeadlessClient

    reader = HeadlessClient("bob", [stack.address(1)], str(reader_dir))
    reader.follow("alice")
    await reader.start()
    try:
        await reader.wait_for(3)
        assert reader.texts() == ["first, intact", None, "third, intact"]
        history = await reader.call("GetHistory", pb.HistoryRequest(peer="alice"))
        assert [await reader.crypto.open(m) for m in history.messages] == ["first, intact", None, "third, intact"]

        # A relayed copy: a sealed message published straight to bob's channel, once with a flipped bit.
        publisher = redis_sync.Redis.from_url(stack.redis.url)
        try:
            for flip, text in ((False, "relayed, intact"), (True, "relayed, altered")):
                message_id = uuid.uuid4().hex
                body = bytearray(await alice.crypto.seal("bob", text, message_id))
                if flip:
                    body[-20] ^= 0x80
                relayed = pb.Message(id=message_id, kind=pb.CHAT, sender="alice", recipient="bob",
                                     conversation=conversation, body=bytes(body))
                publisher.publish(naming.user_channel("bob"), relayed.SerializeToString())
        finally:
            publisher.close()
        await reader.wait_for(5)
        assert reader.texts()[3:] == ["relayed, intact", None]
    finally:
        await reader.close()

    # The real CLI shows the altered history entry as undecryptable and the others as sent. (The
    # reader above acknowledged all three for bob, so this client shows them through /history.)
    cli = PipedCli("bob", stack, keys)
    try:
        cli.read_until("User list")
        cli.type("alice")
        cli.read_until("You are now ready to chat with alice.")
        cli.type("/history")
        cli.read_until("Recent messages with alice:")
        shown = cli.read_until("[alice] third, intact")
        assert shown == ["[alice] first, intact", UNDECRYPTABLE, "[alice] third, intact"]
    finally:
        assert cli.quit() == 0


async def test_key_reset_shows_the_key_change_warning(stack_factory, client_factory, keys: Path) -> None:  # type: ignore[no-untyped-def]
    """After a reset the new key is announced with its safety number and not used (nor its messages
    shown as bob's) until the user accepts it."""
    stack = stack_factory(gateways=2)
    bob = await client_factory("bob", [stack.address(2)])
    alice = await client_factory("alice", [stack.address(1)])
    await alice.send("bob", "before the reset")
    await bob.wait_for(1)
    cli_dir = keys.parent / "alice-cli"
    copy_identity("alice", keys, cli_dir)
    cli = PipedCli("alice", stack, cli_dir, 1)
    try:
        cli.read_until("User list")
        cli.type("bob")
        cli.read_until("You are now ready to chat with bob.")
        cli.type("pinning bob's first key")
        await bob.wait_for(2)
        await bob.close()

        reset = subprocess.run([sys.executable, "-m", "spartan.admin", "reset-keys", "bob"], capture_output=True,
                               text=True, env=stack.env, timeout=60)
        assert reset.returncode == 0, reset.stderr
        from spartan.client.headless import HeadlessClient

        new_bob = HeadlessClient("bob", [stack.address(2)], str(keys.parent / "bob-new-device"))
        new_bob.conn.enrolment_code = reset.stdout.split("--enrolment-code ")[1].strip()  # printed by the reset
        await new_bob.start()
        try:
            await new_bob.send("alice", "hello from my new device")
            await alice.wait_for(1)
            assert alice.texts() == [None]  # not shown as bob's: the new key is not accepted
            assert any(n.startswith("WARNING: bob's security key has changed!") for n in alice.notices)
            shown = cli.read_until("which you have not accepted, is not shown as from bob")
            assert any(line.startswith("[Spartan] WARNING: bob's security key has changed!") for line in shown)
            warning = next(line for line in shown if "WARNING" in line)
            assert "/verify bob" in warning and "/accept-key bob" in warning
            assert not any("hello from my new device" in line for line in cli.lines)
        finally:
            await new_bob.close()
    finally:
        assert cli.quit() == 0


async def test_both_sides_see_the_same_safety_number(stack_factory, keys: Path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=2)
    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    bob = PipedCli("bob", stack, keys, 2)
    alice: PipedCli | None = None
    try:
        bob.read_until("User list")  # bob's keys are registered
        alice = PipedCli("alice", stack, keys, 1)
        alice.read_until("User list")
        alice.type("/verify bob")
        bob.type("/verify alice")
        numbers = []
        for cli, peer in ((alice, "bob"), (bob, "alice")):
            cli.read_until(f"Safety number with {peer} (not verified yet)")
            rows = [cli.read_until("[Spartan]     ")[-1] for _ in range(3)]
            numbers.append([row.removeprefix("[Spartan]").strip() for row in rows])
        assert numbers[0] == numbers[1]
        digits = "".join(numbers[0]).replace(" ", "")
        assert len(digits) == 60 and digits.isdigit()
    finally:
        assert bob.quit() == 0
        if alice:
            assert alice.quit() == 0


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
        error = await rpc_error(rpc.SpartanStub(channel).PendingRequests(
            pb.PendingRequestsRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=10))
    finally:
        await channel.close()
    assert error.code() == grpc.StatusCode.UNAVAILABLE
