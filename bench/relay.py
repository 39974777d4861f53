"""Relay throughput: P sender→receiver pairs across two replicas, Spartan against the raw bound.

    python3 -m bench relay [--pairs 50] [--window 2] [--seconds 8] [--profile]

Senders talk to replica A, receivers hold `ReceiveMsg` streams on replica B, so
every message crosses Redis pub/sub. Load generators run in their own processes
(one sender process, one receiver process; the parent only orchestrates). Each
sender keeps `window` SendMsg calls in flight (closed loop), so the number is the
most the stack delivers, and the delivery latency is measured from send to receive
with the system-wide monotonic clock (the send time travels in the 64-byte body;
the server never looks inside bodies, so bodies are not encrypted: E2E costs 0.14-0.65 ms
of client CPU per message, which would measure the clients, not the server).
The same load runs against two raw relay processes (`bench.raw_relay`), rounds
interleaved with Spartan's, and Spartan's throughput is reported as a ratio of it.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import grpc

from bench.cpu import CpuMeter
from bench.raw_relay import RAW_RECEIVE, RAW_SEND, RawStack
from bench.stack import (SPARTAN_RECEIVE, SPARTAN_SEND, ServiceStack, SpartanStack, login_token,
                         raise_open_files_limit, user_names)
from bench.summary import percentile
from spartan.v1 import pb

BODY_BYTES = 64
CDF_POINTS = 400
LOCAL_CHANNEL = [("grpc.use_local_subchannel_pool", 1)]
Log = Callable[[str], None]


@dataclass(frozen=True)
class Endpoint:
    """Where and how the load generators send and receive (picklable for spawned processes)."""

    kind: str  # "spartan" | "raw"
    send_address: str
    receive_address: str
    tokens: dict[str, str] = field(default_factory=dict)  # user -> session token (Spartan only)

    @property
    def send_path(self) -> str:
        return SPARTAN_SEND if self.kind == "spartan" else RAW_SEND

    @property
    def receive_path(self) -> str:
        return SPARTAN_RECEIVE if self.kind == "spartan" else RAW_RECEIVE

    def metadata(self, user: str) -> tuple[tuple[str, str], ...]:
        token = self.tokens.get(user)
        return (("authorization", f"Bearer {token}"),) if token else ()


@dataclass(frozen=True)
class Plan:
    """One load run: who sends to whom, how (closed loop with a window, or a fixed rate), and when."""

    senders: list[str]
    receivers: list[str]
    window: int = 1  # closed loop: calls in flight per sender
    rate: float = 0.0  # > 0: open loop at this many messages/s in total
    warmup: float = 1.0
    seconds: float = 5.0
    tail: float = 1.5  # how long receivers keep listening after the last send


def body(now_ns: int) -> bytes:
    return struct.pack(">q", now_ns).ljust(BODY_BYTES, b"x")


def sent_at(message_body: bytes) -> int:
    return struct.unpack_from(">q", message_body)[0]


# ----------------------------------------------------------- load processes
def receiver_process(endpoint: Endpoint, users: list[str], pipe: Pipe) -> None:
    raise_open_files_limit()
    asyncio.run(_receive(endpoint, users, pipe))


async def _receive(endpoint: Endpoint, users: list[str], pipe: Pipe) -> None:
    channels = [grpc.aio.insecure_channel(endpoint.receive_address, options=LOCAL_CHANNEL) for _ in users]
    calls = []
    for channel, user in zip(channels, users):
        method = channel.unary_stream(endpoint.receive_path, request_serializer=pb.Message.SerializeToString,
                                      response_deserializer=pb.Message.FromString)
        calls.append(method(pb.Message(sender=user), metadata=endpoint.metadata(user)))
    await asyncio.gather(*(call.initial_metadata() for call in calls))
    ended = [f"{(await call.code()).name}: {await call.details()}" for call in calls if call.done()]
    if ended:
        pipe.send(f"{len(ended)} streams ended at once, e.g. {ended[0]}")
        return
    pipe.send("ready")
    start_ns, end_ns, tail = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    latencies_us: list[float] = []

    async def drain(call: Any) -> None:
        async for message in call:
            if message.kind != pb.CHAT:
                continue
            stamp = sent_at(message.body)
            if start_ns <= stamp < end_ns:
                latencies_us.append((time.monotonic_ns() - stamp) / 1000)

    tasks = [asyncio.create_task(drain(call)) for call in calls]
    await asyncio.sleep(max(0.0, (end_ns - time.monotonic_ns()) / 1e9) + tail)  # late deliveries count
    for call in calls:
        call.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    pipe.send(latencies_us)


def sender_process(endpoint: Endpoint, plan: Plan, begin_ns: int, pipe: Pipe) -> None:
    raise_open_files_limit()
    pipe.send(asyncio.run(_send(endpoint, plan, begin_ns)))


async def _send(endpoint: Endpoint, plan: Plan, begin_ns: int) -> dict[str, Any]:
    channels = [grpc.aio.insecure_channel(endpoint.send_address, options=LOCAL_CHANNEL) for _ in plan.senders]
    methods = [channel.unary_unary(endpoint.send_path, request_serializer=pb.Message.SerializeToString,
                                   response_deserializer=pb.SendAck.FromString) for channel in channels]
    window_ns = int(plan.warmup * 1e9)
    end_ns = begin_ns + window_ns + int(plan.seconds * 1e9)
    counts = {"sent_in_window": 0, "errors": 0, "late_sends": 0}
    details: dict[str, str] = {}  # the first error text for each status code
    sequence = 0

    async def send_one(index: int) -> None:
        nonlocal sequence
        sequence += 1
        now = time.monotonic_ns()
        message = pb.Message(id=f"m{sequence}", kind=pb.CHAT, recipient=plan.receivers[index], body=body(now))
        try:
            await methods[index](message, metadata=endpoint.metadata(plan.senders[index]), timeout=10)
        except grpc.aio.AioRpcError as error:
            counts["errors"] += 1
            code = f"error:{error.code().name}"
            counts[code] = counts.get(code, 0) + 1
            details.setdefault(error.code().name, error.details() or "")
            return
        if begin_ns + window_ns <= now < end_ns:  # the receivers count the same window
            counts["sent_in_window"] += 1

    async def closed_loop(index: int) -> None:
        while time.monotonic_ns() < end_ns:
            await send_one(index)

    async def open_loop() -> None:
        interval_ns = 1e9 / plan.rate
        pending: set[asyncio.Task[None]] = set()
        number = 0
        while True:
            due = begin_ns + int(number * interval_ns)
            if due >= end_ns:
                break
            delay = (due - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.001:
                counts["late_sends"] += 1
            task = asyncio.create_task(send_one(number % len(plan.senders)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            number += 1
        await asyncio.gather(*pending)

    await asyncio.sleep(max(0.0, (begin_ns - time.monotonic_ns()) / 1e9))
    if plan.rate > 0:
        await open_loop()
    else:
        await asyncio.gather(*(closed_loop(i) for i in range(len(plan.senders)) for _ in range(plan.window)))
    for channel in channels:
        await channel.close()
    return {**{key: float(value) for key, value in counts.items()}, "error_details": details}


# ------------------------------------------------------------ orchestration
def run_load(endpoint: Endpoint, plan: Plan, stack_pids: dict[str, int] | None = None,
             profile_pids: dict[str, int] | None = None, profile_dir: Path | None = None) -> dict[str, Any]:
    """Run one plan with a receiver and a sender process; returns throughput, latency and
    CPU µs per delivered message of each process (the stack's and the load generators')."""
    context = multiprocessing.get_context("spawn")
    receiver_end, receiver_pipe = context.Pipe()
    receiver = context.Process(target=receiver_process, args=(endpoint, plan.receivers, receiver_pipe), daemon=True)
    receiver.start()
    answer = receiver_end.recv() if receiver_end.poll(60) else "no answer within 60 s"
    if answer != "ready":
        receiver.kill()
        raise RuntimeError(f"receivers did not connect: {answer}")
    begin_ns = time.monotonic_ns() + 1_500_000_000  # time for the sender process to start
    window_start = begin_ns + int(plan.warmup * 1e9)
    window_end = window_start + int(plan.seconds * 1e9)
    receiver_end.send((window_start, window_end, plan.tail))
    sender_end, sender_pipe = context.Pipe()
    sender = context.Process(target=sender_process, args=(endpoint, plan, begin_ns, sender_pipe), daemon=True)
    sender.start()
    meter = CpuMeter({**(stack_pids or {}), "load-sender": sender.pid, "load-receiver": receiver.pid})
    time.sleep(max(0.0, (window_start - time.monotonic_ns()) / 1e9))
    meter.start()
    profilers = start_profilers(profile_pids or {}, profile_dir, plan.seconds)
    time.sleep(max(0.0, (window_end - time.monotonic_ns()) / 1e9))
    meter.stop()
    counts = sender_end.recv()
    latencies = receiver_end.recv()
    sender.join(10)
    receiver.join(10)
    profiles = {name: finish_profiler(process, path) for name, (process, path) in profilers.items()}
    result = summarize(latencies, plan.seconds)
    result.update({"sent_in_window": int(counts["sent_in_window"]), "errors": int(counts["errors"]),
                   "errors_by_code": {key[6:]: int(value) for key, value in counts.items() if key.startswith("error:")},
                   "error_details": counts["error_details"],
                   "late_sends": int(counts["late_sends"]), "pairs": len(plan.senders), "window": plan.window,
                   "offered_per_s": plan.rate or None, "seconds": plan.seconds})
    result["lost_or_late"] = max(0, result["sent_in_window"] - result["delivered"])
    result["cpu_us_per_message"] = meter.per_message(result["delivered"])
    if profiles:
        result["profile"] = profiles
    return result


def summarize(latencies_us: list[float], seconds: float) -> dict[str, Any]:
    ordered = sorted(latencies_us)
    if not ordered:
        return {"delivered": 0, "delivered_per_s": 0.0, "latency_ms": {}, "cdf_ms": []}

    step = max(1, len(ordered) // CDF_POINTS)
    return {
        "delivered": len(ordered),
        "delivered_per_s": len(ordered) / seconds,
        "latency_ms": {"p50": percentile(ordered, 0.50) / 1000, "p99": percentile(ordered, 0.99) / 1000,
                       "p999": percentile(ordered, 0.999) / 1000,
                       "max": ordered[-1] / 1000, "mean": statistics.fmean(ordered) / 1000},
        "cdf_ms": [round(value / 1000, 4) for value in ordered[::step]] + [round(ordered[-1] / 1000, 4)],
    }


def start_profilers(pids: dict[str, int], directory: Path | None,
                    seconds: float) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    """py-spy (sampling, non-blocking) on each service process for the next `seconds`."""
    if not pids or directory is None or shutil.which("py-spy") is None:
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    started = {}
    for name, pid in pids.items():
        path = directory / f"profile-{name}.txt"
        args = ["py-spy", "record", "--nonblocking", "--format", "raw", "--rate", "200",
                "--duration", str(max(1, int(seconds))), "--pid", str(pid), "--output", str(path)]
        started[name] = (subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path)
    return started


def finish_profiler(process: subprocess.Popen[bytes], path: Path, top: int = 15) -> dict[str, Any]:
    """Shares of samples from py-spy's collapsed stacks: inclusive for the project's and redis-py's
    functions (where the time goes), self time for every innermost frame (what burns it)."""
    process.wait(30)
    if not path.exists():
        return {"error": "py-spy wrote nothing (is ptrace allowed?)"}
    inclusive: dict[str, int] = {}
    self_samples: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [frame.rsplit(":", 1)[0] + ")" if " (" in frame else frame for frame in stack.split(";")]
        for frame in set(frames):
            if any(part in frame for part in INTERESTING_FRAMES) and not frame.startswith(ENTRY_FRAMES):
                inclusive[frame] = inclusive.get(frame, 0) + count
        self_samples[stack.rsplit(";", 1)[-1]] = self_samples.get(stack.rsplit(";", 1)[-1], 0) + count

    def ranked(counts: dict[str, int]) -> list[dict[str, Any]]:
        best = sorted(counts.items(), key=lambda item: -item[1])[:top]
        return [{"frame": frame, "share": round(count / total, 4)} for frame, count in best]

    return {"file": path.name, "samples": total, "inclusive_share": ranked(inclusive),
            "self_share": ranked(self_samples)}


INTERESTING_FRAMES = ("services/", "spartan/", "redis/", "prometheus_client/", "hmac.py")
ENTRY_FRAMES = ("main ", "<module> ", "main.<locals>", "run_service ")  # the whole process: no information


# ----------------------------------------------------------------- workload
def pair_users(pairs: int) -> tuple[list[str], list[str], list[str]]:
    users = user_names(2 * pairs)
    return users, users[:pairs], users[pairs:]


async def spartan_tokens(address: str, users: list[str]) -> dict[str, str]:
    """Real logins (challenge, signature, first-login key registration), a few at a time."""
    tokens: dict[str, str] = {}
    limit = asyncio.Semaphore(16)

    async def one(user: str) -> None:
        async with limit:
            tokens[user] = await login_token(address, user)

    await asyncio.gather(*(one(user) for user in users))
    return tokens


def run_both(plan: Plan, users: list[str], log: Log, label: str, *, rounds: int = 3,
             profile_dir: Path | None = None, settings: dict[str, str] | None = None) -> dict[str, Any]:
    """The same plan against the raw relay and Spartan, alternating for `rounds` rounds.

    Both stacks stay up for the whole comparison and the rounds interleave, so load
    from anything else on the machine hits both about equally; each side reports its
    best round (the one least disturbed) and lists every round's rate.
    """
    runs: dict[str, list[dict[str, Any]]] = {"raw": [], "spartan": []}
    with tempfile.TemporaryDirectory(prefix="spartan-bench-") as workdir:
        with RawStack(Path(workdir) / "raw") as raw, \
                SpartanStack(Path(workdir) / "spartan", users=users, settings=settings) as stack:
            tokens = asyncio.run(spartan_tokens(stack.address(1), users))
            endpoints = {"raw": Endpoint("raw", raw.address(1), raw.address(2)),
                         "spartan": Endpoint("spartan", stack.address(1), stack.address(2), tokens)}
            pids = {"gateway-send": stack.gateway_pid(1), "gateway-receive": stack.gateway_pid(2)}
            stacks: dict[str, ServiceStack] = {"raw": raw, "spartan": stack}
            for number in range(1, rounds + 1):
                for kind, endpoint in endpoints.items():
                    profiling = profile_dir if kind == "spartan" and number == rounds else None
                    log(f"{label}: {kind} round {number}/{rounds}, {len(plan.senders)} pairs"
                        f"{' (profiled)' if profiling else ''} ...")
                    result = run_load(endpoint, plan, stacks[kind].pids(), pids if profiling else None, profiling)
                    runs[kind].append(result)
                    log(f"{label}: {kind} round {number}: {describe(result)}")
    results: dict[str, Any] = {}
    for kind, kind_runs in runs.items():
        unprofiled = [r for r in kind_runs if "profile" not in r] or kind_runs
        best = dict(min(unprofiled, key=rank) if plan.rate else max(unprofiled, key=lambda r: r["delivered_per_s"]))
        best["rounds_per_s"] = [round(r["delivered_per_s"], 1) for r in kind_runs]
        best["rounds_p99_ms"] = [round((r.get("latency_ms") or {}).get("p99", 0.0), 3) for r in kind_runs]
        profiled = [r["profile"] for r in kind_runs if "profile" in r]
        if profiled:
            best["profile"] = profiled[-1]
        results[kind] = best
    raw_rate = results["raw"]["delivered_per_s"]
    results["ratio_to_raw"] = results["spartan"]["delivered_per_s"] / raw_rate if raw_rate else None
    return results


def rank(result: dict[str, Any]) -> float:
    """Fixed-rate rounds: the least disturbed is the one with the lowest p99."""
    return (result.get("latency_ms") or {}).get("p99", float("inf"))


def describe(result: dict[str, Any]) -> str:
    latency = result.get("latency_ms") or {}
    return (f"{result['delivered_per_s']:.0f} msg/s delivered, p50 {latency.get('p50', float('nan')):.2f} ms, "
            f"p99 {latency.get('p99', float('nan')):.2f} ms, errors {result['errors']}"
            f"{' ' + str(result['errors_by_code']) if result.get('errors_by_code') else ''}")


def run(*, pairs: int = 50, window: int = 2, seconds: float = 8.0, warmup: float = 2.0, rounds: int = 3,
        tail: float = 1.5, profile_dir: Path | None = None, log: Log = print) -> dict[str, Any]:
    users, senders, receivers = pair_users(pairs)
    plan = Plan(senders, receivers, window=window, warmup=warmup, seconds=seconds, tail=tail)
    return run_both(plan, users, log, "relay", rounds=rounds, profile_dir=profile_dir)


def run_raw_only(*, pairs: int = 50, window: int = 2, seconds: float = 8.0, warmup: float = 2.0,
                 tail: float = 1.5, log: Log = print) -> dict[str, Any]:
    """The raw relay bound alone (what `relay` measures first), e.g. to check a machine."""
    _, senders, receivers = pair_users(pairs)
    plan = Plan(senders, receivers, window=window, warmup=warmup, seconds=seconds, tail=tail)
    with tempfile.TemporaryDirectory(prefix="spartan-bench-") as workdir, RawStack(Path(workdir)) as raw:
        log(f"raw_relay: {pairs} pairs ...")
        result = run_load(Endpoint("raw", raw.address(1), raw.address(2)), plan, raw.pids())
        log(f"raw_relay: {describe(result)}")
    return result
