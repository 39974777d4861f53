"""Delivery latency at a fixed offered load across two replicas: p50 / p99 / p999.

    python3 -m bench latency [--rate 1000] [--seconds 10] [--pairs 10]

An open-loop sender process fires SendMsg calls at a constant total rate (spread
over `pairs` senders, without waiting for earlier acks) at replica A; receivers
hold their streams on replica B. Latency is send time to receive time in the
benchmark processes (system-wide monotonic clock, time stamp in the 64-byte,
unencrypted body). The same schedule runs against the raw relay bound, rounds
interleaved; a send that starts over 1 ms behind schedule counts as late (the load
generator itself could not keep up, which inflates latency).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.relay import Log, Plan, pair_users, run_both


def run(*, rate: float = 1000.0, seconds: float = 10.0, pairs: int = 10, warmup: float = 1.0, rounds: int = 3,
        tail: float = 1.5, profile_dir: Path | None = None, log: Log = print) -> dict[str, Any]:
    users, senders, receivers = pair_users(pairs)
    plan = Plan(senders, receivers, rate=rate, warmup=warmup, seconds=seconds, tail=tail)
    results = run_both(plan, users, log, "latency", rounds=rounds, profile_dir=profile_dir)
    results["offered_per_s"] = rate
    return results
