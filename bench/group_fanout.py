"""Group fan-out: deliveries per second and delivery latency for groups of 2, 10 and 100 members.

    python3 -m bench.group_fanout [--sizes 2,10,100] [--deliveries 6000] [--window 8] [--encrypted-size 10]

Starts its own redis-server on a free loopback port (never the machine's shared one),
presence, history and three gateway processes (`bench.stack.SpartanStack`), with
users u000..u099 and no configured groups. For each size one
sender creates a group at run time with members spread round-robin over the three
gateways, waits until every member's stream follows it, then sends messages with
`--window` sends in flight until about `--deliveries` deliveries are due. Latency is
the sender's clock before `SendMsg` to the receiver's clock on arrival (one host, one
clock). Receivers run in this one process and do not decrypt (`encrypt=False`), so the
numbers describe the servers' fan-out, not client CPU; one extra row runs a group with
sender-key encryption end to end (`--encrypted-size`, 0 to skip). It also counts Redis
PUBLISH calls per group message. Prints one table; it asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from bench.stack import SpartanStack, user_names
from bench.summary import format_table, percentile
from spartan.client.headless import HeadlessClient
from spartan.crypto.membership import CREATE
from spartan.v1 import pb

USERS = user_names(100)
GATEWAYS = 3
MAX_MESSAGES = 2000  # keeps the 2-member run short: its rate is the sender's, not the fan-out's


@dataclass(frozen=True)
class Result:
    label: str
    members: int
    messages: int
    deliveries: int
    seconds: float
    p50_ms: float
    p99_ms: float
    publishes_per_message: float


async def publish_calls(redis: Redis) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_spublish", {}).get("calls", 0))


async def run_group(label: str, size: int, clients: dict[str, HeadlessClient], redis: Redis, *,
                    deliveries: int, window: int) -> Result:
    members = USERS[:size]
    sender, receivers = clients[members[0]], [clients[u] for u in members[1:]]
    group = f"g{size}-{uuid.uuid4().hex[:6]}"
    info = await sender.groups.change(CREATE, group, members=members[1:])
    for client in [sender, *receivers]:
        await client.wait_until(lambda c=client: any(e.kind == pb.MEMBERSHIP and e.group == group for e in c.events))
    if sender.encrypt:  # distribute the sender key outside the measured window
        await sender.send_group(group, "warm-up")
        for client in receivers:
            await client.wait_until(lambda c=client: len(c.received_in(group)) >= 1, timeout=60)
    messages = min(MAX_MESSAGES, max(20, deliveries // (size - 1)))
    baseline = {id(c): len(c.received_in(group)) for c in receivers}
    sent_at: dict[str, float] = {}
    limit = asyncio.Semaphore(window)
    publishes_before = await publish_calls(redis)

    async def send(i: int) -> None:
        async with limit:
            message_id = uuid.uuid4().hex
            sent_at[message_id] = time.time()
            await sender.send_group(group, f"m{i}", message_id)

    started = time.time()
    await asyncio.gather(*(send(i) for i in range(messages)))
    for client in receivers:
        await client.wait_until(lambda c=client: len(c.received_in(group)) >= baseline[id(c)] + messages, timeout=120)
    publishes = await publish_calls(redis) - publishes_before
    arrivals = [r for c in receivers for r in c.received_in(group)[baseline[id(c)]:]]
    assert len(arrivals) == messages * len(receivers), "a message was lost or delivered twice"
    latencies = sorted((r.received_at - sent_at[r.message.id]) * 1000 for r in arrivals)
    finished = max(r.received_at for r in arrivals)
    assert len(info.members) == size
    return Result(label, size, messages, len(arrivals), finished - started, percentile(latencies, 0.50),
                  percentile(latencies, 0.99), publishes / messages)


async def connect(stack: SpartanStack, users: list[str], key_dir: str, *, encrypt: bool) -> dict[str, HeadlessClient]:
    clients = {u: HeadlessClient(u, [stack.address(i % GATEWAYS + 1)], key_dir, encrypt=encrypt)
               for i, u in enumerate(users)}
    await asyncio.gather(*(c.start(timeout=60) for c in clients.values()))
    return clients


async def measure(args: argparse.Namespace, stack: SpartanStack, folder: Path) -> list[Result]:
    redis = Redis.from_url(stack.redis.url)
    results: list[Result] = []
    clients = await connect(stack, USERS[:max(args.sizes)], str(folder / "keys"), encrypt=False)
    try:
        for size in args.sizes:
            results.append(await run_group(f"{size}", size, clients, redis, deliveries=args.deliveries,
                                           window=args.window))
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()))
    if args.encrypted_size:
        clients = await connect(stack, USERS[:args.encrypted_size], str(folder / "keys"), encrypt=True)
        try:
            results.append(await run_group(f"{args.encrypted_size} e2e", args.encrypted_size, clients, redis,
                                           deliveries=args.deliveries // 4, window=args.window))
        finally:
            await asyncio.gather(*(c.close() for c in clients.values()))
    await redis.aclose()
    return results


def print_table(results: list[Result]) -> None:
    print(format_table(["group", "messages", "deliveries", "seconds", "deliveries/s", "p50 ms", "p99 ms",
                        "PUBLISH/msg"], [
        [r.label, str(r.messages), str(r.deliveries), f"{r.seconds:.2f}", f"{r.deliveries / r.seconds:.0f}",
         f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}", f"{r.publishes_per_message:.2f}"] for r in results]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2,10,100", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--deliveries", type=int, default=6000, help="deliveries to aim for per group size")
    parser.add_argument("--window", type=int, default=8, help="sends in flight at once")
    parser.add_argument("--encrypted-size", type=int, default=10, help="size of the end-to-end encrypted row (0: none)")
    args = parser.parse_args()
    if max(args.sizes) > len(USERS) or min(args.sizes) < 2:
        parser.error(f"group sizes must be between 2 and {len(USERS)}")
    with tempfile.TemporaryDirectory(prefix="spartan-bench-groups-") as tmp:
        folder = Path(tmp)
        settings = {"SPARTAN_GATEWAY__STREAM_QUEUE_SIZE": "100000"}
        with SpartanStack(folder / "stack", users=USERS, gateways=GATEWAYS, settings=settings) as stack:
            print(f"group fan-out over {GATEWAYS} gateways (receivers in one client process, "
                  f"{args.window} sends in flight)", flush=True)
            print_table(asyncio.run(measure(args, stack, folder)))


if __name__ == "__main__":
    main()
