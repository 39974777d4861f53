"""Every Redis call the services make touches one cluster slot, with every script among them,
and nothing is published with a plain PUBLISH (a cluster copies those to every node).

A Redis Cluster refuses a script, a multi-key command or a transaction whose keys hash to
more than one slot. The real services run a session of everything users do (logins, chat
requests, 1:1 and group messages, sender keys, acknowledgements, history, group changes,
a rate-limited send, a reconnect) against one `redis-server` whose MONITOR is read: each
call's keys come from the calls themselves, so a key built anywhere, by any module, is
checked, and every script shipped in `spartan/redis_scripts` must have run at least once.
"""
from __future__ import annotations

import asyncio
import hashlib
from importlib import resources

from redis.asyncio import Redis

from spartan.cache.redis_backend import RedisBackend
from spartan.crypto.membership import ADD, CREATE, REMOVE
from spartan.redis_scripts import source
from spartan.v1 import pb
from tests.support.refusals import refusal
from tests.support.slot_monitor import SlotMonitor, cross_slot_calls, plain_publishes
from tests.support.redis_server import RedisServer
from tests.support.stack import Stack, rates

# Sends and group changes back to back; chat requests keep the shipped 3 per 30 s, so the fourth is refused.
CALLS = rates(send=1000, group=100)


def shipped_scripts() -> dict[str, str]:
    """sha1 -> name of every script file (fragments, named `_…`, are pasted into scripts, not run)."""
    names = [path.name[: -len(".lua")] for path in resources.files("spartan.redis_scripts").iterdir()
             if path.name.endswith(".lua") and not path.name.startswith("_")]
    return {hashlib.sha1(source(name).encode()).hexdigest(): name for name in names}


async def test_every_call_of_a_chat_session_touches_one_slot(tmp_path, client_factory) -> None:
    redis_server = RedisServer().start()
    redis = Redis.from_url(redis_server.url)
    monitor = SlotMonitor("127.0.0.1", redis_server.port)
    await monitor.start()  # from before the services start: seeding the config's groups is checked too
    stack = Stack(tmp_path / "stack", redis_server, gateways=2, settings=CALLS).start()
    try:
        alice = await client_factory("alice", [stack.address(0)])
        bob = await client_factory("bob", [stack.address(1)])
        charlie = await client_factory("charlie", [stack.address(1)])
        await alice.call("RequestChat", pb.ChatRequest(peer="bob"))
        await bob.call("RespondChat", pb.ChatRequest(peer="alice", accept=True))
        await alice.send("bob", "hello bob")
        await bob.send("alice", "hello alice")
        await alice.send_group("group1", "hello group1")
        await alice.groups.change(CREATE, "team", members=["bob"])
        await alice.groups.change(ADD, "team", "charlie")
        await alice.send_group("team", "hello team")
        await alice.groups.change(REMOVE, "team", "charlie")
        await bob.wait_until(lambda: len(bob.received) >= 3)
        await alice.call("GetHistory", pb.HistoryRequest(peer="bob"))
        await alice.call("GetHistory", pb.HistoryRequest(group="group1"))
        for peer in ("eve", "foo", "bar"):
            await charlie.call("RequestChat", pb.ChatRequest(peer=peer))
        await refusal(charlie.call("RequestChat", pb.ChatRequest(peer="qux")))  # the bucket is empty
        await bob.close()
        bob = await client_factory("bob", [stack.address(0)])  # a reconnect replays from the delivery log
        await asyncio.sleep(0.5)  # acknowledgements go out on their own schedule
        cache = RedisBackend(redis, name="shared", maxsize=2, ttl=60)  # the decorator's shared backend
        await cache.set("a", b"1")
        await cache.get("a")
        await cache.delete("a")
    finally:
        await monitor.stop()
        stack.stop()
    try:
        assert await cross_slot_calls(redis, monitor.calls) == []
        assert plain_publishes(monitor.calls) == []
        assert any(call.name == "ssubscribe" for call in monitor.calls), "the gateways' subscriptions were seen"
        ran = {call.args[1].decode() for call in monitor.calls if call.name == "evalsha"}
        missing = sorted(name for sha, name in shipped_scripts().items() if sha not in ran)
        assert missing == [], f"scripts this session never ran, so never checked: {missing}"
    finally:
        await redis.aclose()
        redis_server.close()
