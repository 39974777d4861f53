"""A Redis Cluster primary SIGKILLed while users chat across three gateways.

Its replica takes over (node timeout 2 s, then an election); no Spartan process is
restarted. Senders retry what was not acknowledged with the same id, as the terminal
client's send queue does. Every acknowledged message reaches its recipients exactly once
on screen, or the conversation's new epoch says messages may be gone: a promoted replica
may lack the newest appends (replication is asynchronous), and starts a new epoch rather
than hand their offsets out again (`delivery_append.lua`).
"""
from __future__ import annotations

import asyncio
import signal
import time
import uuid

from spartan import naming
from spartan.client.headless import HeadlessClient
from spartan.errors import Unavailable
from spartan.v1 import pb
from tests.support.redis_cluster import RedisCluster
from tests.support.stack import Stack, rates

SENDS = rates(send=1000)  # about 80 sends in a few seconds; every other API keeps the shipped 3 per 30 s
RETRY_SECONDS = 0.2
FAILOVER_SECONDS = 60.0  # node timeout, election, slot map refreshes, clients' reconnects, on a loaded machine


async def send_until_acknowledged(client: HeadlessClient, text: str, *, peer: str = "", group: str = "") -> None:
    """Send under one id until the gateway acknowledges it (kept in the delivery log)."""
    message_id = uuid.uuid4().hex
    deadline = time.monotonic() + FAILOVER_SECONDS
    while True:
        try:
            if group:
                await client.send_group(group, text, message_id)
            else:
                await client.send(peer, text, message_id)
            return
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(RETRY_SECONDS)


def shown(client: HeadlessClient, sender: str, group: str = "") -> list[str]:
    return [r.text for r in client.received if r.message.sender == sender and r.message.group == group]


def epoch_notices(client: HeadlessClient) -> list[pb.Message]:
    return [e for e in client.events if e.kind == pb.NOTICE and e.conversation]


async def test_a_primary_killed_mid_chat_is_replaced_and_every_acknowledged_message_arrives(
        tmp_path, client_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = RedisCluster().start()
    stack = Stack(tmp_path / "stack", cluster, gateways=3, settings=SENDS).start()  # type: ignore[arg-type]
    try:
        alice = await client_factory("alice", [stack.address(1), stack.address(2)])
        bob = await client_factory("bob", [stack.address(2), stack.address(3)])
        charlie = await client_factory("charlie", [stack.address(3), stack.address(1)])
        dm = naming.dm_conversation("alice", "bob")
        victim = cluster.primary_of(f"sp:d:{{{dm}}}:log")  # the node holding alice and bob's delivery log
        sent_dm, sent_group = [], []
        for i in range(40):
            if i == 15:
                victim.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            sent_dm.append(f"dm {i:02d}")
            await send_until_acknowledged(alice, sent_dm[-1], peer="bob")
            sent_group.append(f"group {i:02d}")
            await send_until_acknowledged(charlie, sent_group[-1], group="group1")
        await bob.wait_until(lambda: len(set(shown(bob, "alice"))) >= len(sent_dm) and
                             len(set(shown(bob, "charlie", "group1"))) >= len(sent_group), FAILOVER_SECONDS)
        await alice.wait_until(lambda: len(set(shown(alice, "charlie", "group1"))) >= len(sent_group),
                               FAILOVER_SECONDS)
        for client, sender, group, sent in ((bob, "alice", "", sent_dm), (bob, "charlie", "group1", sent_group),
                                            (alice, "charlie", "group1", sent_group)):
            on_screen = shown(client, sender, group)
            assert len(on_screen) == len(set(on_screen)), f"{client.user} was shown a message twice"
            assert sorted(on_screen) == sent, f"{client.user} misses {sorted(set(sent) - set(on_screen))}"
        for client in (alice, bob, charlie):  # at most one pair per stream, however many of its channels moved
            said = [e.text for e in client.events if e.kind == pb.NOTICE and not e.conversation]
            assert said.count("Reconnecting…") == said.count("Reconnected.") <= 1, (client.user, said)
        assert all(stack.children[name].process.poll() is None for name in stack.children), "a process died"
        assert not victim.alive()
        print("conversation notices after the failover:",
              [(e.conversation, e.text) for c in (alice, bob) for e in epoch_notices(c)])
    finally:
        stack.stop()
        cluster.close()
