"""A client that stops reading is cut off when its bounded queue fills, without slowing anyone else."""
from __future__ import annotations

import asyncio
import signal
import urllib.request

from tests.support.client_processes import READER, STUCK_READER, spawn
from tests.support.stack import rates

MESSAGES = 3000


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


async def test_stuck_reader_is_disconnected_and_others_keep_flowing(stack_factory, client_factory, tmp_path) -> None:
    stack = stack_factory(gateways=1, settings={"SPARTAN_GATEWAY__STREAM_QUEUE_SIZE": "50",
                                                **rates(send=10000)})  # 3000 messages as fast as they go
    keys = str(tmp_path / "keys")
    alice = await client_factory("alice", [stack.address(1)], encrypt=False)
    charlie = spawn(READER, stack.address(1), "charlie", keys)
    stuck = spawn(STUCK_READER, stack.address(1), "bob", keys)
    stuck.send_signal(signal.SIGSTOP)  # frozen: its socket buffers fill and the gateway's writes stall
    try:
        body = "x" * 8192
        for i in range(MESSAGES):
            await alice.send("bob", body)
            if i % 100 == 0:  # the reader next to the stuck one keeps receiving
                await alice.send("charlie", f"ping {i}")
                line = await asyncio.wait_for(asyncio.to_thread(charlie.stdout.readline), 10)
                assert line.strip() == f"ping {i}"

        port = stack.metrics_ports["gateway-1"]
        assert metric(port, "spartan_slow_consumer_disconnects_total") >= 1
        assert metric(port, "spartan_active_streams") == 2  # alice and charlie; bob's stream was closed
    finally:
        stuck.send_signal(signal.SIGCONT)
        stuck.kill()
        charlie.kill()

    bob = await client_factory("bob", [stack.address(1)], encrypt=False)
    bob.follow("alice")
    await bob.receiver.stop()  # reopen the stream with the cursor from the beginning of the conversation
    bob.receiver.connected.clear()
    bob.receiver.start()
    await bob.receiver.wait_connected(10)
    received = await bob.wait_for(MESSAGES, timeout=60)
    assert len({r.message.id for r in received}) == MESSAGES
