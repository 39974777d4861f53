"""Connection capacity: idle `ReceiveMsg` streams one gateway holds, their RSS, and round trips meanwhile.

    python3 -m bench capacity [--levels 1000,5000,10000] [--per-channel 100]

One gateway (with presence, history and Redis) is configured with as many users as
streams (`SPARTAN_USERS`, names u00000...). A client process opens one stream per
user, `per-channel` streams multiplexed on each HTTP/2 connection, in steps up to
each level; at each level it reads the gateway's VmRSS and times round trips
(SendMsg from one probe user to another probe user's open stream). Stream tokens are
minted with the stack's secret exactly as `Login` issues them: a real first login
registers keys and publishes a key update to every open stream, which at 10k users
would measure that fan-out instead of idle streams (a sample of real logins is timed
separately). Also reported: what a 10k-user list costs in config loading and in the
presence `ListUsers` call every stream open makes.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import grpc

from bench.relay import LOCAL_CHANNEL, Log, body, sent_at
from bench.stack import (SPARTAN_RECEIVE, SPARTAN_SEND, SpartanStack, login_token, mint_token,
                         raise_open_files_limit, register_keys, rss_kib, user_names)
from spartan.v1 import pb

PROBES = 20
OPENING_IN_FLIGHT = 32  # opens awaiting their initial metadata at once
OPEN_ATTEMPTS = 5  # a refused open is retried with backoff, as the client's receiver does
SETTLE_SECONDS = 2.0
REAL_LOGINS = 5
EXTRA_USERS = 2 + REAL_LOGINS  # two probe users, then users that log in for real


class StreamPool:
    """Idle streams, `per_channel` to a connection; keeps every call object alive."""

    def __init__(self, address: str, secret: str, keys: dict[str, bytes], per_channel: int) -> None:
        self.address = address
        self.secret = secret
        self.keys = keys
        self.per_channel = per_channel
        self.channels: list[grpc.aio.Channel] = []
        self.calls: list[Any] = []
        self.failures: list[str] = []

    def _method(self) -> Any:
        if not self.channels or len(self.calls) >= len(self.channels) * self.per_channel:
            self.channels.append(grpc.aio.insecure_channel(self.address, options=[
                *LOCAL_CHANNEL, ("grpc.max_concurrent_streams", self.per_channel)]))
        return self.channels[-1].unary_stream(SPARTAN_RECEIVE, request_serializer=pb.Message.SerializeToString,
                                              response_deserializer=pb.Message.FromString)

    async def open(self, users: list[str]) -> None:
        """Open one stream per user entry, `OPENING_IN_FLIGHT` at a time, retrying refused opens like a client."""
        limit = asyncio.Semaphore(OPENING_IN_FLIGHT)

        async def one(user: str) -> None:
            async with limit:
                for attempt in range(OPEN_ATTEMPTS):
                    call = self._method()(pb.Message(sender=user), metadata=auth(self.secret, user, self.keys))
                    try:
                        await asyncio.wait_for(call.initial_metadata(), 60)
                    except asyncio.TimeoutError:
                        call.cancel()
                        self.failures.append("no initial metadata within 60 s")
                        continue
                    if not call.done():  # initial_metadata() also returns when the call ended with an error
                        self.calls.append(call)
                        return
                    self.failures.append(f"{(await call.code()).name}: {await call.details()}")
                    await asyncio.sleep(0.2 * (attempt + 1))

        await asyncio.gather(*(one(user) for user in users))

    def open_count(self) -> int:
        """Streams still open (a stream the gateway ended is done)."""
        return sum(1 for call in self.calls if not call.done())

    async def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            await channel.close()


def summarize_failures(failures: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for failure in failures:
        counts[failure[:160]] = counts.get(failure[:160], 0) + 1
    return counts


def auth(secret: str, user: str, keys: dict[str, bytes]) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint_token(secret, user, keys[user])}"),)


async def round_trips(address: str, secret: str, keys: dict[str, bytes], sender: str, receiver: str,
                      count: int) -> list[float]:
    """Milliseconds from SendMsg to arrival on the receiver's stream, one message at a time."""
    async with grpc.aio.insecure_channel(address, options=LOCAL_CHANNEL) as channel:
        stream = channel.unary_stream(SPARTAN_RECEIVE, request_serializer=pb.Message.SerializeToString,
                                      response_deserializer=pb.Message.FromString)(
            pb.Message(sender=receiver), metadata=auth(secret, receiver, keys))
        await stream.initial_metadata()
        send = channel.unary_unary(SPARTAN_SEND, request_serializer=pb.Message.SerializeToString,
                                   response_deserializer=pb.SendAck.FromString)
        sender_auth = auth(secret, sender, keys)
        results: list[float] = []
        incoming = stream.__aiter__()
        for number in range(count):
            message = pb.Message(id=f"probe-{time.monotonic_ns()}-{number}", kind=pb.CHAT, recipient=receiver,
                                 body=body(time.monotonic_ns()))
            await send(message, metadata=sender_auth, timeout=10)
            while True:
                arrived = await asyncio.wait_for(incoming.__anext__(), 10)
                if arrived.kind == pb.CHAT and arrived.id == message.id:
                    results.append((time.monotonic_ns() - sent_at(arrived.body)) / 1e6)
                    break
        stream.cancel()
        return results


def rtt_summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": statistics.median(ordered), "max": ordered[-1], "min": ordered[0]}


async def _probe_limits(address: str, secret: str, keys: dict[str, bytes], users: list[str]) -> dict[str, Any]:
    """Streams accepted on ONE connection without a client-side cap: does the server limit them?"""
    async with grpc.aio.insecure_channel(address, options=LOCAL_CHANNEL) as channel:
        method = channel.unary_stream(SPARTAN_RECEIVE, request_serializer=pb.Message.SerializeToString,
                                      response_deserializer=pb.Message.FromString)
        calls = [method(pb.Message(sender=user), metadata=auth(secret, user, keys)) for user in users]
        await asyncio.wait([asyncio.create_task(c.initial_metadata()) for c in calls], timeout=30)
        opened = sum(1 for call in calls if not call.done())
        for call in calls:
            call.cancel()
    return {"tried_on_one_connection": len(users), "opened_on_one_connection": opened}


async def _client(address: str, secret: str, keys: dict[str, bytes], gateway_pid: int, levels: list[int],
                  per_channel: int, user_count: int, pipe: Pipe) -> dict[str, Any]:
    users = user_names(user_count + EXTRA_USERS)
    probe_sender, probe_receiver = users[user_count:user_count + 2]
    stream_users = [users[i % user_count] for i in range(max(levels))]
    result: dict[str, Any] = {"per_channel": per_channel, "levels": [], "users": user_count,
                              "streams_per_user": max(levels) / user_count}
    result["server_stream_limit"] = await _probe_limits(address, secret, keys, stream_users[:300])
    await asyncio.sleep(SETTLE_SECONDS)
    baseline_rtt = await round_trips(address, secret, keys, probe_sender, probe_receiver, PROBES)
    baseline_rss = rss_kib(gateway_pid)
    result["baseline"] = {"rss_kib": baseline_rss, "round_trip_ms": rtt_summary(baseline_rtt)}
    pipe.send(f"capacity: baseline RSS {baseline_rss / 1024:.1f} MiB, round trip p50 "
              f"{statistics.median(baseline_rtt):.2f} ms")
    pool = StreamPool(address, secret, keys, per_channel)
    try:
        for level in levels:
            started = time.monotonic()
            await pool.open(stream_users[pool.open_count():level])
            opening = time.monotonic() - started
            await asyncio.sleep(SETTLE_SECONDS)
            rss = rss_kib(gateway_pid)
            rtt = await round_trips(address, secret, keys, probe_sender, probe_receiver, PROBES)
            streams = pool.open_count()
            row = {"streams": streams, "refused_opens": len(pool.failures), "connections": len(pool.channels),
                   "rss_kib": rss, "rss_per_stream_kib": (rss - baseline_rss) / max(1, streams),
                   "open_seconds": opening, "opens_per_s": (streams - (result["levels"][-1]["streams"]
                                                                       if result["levels"] else 0)) / opening,
                   "round_trip_ms": rtt_summary(rtt)}
            result["levels"].append(row)
            pipe.send(f"capacity: {streams} streams on {len(pool.channels)} connections, "
                      f"RSS {rss / 1024:.1f} MiB ({row['rss_per_stream_kib']:.1f} KiB/stream), opened at "
                      f"{row['opens_per_s']:.0f}/s, round trip p50 {row['round_trip_ms']['p50']:.2f} ms "
                      f"max {row['round_trip_ms']['max']:.2f} ms, refused opens so far {len(pool.failures)}")
    finally:
        await pool.close()
    result["failures"] = summarize_failures(pool.failures)
    return result


def client_process(address: str, secret: str, keys: dict[str, bytes], gateway_pid: int, levels: list[int],
                   per_channel: int, user_count: int, pipe: Pipe) -> None:
    raise_open_files_limit()
    pipe.send({"result": asyncio.run(_client(address, secret, keys, gateway_pid, levels, per_channel, user_count,
                                             pipe))})


async def user_list_costs(stack: SpartanStack, users: list[str]) -> dict[str, Any]:
    """What the configured user list costs: config parsing, ListUsers, and a real login."""
    from spartan.config import load_config

    environment = {**stack.env}
    started = time.perf_counter()
    load_config(env=environment)
    config_ms = (time.perf_counter() - started) * 1000
    address = stack.address(1)
    login_started = time.perf_counter()
    logins = REAL_LOGINS
    tokens = [await login_token(address, user) for user in users[-logins:]]
    login_ms = (time.perf_counter() - login_started) * 1000 / logins
    async with grpc.aio.insecure_channel(address) as channel:
        list_users = channel.unary_unary("/spartan.v1.Spartan/ListUsers",
                                         request_serializer=pb.ListUsersRequest.SerializeToString,
                                         response_deserializer=bytes)
        metadata = (("authorization", f"Bearer {tokens[0]}"),)
        await list_users(pb.ListUsersRequest(), metadata=metadata)
        samples = []
        for _ in range(10):
            began = time.perf_counter()
            reply = await list_users(pb.ListUsersRequest(), metadata=metadata)
            samples.append((time.perf_counter() - began) * 1000)
    return {"users": len(users), "env_bytes": len(environment["SPARTAN_USERS"]), "load_config_ms": config_ms,
            "list_users_ms_p50": statistics.median(samples), "list_users_reply_bytes": len(reply),
            "real_login_ms": login_ms, "presence_rss_kib": rss_kib(stack.processes.pid("presence"))}


def run(*, levels: list[int] | None = None, per_channel: int = 100, users: int = 0,
        log: Log = print) -> dict[str, Any]:
    """`users`: configured users (default one per stream); fewer gives each user several streams (devices)."""
    levels = sorted(levels or [1000, 5000, 10000])
    user_count = users or max(levels)
    raise_open_files_limit()
    users_list = user_names(user_count + EXTRA_USERS)  # streams, 2 probes, then real logins
    with tempfile.TemporaryDirectory(prefix="spartan-bench-") as workdir:
        settings = {"SPARTAN_GATEWAY__MAX_STREAMS": str(max(levels) + 100)}
        with SpartanStack(Path(workdir), users=users_list, gateways=1, settings=settings) as stack:
            costs = asyncio.run(user_list_costs(stack, users_list))
            log(f"capacity: {len(users_list)} users: config load {costs['load_config_ms']:.0f} ms, ListUsers "
                f"{costs['list_users_ms_p50']:.1f} ms ({costs['list_users_reply_bytes']} B), "
                f"real login {costs['real_login_ms']:.1f} ms")
            started = time.monotonic()
            keys = asyncio.run(register_keys(stack.env["SPARTAN_SERVICES__PRESENCE"],
                                                users_list[:user_count + 2],
                                                stack.env["SPARTAN_AUTH__SERVICE_SECRET"]))
            costs["register_keys_seconds"] = time.monotonic() - started
            log(f"capacity: registered key pairs of {len(keys)} users in {costs['register_keys_seconds']:.1f} s")
            context = multiprocessing.get_context("spawn")
            parent_end, child_end = context.Pipe()
            client = context.Process(target=client_process, daemon=True, args=(
                stack.address(1), stack.secret, keys, stack.gateway_pid(1), levels, per_channel, user_count, child_end))
            client.start()
            quiet_since = time.monotonic()
            while True:
                if not parent_end.poll(1):
                    if not client.is_alive():
                        raise RuntimeError(f"capacity client exited with code {client.exitcode} (traceback above)")
                    if time.monotonic() - quiet_since > 600:
                        client.kill()
                        raise RuntimeError("capacity client reported nothing for 10 minutes")
                    continue
                quiet_since = time.monotonic()
                item = parent_end.recv()
                if isinstance(item, dict):
                    result: dict[str, Any] = item["result"]
                    break
                log(item)
            client.join(30)
            result["gateway_log_tail"] = stack.processes.log("gateway-1")[-1500:]
    result["user_list"] = costs
    result["open_files_limit"] = raise_open_files_limit()
    result["cpu_count"] = os.cpu_count()
    return result
