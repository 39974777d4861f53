"""Catching up: an offline user with N waiting messages connects; how long until all are on screen?

    python3 -m bench.catch_up [--messages 10000] [--rounds 3]

A real stack (Redis, presence, history, one gateway). alice sends N messages to bob,
who has logged in once and is offline; then bob's headless client (the CLI's
receiver, decryption included) starts, and the clock runs from its start until the
N-th message is recorded. Reported: seconds, messages per second, and whether every
message arrived once and in order. Bob's client acknowledges what it has, so the
delivery log is empty afterwards (also reported).
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from bench.stack import SpartanStack
from spartan.client.headless import HeadlessClient
from spartan.delivery_log import conversation_keys
from spartan.naming import dm_conversation


async def one_round(stack: SpartanStack, keys: Path, messages: int, round_number: int) -> tuple[float, bool, int]:
    bob_keys = str(keys / "bob")  # the same key every round; positions come from the server (acks)
    bob = await HeadlessClient("bob", [stack.address(1)], bob_keys).start()
    await bob.close()
    alice = await HeadlessClient("alice", [stack.address(1)], str(keys / "alice")).start()
    texts = [f"r{round_number} m{i:05d}" for i in range(messages)]
    for text in texts:  # one at a time, so the order is the one sent
        await alice.send("bob", text)
    await alice.close()
    started = time.perf_counter()
    bob = HeadlessClient("bob", [stack.address(1)], bob_keys)
    await bob.start(timeout=60)
    await bob.wait_for(messages, timeout=600)
    elapsed = time.perf_counter() - started
    ordered = bob.texts()[-messages:] == texts and len(bob.received) == messages
    await asyncio.sleep(1.0)  # one acknowledgement interval and a little more
    await bob.close()
    redis = Redis.from_url(stack.redis.url)
    held = int(await redis.llen(conversation_keys(dm_conversation("alice", "bob"))[1]))
    await redis.aclose()
    return elapsed, ordered, held


async def main_async(messages: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as workdir, \
            SpartanStack(Path(workdir), users=["alice", "bob"], gateways=1) as stack:
        print(f"catch-up of {messages} waiting messages (1:1, encrypted), {rounds} round(s)")
        print(f"{'round':>5}  {'seconds':>8}  {'msg/s':>8}  {'once, in order':>14}  {'left in the log':>15}")
        for number in range(1, rounds + 1):
            elapsed, ordered, held = await one_round(stack, Path(workdir), messages, number)
            print(f"{number:>5}  {elapsed:>8.2f}  {messages / elapsed:>8.0f}  {'yes' if ordered else 'NO':>14}  {held:>15}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10000, help="waiting messages (default 10000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    arguments = parser.parse_args()
    if arguments.messages < 1 or arguments.rounds < 1:
        parser.error("--messages and --rounds must be numbers above zero")
    asyncio.run(main_async(arguments.messages, arguments.rounds))


if __name__ == "__main__":
    main()
