"""Clients behind a real nginx gRPC load balancer keep chatting while a gateway is stopped.

nginx runs from the project's rendered config in front of three real gateways, and
the clients know only nginx's address. A gateway stopped with SIGTERM drains (its
streams are told to reconnect), nginx sends new calls and streams to the others, and
clients resume from history: nothing is lost, nothing shows twice.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.nginx import Nginx
from tests.support.ports import free_port
from tests.support.prometheus import scrape
from tests.support.stack import rates

# The shipped 5-message history: a client that reconnects mid-way resumes from the delivery log.
SETTINGS = rates(send=100)  # each client sends 25 messages back to back


def open_streams(stack, name: str) -> float:  # type: ignore[no-untyped-def]
    return scrape(stack.metrics_ports[name]).total("spartan_active_streams")


async def wait_for_streams(stack, gateways: list[str], count: int, timeout: float = 15.0) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Wait until the gateways together hold `count` streams; returns streams per gateway."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        streams = {name: open_streams(stack, name) for name in gateways}
        if sum(streams.values()) == count or asyncio.get_running_loop().time() > deadline:
            return streams
        await asyncio.sleep(0.2)


async def wait_for_notice(clients, text: str, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    """Wait until one of `clients` shows the notice `text`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not any(text in client.notices for client in clients):
        assert asyncio.get_running_loop().time() < deadline, [client.notices for client in clients]
        await asyncio.sleep(0.05)


async def test_clients_through_nginx_carry_on_when_a_gateway_is_stopped(
        stack_factory, client_factory, tmp_path: Path) -> None:
    stack = stack_factory(gateways=3, settings=SETTINGS)
    nginx = Nginx(tmp_path / "nginx", stack.gateway_ports).start()
    try:
        alice = await client_factory("alice", [nginx.address])
        bob = await client_factory("bob", [nginx.address])
        alice.follow("bob")
        bob.follow("alice")

        for i in range(5):
            await alice.send("bob", f"a-before-{i}")
            await bob.send("alice", f"b-before-{i}")
        assert [r.text for r in await bob.wait_for(5)] == [f"a-before-{i}" for i in range(5)]
        assert [r.text for r in await alice.wait_for(5)] == [f"b-before-{i}" for i in range(5)]

        gateways = [f"gateway-{n}" for n in (1, 2, 3)]
        streams = await wait_for_streams(stack, gateways, 2)
        assert sum(streams.values()) == 2, streams
        # Stop a gateway that carries one of the two streams, so a client has to move.
        stopped = max(gateways, key=lambda name: streams[name])
        assert await asyncio.to_thread(stack.terminate, stopped) == 0, stack.log(stopped)
        # The client whose stream was on the stopped gateway was told to reconnect before it
        # exited. Let it finish: the client closes its channel on failover, which cancels a call
        # in flight on it (see docs/OBSERVABILITY.md, "Known limits").
        await wait_for_notice([alice, bob], "Reconnecting…")
        moved = [client for client in (alice, bob) if "Reconnecting…" in client.notices]
        for client in moved:
            await wait_for_notice([client], "Reconnected.")

        for i in range(20):
            await alice.send("bob", f"a-after-{i}")
            await bob.send("alice", f"b-after-{i}")
        expected_by_bob = [*(f"a-before-{i}" for i in range(5)), *(f"a-after-{i}" for i in range(20))]
        expected_by_alice = [*(f"b-before-{i}" for i in range(5)), *(f"b-after-{i}" for i in range(20))]
        assert [r.text for r in await bob.wait_for(25, timeout=30)] == expected_by_bob
        assert [r.text for r in await alice.wait_for(25, timeout=30)] == expected_by_alice
        await asyncio.sleep(1.0)  # a late duplicate would arrive now
        assert [r.text for r in bob.received] == expected_by_bob
        assert [r.text for r in alice.received] == expected_by_alice

        for client in moved:
            assert "this gateway is shutting down; reconnecting to another one" in client.notices
            assert client.conn.address == nginx.address  # it came back through nginx, never around it

        # Both streams now live on the gateways that are still running.
        remaining = [name for name in gateways if name != stopped]
        assert sum((await wait_for_streams(stack, remaining, 2)).values()) == 2
    finally:
        nginx.stop()
    # Every call went through nginx to a gateway; none was answered by nginx itself.
    access = nginx.access_log()
    assert "upstream=127.0.0.1:" in access and " 502 " not in access and " 504 " not in access


async def test_client_with_one_dead_address_uses_the_other(stack_factory, client_factory, tmp_path: Path) -> None:
    stack = stack_factory(gateways=3)
    nginx = Nginx(tmp_path / "nginx", stack.gateway_ports).start()
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here
    try:
        alice = await client_factory("alice", [dead, nginx.address])
        bob = await client_factory("bob", [nginx.address, dead])
        assert alice.conn.address == nginx.address
        await alice.send("bob", "through the live address")
        await bob.send("alice", "and back")
        assert [r.text for r in await bob.wait_for(1)] == ["through the live address"]
        assert [r.text for r in await alice.wait_for(1)] == ["and back"]
    finally:
        nginx.stop()
