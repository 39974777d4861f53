"""Silencing a user through their stream, attempted against real processes.

The attack: put the victim in a group (no consent needed) and flood them with sender
keys, so their stream's bounded queue overflows and the gateway's event loop is busy
fanning out. Fixed behaviour: a batch holds at most one key per other member and names
each recipient once, the sender-key budget is counted in keys, another user's calls
stay fast, and a stream that cannot keep up ends with RESOURCE_EXHAUSTED and a
sentence; the victim's real client says so, reconnects and receives every message
sent before, during and after, exactly once.
"""
from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

import grpc

from spartan.crypto.membership import ADD, CREATE
from spartan.v1 import pb
from tests.support.refusals import refusal
from tests.support.stack import ROOT, rates

SENDS = rates(send=1000)  # 425 messages sent as fast as the gateway takes them

# The budget the gateway grants: four full key rotations of a group of the largest size, per minute.
MAX_GROUP_MEMBERS = 256
KEY_BUDGET = 4 * MAX_GROUP_MEMBERS
# Another user's median call latency during the flood may grow at most this much (generous: the machine is
# shared and noisy; the unprotected gateway measured ~700x).
LATENCY_FACTOR = 25
# A baseline under this is scheduling noise, not the gateway's speed: the factor applies to at least this much
# (75 ms, against the 1.4 s another user's call took while an unprotected gateway fanned out one batch).
BASELINE_FLOOR_SECONDS = 0.003


def sealed_key(recipient: str, size: int = 120) -> pb.Message:
    return pb.Message(id=uuid.uuid4().hex, recipient=recipient, body=os.urandom(size))


async def drain(call) -> None:  # type: ignore[no-untyped-def]
    """Read a stream to its end, as a client that keeps up does."""
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError:
        pass


async def timed(call) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    await call
    return time.perf_counter() - started


async def test_a_sender_key_flood_is_bounded_and_does_not_block_the_gateway(stack_factory, client_factory) -> None:
    stack = stack_factory(gateways=1)
    address = [stack.address(1)]
    eve = await client_factory("eve", address, encrypt=False)
    alice = await client_factory("alice", address, encrypt=False)
    bob = await client_factory("bob", address, encrypt=False)
    # The victim holds many streams (as in the report); the per-user cap keeps it at 16 in all.
    extra = [alice.conn.stub.ReceiveMsg(pb.Message(sender="alice"), metadata=alice.conn.metadata) for _ in range(15)]
    for call in extra:
        await call.initial_metadata()
    readers = [asyncio.create_task(drain(call)) for call in extra]

    others = ["alice", "bob", "charlie", "foo", "bar", "baz", "qux"]
    await eve.groups.change(CREATE, "trap", members=others)
    baseline = [await timed(bob.call("ListUsers", pb.ListUsersRequest())) for _ in range(30)]

    # One batch of ~1,100 keys for the victim, and a recipient named twice: refused before any work.
    huge = await refusal(eve.call("SendSenderKeys", pb.SenderKeyBatch(
        group="trap", keys=[sealed_key("alice", 16) for _ in range(1100)])))  # small keys: the batch fits one request
    assert huge.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"at most {MAX_GROUP_MEMBERS - 1} sender keys per batch" in huge.details()
    twice = await refusal(eve.call("SendSenderKeys", pb.SenderKeyBatch(
        group="trap", keys=[sealed_key("alice"), sealed_key("alice")])))
    assert twice.code() == grpc.StatusCode.INVALID_ARGUMENT and "twice" in twice.details()
    stranger = await refusal(eve.call("SendSenderKeys", pb.SenderKeyBatch(group="group2", keys=[sealed_key("foo")])))
    assert stranger.code() == grpc.StatusCode.PERMISSION_DENIED  # eve is not in group2

    # The flood: full batches (one key per other member) until the budget, counted in keys, runs out.
    accepted_keys = 0
    stopped: grpc.aio.AioRpcError | None = None
    flood_started = time.monotonic()

    async def flood() -> None:
        nonlocal accepted_keys, stopped
        while True:
            try:
                ack = await eve.conn.stub.SendSenderKeys(
                    pb.SenderKeyBatch(group="trap", keys=[sealed_key(user) for user in others]),
                    metadata=eve.conn.metadata, timeout=10)
            except grpc.aio.AioRpcError as exc:
                stopped = exc
                return
            accepted_keys += ack.stored

    flooding = asyncio.create_task(flood())
    during: list[float] = []
    while not flooding.done() or len(during) < 5:
        during.append(await timed(bob.call("ListUsers", pb.ListUsersRequest())))
    await flooding
    elapsed = time.monotonic() - flood_started

    assert stopped is not None and stopped.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry-after" in dict(stopped.trailing_metadata() or ())
    refilled = elapsed * KEY_BUDGET / 60
    assert KEY_BUDGET - len(others) < accepted_keys <= KEY_BUDGET + refilled + len(others)  # keys, not calls
    assert statistics.median(during) <= LATENCY_FACTOR * max(statistics.median(baseline), BASELINE_FLOOR_SECONDS), (
        baseline, during)

    # The victim's client still receives: a message sent now arrives (live, or after a reconnect).
    await bob.send("alice", "still there?")
    got = await alice.wait_for(1, timeout=20)
    assert [r.text for r in got] == ["still there?"]
    for task in readers:
        task.cancel()


# argv: address user key_dir. A real client in its own process: prints "ready", then
# "notice: <text>" for each notice and "chat: <n>" for each chat message ("<n>:<padding>").
VICTIM = """
import asyncio, sys
from spartan.client.headless import HeadlessClient

async def main():
    client = await HeadlessClient(sys.argv[2], [sys.argv[1]], sys.argv[3], encrypt=False).start()
    print("ready", flush=True)
    chats = notices = 0
    while True:
        await asyncio.sleep(0.02)
        for text in client.notices[notices:]:
            print("notice:", text, flush=True)
        notices = len(client.notices)
        for received in client.received[chats:]:
            print("chat:", received.text.split(":", 1)[0], flush=True)
        chats = len(client.received)

asyncio.run(main())
"""


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


async def test_a_stream_that_falls_behind_ends_with_a_status_and_its_client_recovers(stack_factory, client_factory,
                                                                                      tmp_path) -> None:
    # A queue of 50 instead of 1024: the victim falls behind after a few megabytes instead of a few hundred.
    stack = stack_factory(gateways=1, settings={"SPARTAN_GATEWAY__STREAM_QUEUE_SIZE": "50", **SENDS})
    victim = subprocess.Popen([sys.executable, "-c", VICTIM, stack.address(1), "alice", str(tmp_path / "keys")],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert victim.stdout is not None
    try:
        assert victim.stdout.readline().strip() == "ready"
        bob = await client_factory("bob", [stack.address(1)], encrypt=False)
        padding = "x" * 60_000
        before, during, after = range(0, 5), range(5, 405), range(405, 425)
        for i in before:
            await bob.send("alice", f"{i}:{padding}")
        await asyncio.sleep(1)
        victim.send_signal(signal.SIGSTOP)  # the victim's client stops reading: its queue fills behind a full window
        for i in during:
            await bob.send("alice", f"{i}:{padding}")
        port = stack.metrics_ports["gateway-1"]
        deadline = time.monotonic() + 30
        while metric(port, "spartan_slow_consumer_disconnects_total") < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert metric(port, "spartan_slow_consumer_disconnects_total") >= 1
        victim.send_signal(signal.SIGCONT)
        for i in after:
            await bob.send("alice", f"{i}:{padding}")

        lines: list[str] = []
        wanted = {str(i) for i in range(425)}

        def read_all() -> None:
            assert victim.stdout is not None
            while not wanted <= {line[len("chat: "):] for line in lines if line.startswith("chat: ")}:
                line = victim.stdout.readline()
                if not line:
                    return
                lines.append(line.rstrip("\n"))

        await asyncio.wait_for(asyncio.to_thread(read_all), 90)
        chats = [line[len("chat: "):] for line in lines if line.startswith("chat: ")]
        assert sorted(chats, key=int) == [str(i) for i in range(425)]  # every message, exactly once
        notices = [line[len("notice: "):] for line in lines if line.startswith("notice: ")]
        assert any(n.startswith("The server ended the message stream: more messages arrived than this stream "
                                "could take in time") for n in notices), notices
        assert "Reconnecting…" in notices and "Reconnected." in notices
        assert "Traceback" not in stack.log("gateway-1")
    finally:
        victim.send_signal(signal.SIGCONT)
        victim.kill()
        victim.wait()


async def test_group_size_bounds_a_sender_key_batch(stack_factory, client_factory) -> None:
    # A limit of 4 members instead of 256 (the shipped groups have 4): 8 users cannot reach the default.
    stack = stack_factory(gateways=1, settings={"SPARTAN_PRESENCE__MAX_GROUP_MEMBERS": "4"})
    eve = await client_factory("eve", [stack.address(1)], encrypt=False)
    big = await refusal(eve.groups.change(CREATE, "big", members=["alice", "bob", "charlie", "foo"]))
    assert big.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert big.details() == "a group has at most 4 members, you included"
    await eve.groups.change(CREATE, "small", members=["alice", "bob", "charlie"])
    full = await refusal(eve.groups.change(ADD, "small", "foo"))
    assert full.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert full.details() == "small already has the most members a group may have; remove one first"
    batch = await refusal(eve.call("SendSenderKeys", pb.SenderKeyBatch(
        group="small", keys=[sealed_key(user) for user in ("alice", "bob", "charlie", "foo")])))
    assert batch.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert batch.details() == "at most 3 sender keys per batch: one for each other member of a group of at most 4"
    ack = await eve.call("SendSenderKeys", pb.SenderKeyBatch(
        group="small", keys=[sealed_key(user) for user in ("alice", "bob", "charlie")]))
    assert ack.stored == 3
