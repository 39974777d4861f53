"""Reconnect storm: a gateway holding N streams is SIGKILLed; how long until all are back and caught up?

    python3 -m bench reconnect_storm [--streams 2000] [--rate 200] [--baseline 5]

A real stack (Redis, presence, history, two gateways). N users hold one stream each
on gateway 1, each on its own connection, opened by a client process that reconnects
as the CLI's receiver does: on a break, a jittered exponential wait
(spartan.client.backoff, a gateway's retry-after as the floor), then the next gateway,
resuming after the newest offset it saw. A second process runs live traffic between
other users on gateway 2 at a fixed rate and records each message's latency. After a
baseline, gateway 1 is SIGKILLed and one message is sent to every storm user through
gateway 2 while they are away. Reported: seconds from the kill until every stream is
open again and until every storm user has its message and the SYNCED marker (caught
up); live latency p50/p99 in the baseline and during the storm; refused reconnects.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import statistics
import tempfile
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import grpc

from bench.cpu import CpuMeter
from bench.relay import LOCAL_CHANNEL, body, sent_at
from bench.stack import (
    SPARTAN_RECEIVE,
    SPARTAN_SEND,
    SpartanStack,
    mint_token,
    raise_open_files_limit,
    register_keys,
    user_names,
)
from spartan.client.backoff import Backoff
from spartan.client.explain import retry_after
from spartan.client.receiver import FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS
from spartan.errors import from_rpc_error
from spartan.v1 import pb

OPENING_IN_FLIGHT = 32  # initial opens awaiting their headers at once (the storm itself is not paced)
LIVE_PAIRS = 4
STORM_SENDS_IN_FLIGHT = 64
CAUGHT_UP_TIMEOUT_SECONDS = 300.0
STALLED_SECONDS = 10.0
STORM_BODY = b"storm"


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def receive_method(channel: grpc.aio.Channel) -> Any:
    return channel.unary_stream(SPARTAN_RECEIVE, request_serializer=pb.Message.SerializeToString,
                                response_deserializer=pb.Message.FromString)


def send_method(channel: grpc.aio.Channel) -> Any:
    return channel.unary_unary(SPARTAN_SEND, request_serializer=pb.Message.SerializeToString,
                               response_deserializer=pb.SendAck.FromString)


# ------------------------------------------------------------------ the storm's clients
class StormClient:
    """One user's stream with the receiver's reconnect policy; records when it reopens and catches up."""

    def __init__(self, user: str, token: str, addresses: list[str]) -> None:
        self.user = user
        self.metadata = metadata(token)
        self.addresses = addresses
        self.index = 0
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.cursors: dict[str, pb.Cursor] = {}
        self.opened = asyncio.Event()
        self.after_kill_ns = 0  # set when the kill is announced
        self.reopened_ns = 0
        self.message_ns = 0
        self.synced_ns = 0
        self.refused: dict[str, int] = {}

    def channel(self) -> grpc.aio.Channel:
        address = self.addresses[self.index]
        if address not in self.channels:
            self.channels[address] = grpc.aio.insecure_channel(address, options=LOCAL_CHANNEL)
        return self.channels[address]

    async def hold(self) -> None:
        backoff = Backoff(FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS)
        while True:
            floor = 0.0
            call = receive_method(self.channel())(pb.Message(sender=self.user, resume=list(self.cursors.values())),
                                                  metadata=self.metadata)
            try:
                headers = await call.initial_metadata()
                if any(key == "x-spartan-gateway" for key, _ in headers or ()):
                    self.opened.set()
                    backoff.reset()
                    if self.after_kill_ns and not self.reopened_ns:
                        self.reopened_ns = time.monotonic_ns()
                async for message in call:
                    self.record(message)
            except grpc.aio.AioRpcError as exc:
                floor = retry_after(from_rpc_error(exc)) or 0.0
                if self.after_kill_ns and exc.code() != grpc.StatusCode.UNAVAILABLE:
                    name = f"{exc.code().name}: {exc.details()}"  # the first text for each status is reported
                    self.refused[name] = self.refused.get(name, 0) + 1
            await asyncio.sleep(backoff.next(floor))
            self.index = (self.index + 1) % len(self.addresses)

    def record(self, message: pb.Message) -> None:
        if message.conversation and message.offset:
            self.cursors[message.conversation] = pb.Cursor(conversation=message.conversation, offset=message.offset,
                                                           epoch=message.epoch)
        if not self.after_kill_ns:
            return
        if message.kind == pb.SYNCED and not self.synced_ns and self.reopened_ns:
            self.synced_ns = time.monotonic_ns()
        elif message.kind == pb.CHAT and message.body == STORM_BODY and not self.message_ns:
            self.message_ns = time.monotonic_ns()

    def caught_up(self) -> bool:
        return bool(self.message_ns and self.synced_ns)


def storm_process(addresses: list[str], tokens: dict[str, str], pipe: Pipe) -> None:
    raise_open_files_limit()
    asyncio.run(_storm(addresses, tokens, pipe))


async def _storm(addresses: list[str], tokens: dict[str, str], pipe: Pipe) -> None:
    clients = [StormClient(user, token, addresses) for user, token in tokens.items()]
    tasks: list[asyncio.Task[None]] = []
    opening = asyncio.Semaphore(OPENING_IN_FLIGHT)

    async def open_one(client: StormClient) -> None:
        async with opening:
            tasks.append(asyncio.create_task(client.hold()))
            await asyncio.wait_for(client.opened.wait(), timeout=60)

    await asyncio.gather(*(open_one(client) for client in clients))
    pipe.send("ready")
    kill_ns = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    for client in clients:
        client.after_kill_ns = kill_ns
    deadline = time.monotonic() + CAUGHT_UP_TIMEOUT_SECONDS
    progress, last_progress = -1, time.monotonic()
    while time.monotonic() < deadline:
        done = sum(client.caught_up() for client in clients)
        if done == len(clients):
            break
        if done != progress:
            progress, last_progress = done, time.monotonic()
        elif all(client.reopened_ns for client in clients) and time.monotonic() - last_progress > STALLED_SECONDS:
            break  # everyone is back; the rest wait for a message whose send failed (reported)
        await asyncio.sleep(0.05)
    refused: dict[str, int] = {}
    for client in clients:
        for code, count in client.refused.items():
            refused[code] = refused.get(code, 0) + count
    pipe.send({
        "reopened_ns": [client.reopened_ns for client in clients],
        "caught_up_ns": [max(client.message_ns, client.synced_ns) if client.caught_up() else 0 for client in clients],
        "refused": refused,
    })
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        for channel in client.channels.values():
            await channel.close()


# ------------------------------------------------------------------ live traffic between other users
def live_process(address: str, tokens: dict[str, str], rate: float, pipe: Pipe) -> None:
    raise_open_files_limit()
    pipe.send(asyncio.run(_live(address, tokens, rate, pipe)))


async def _live(address: str, tokens: dict[str, str], rate: float, pipe: Pipe) -> dict[str, Any]:
    """Sends at `rate` until the pipe says stop."""
    users = list(tokens)
    senders, receivers = users[:LIVE_PAIRS], users[LIVE_PAIRS:]
    channel = grpc.aio.insecure_channel(address, options=LOCAL_CHANNEL)
    streams = [receive_method(channel)(pb.Message(sender=user), metadata=metadata(tokens[user])) for user in receivers]
    await asyncio.gather(*(stream.initial_metadata() for stream in streams))
    samples: list[tuple[int, float]] = []  # (sent at, monotonic ns; latency, µs)
    errors: dict[str, int] = {}

    async def drain(stream: Any) -> None:
        async for message in stream:
            if message.kind == pb.CHAT:
                stamp = sent_at(message.body)
                samples.append((stamp, (time.monotonic_ns() - stamp) / 1000))

    drains = [asyncio.create_task(drain(stream)) for stream in streams]
    send = send_method(channel)
    pipe.send("ready")
    begin = time.monotonic_ns()
    pending: set[asyncio.Task[None]] = set()

    async def one(number: int) -> None:
        pair = number % LIVE_PAIRS
        message = pb.Message(id=f"live{number}", kind=pb.CHAT, recipient=receivers[pair], body=body(time.monotonic_ns()))
        try:
            await send(message, metadata=metadata(tokens[senders[pair]]), timeout=10)
        except grpc.aio.AioRpcError as exc:
            name = f"{exc.code().name}: {exc.details()}"
            errors[name] = errors.get(name, 0) + 1

    number = 0
    while not pipe.poll():
        due = begin + int(number * 1e9 / rate)
        await asyncio.sleep(max(0.0, (due - time.monotonic_ns()) / 1e9))
        task = asyncio.create_task(one(number))
        pending.add(task)
        task.add_done_callback(pending.discard)
        number += 1
    await asyncio.gather(*pending)
    await asyncio.sleep(1.0)  # late deliveries count
    for task in drains:
        task.cancel()
    await channel.close()
    return {"samples": samples, "sent": number, "errors": errors}


# ------------------------------------------------------------------ the run
async def send_storm_messages(address: str, sender_token: str, recipients: list[str]) -> int:
    """One message to every storm user through the surviving gateway; returns the failed sends."""
    failed = 0
    limit = asyncio.Semaphore(STORM_SENDS_IN_FLIGHT)
    async with grpc.aio.insecure_channel(address, options=LOCAL_CHANNEL) as channel:
        send = send_method(channel)

        async def one(recipient: str) -> None:
            nonlocal failed
            async with limit:
                try:
                    await send(pb.Message(id=f"storm-{recipient}", kind=pb.CHAT, recipient=recipient, body=STORM_BODY),
                               metadata=metadata(sender_token), timeout=30)
                except grpc.aio.AioRpcError as exc:
                    failed += 1
                    print(f"storm send to {recipient}: {exc.code().name}: {exc.details()}", flush=True)

        await asyncio.gather(*(one(recipient) for recipient in recipients))
    return failed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run(streams: int, rate: float, baseline: float, opens: int | None = None) -> dict[str, Any]:
    raise_open_files_limit()
    names = user_names(streams + 2 * LIVE_PAIRS + 1)
    storm_users, live_users, sender = names[:streams], names[streams:-1], names[-1]
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as workdir, SpartanStack(Path(workdir), users=names, gateways=2, settings=(
            {"SPARTAN_GATEWAY__MAX_CONCURRENT_STREAM_OPENS": str(opens)} if opens else {})) as stack:
        secret = stack.env["SPARTAN_AUTH__SERVICE_SECRET"]
        keys = await register_keys(stack.env["SPARTAN_SERVICES__PRESENCE"], names, secret)
        tokens = {user: mint_token(stack.secret, user, keys[user]) for user in names}
        storm_pipe, storm_end = context.Pipe()
        storm = context.Process(target=storm_process, args=(
            [stack.address(1), stack.address(2)], {u: tokens[u] for u in storm_users}, storm_end))
        storm.start()
        if storm_pipe.recv() != "ready":
            raise RuntimeError("the storm's streams did not open")
        live_pipe, live_end = context.Pipe()
        live = context.Process(target=live_process, args=(
            stack.address(2), {u: tokens[u] for u in live_users}, rate, live_end))
        live.start()
        if live_pipe.recv() != "ready":
            raise RuntimeError("the live traffic did not start")
        await asyncio.sleep(baseline)
        survivors = {name: pid for name, pid in stack.pids().items() if name != "gateway-1"}
        meter = CpuMeter(survivors)
        meter.start()
        kill_ns = time.monotonic_ns()
        os.kill(stack.gateway_pid(1), signal.SIGKILL)
        storm_pipe.send(kill_ns)
        failed_sends = await send_storm_messages(stack.address(2), tokens[sender], storm_users)
        outcome = await asyncio.get_running_loop().run_in_executor(None, storm_pipe.recv)
        meter.stop()
        measured_ns = time.monotonic_ns()
        live_pipe.send("stop")
        live_result = await asyncio.get_running_loop().run_in_executor(None, live_pipe.recv)
        storm.join(timeout=30)
        live.join(timeout=30)
    reopened = [ns for ns in outcome["reopened_ns"] if ns]
    caught_up = [ns for ns in outcome["caught_up_ns"] if ns]
    # The storm ends when the last user caught up; with some never caught up (their message failed to
    # send), when the last of the others did: the window the live latency and CPU are read over.
    storm_end_ns = max(caught_up) if caught_up else measured_ns
    before = [lat for stamp, lat in live_result["samples"] if stamp < kill_ns]
    during = [lat for stamp, lat in live_result["samples"] if kill_ns <= stamp < storm_end_ns]
    return {
        "streams": streams,
        "max_concurrent_stream_opens": opens or "config",
        "reopened": len(reopened),
        "all_reopened_s": (max(reopened) - kill_ns) / 1e9 if len(reopened) == streams else None,
        "caught_up": len(caught_up),
        "all_caught_up_s": (max(caught_up) - kill_ns) / 1e9 if len(caught_up) == streams else None,
        "median_caught_up_s": (statistics.median(caught_up) - kill_ns) / 1e9 if caught_up else None,
        "refused_reconnects": outcome["refused"],
        "failed_storm_sends": failed_sends,
        "live_rate": rate,
        "live_before_ms": {"p50": percentile(before, 0.5) / 1000, "p99": percentile(before, 0.99) / 1000,
                           "n": len(before)},
        "live_during_ms": {"p50": percentile(during, 0.5) / 1000, "p99": percentile(during, 0.99) / 1000,
                           "n": len(during)},
        "live_errors": live_result["errors"],
        # Which tier the storm loads: each survivor's CPU from the kill until everyone caught up, in cores.
        "cpu_cores_during_storm": {name: round(used / max((measured_ns - kill_ns) / 1e9, 1e-3), 2)
                                   for name, used in meter.used.items()},
    }


def show(result: dict[str, Any]) -> None:
    def seconds(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else "not all"

    print(f"reconnect storm: {result['streams']} streams on a gateway that is SIGKILLed; "
          f"live traffic {result['live_rate']:.0f} msg/s between other users on the other gateway; "
          f"gateway.max_concurrent_stream_opens {result['max_concurrent_stream_opens']}")
    print(f"  every stream open again      {seconds(result['all_reopened_s'])} s after the kill "
          f"({result['reopened']}/{result['streams']})")
    print(f"  every user caught up         {seconds(result['all_caught_up_s'])} s "
          f"(median {seconds(result['median_caught_up_s'])} s; its message and SYNCED; "
          f"{result['caught_up']}/{result['streams']})")
    print(f"  refused reconnects           {result['refused_reconnects'] or 'none'}; "
          f"failed sends to storm users {result['failed_storm_sends']}")
    before, during = result["live_before_ms"], result["live_during_ms"]
    print(f"  live latency before          p50 {before['p50']:.2f} ms, p99 {before['p99']:.2f} ms ({before['n']} msgs)")
    print(f"  live latency during storm    p50 {during['p50']:.2f} ms, p99 {during['p99']:.2f} ms ({during['n']} msgs); "
          f"errors {result['live_errors'] or 'none'}")
    cores = ", ".join(f"{name} {value:.2f}" for name, value in result["cpu_cores_during_storm"].items())
    print(f"  CPU during the storm (cores) {cores}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000, help="streams on the gateway that dies (default 2000)")
    parser.add_argument("--rate", type=float, default=200.0, help="live messages per second (default 200)")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of live traffic before the kill")
    parser.add_argument("--opens", type=int, help="gateway.max_concurrent_stream_opens (default: config.yaml's)")
    parser.add_argument("--json", help="also write the result to this file")
    arguments = parser.parse_args()
    if arguments.streams < 1 or arguments.rate <= 0 or arguments.baseline <= 0:
        parser.error("--streams, --rate and --baseline must be numbers above zero")
    result = asyncio.run(run(arguments.streams, arguments.rate, arguments.baseline, arguments.opens))
    show(result)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
