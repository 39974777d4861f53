"""`python3 -m bench cluster`: the 1:1 relay on one Redis and on a Redis Cluster of 3 primaries.

The same closed-loop load (N sender/receiver pairs, each sender with `--window` sends in
flight, two gateways, the shipped pipeline of rate check + delivery log + history per
send) runs against a stack on one redis-server, then against a stack on a private
cluster of 3 primaries and 3 replicas, all on this machine's cores. For each it reports
delivered messages per second, latency, and Redis CPU µs per delivered message per
node; for the cluster, how the keys and the live shard channels spread over the
primaries (the history LRU lives in one slot by design: its global capacity is exact).
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench.relay import Endpoint, Plan, pair_users, run_load, spartan_tokens
from bench.stack import PrivateRedisCluster, SpartanStack
from bench.summary import format_table
from spartan.local_redis import LocalRedis, LocalRedisCluster

SENDER_START_SECONDS = 1.5  # run_load gives its sender process this long to start before the warm-up


def spread(cluster: PrivateRedisCluster) -> dict[str, dict[str, int]]:
    """Keys and live shard channels on each primary, by `redis:<port>`."""
    found = {}
    for node in cluster.primaries():
        channels = cluster.cli(node, "PUBSUB", "SHARDCHANNELS")
        found[f"redis:{node.port}"] = {"keys": int(cluster.cli(node, "DBSIZE") or 0),
                                       "channels": len([c for c in channels.strip("[]").split(",") if c.strip()])}
    return found


def replication_check_cost(redis: LocalRedis) -> float:
    """Redis µs per call of the `INFO replication` that `delivery_append.lua` runs on every append to tell
    a promoted replica (commandstats counts commands run by scripts too)."""
    for line in LocalRedisCluster.cli(redis, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_info:"):
            fields = dict(field.split("=") for field in line.split(":", 1)[1].split(","))
            return float(fields["usec_per_call"])
    return 0.0


def measure(plan: Plan, users: list[str], *, cluster: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="spartan-bench-cluster-") as workdir, \
            SpartanStack(Path(workdir), users=users, cluster=cluster) as stack:
        tokens = asyncio.run(spartan_tokens(stack.address(1), users))
        sampled: dict[str, Any] = {}
        sampler = None
        if isinstance(stack.redis, PrivateRedisCluster):  # in the middle of the window, streams open
            redis_cluster = stack.redis
            sampler = threading.Timer(SENDER_START_SECONDS + plan.warmup + plan.seconds / 2,
                                      lambda: sampled.update(spread(redis_cluster)))
            sampler.start()
        result = run_load(Endpoint("spartan", stack.address(1), stack.address(2), tokens), plan, stack.pids())
        if not cluster:
            result["replication_check_us"] = replication_check_cost(stack.redis)
        if sampler is not None:
            sampler.join()
            result["spread"] = sampled
        result["redis_cpu_us"] = {name: us for name, us in result["cpu_us_per_message"].items()
                                  if name.startswith("redis")}
        return result


def print_report(results: dict[str, dict[str, Any]]) -> None:
    rows = []
    for backbone, result in results.items():
        latency = result.get("latency_ms") or {}
        per_node = result["redis_cpu_us"]
        rows.append([backbone, f"{result['delivered_per_s']:.0f}", f"{latency.get('p50', 0):.2f}",
                     f"{latency.get('p99', 0):.2f}",
                     " ".join(f"{code}:{n}" for code, n in result["errors_by_code"].items()) or "0",
                     f"{sum(per_node.values()):.1f}",
                     " ".join(f"{us:.1f}" for us in sorted(per_node.values(), reverse=True))])
    print(format_table(["backbone", "delivered/s", "p50 ms", "p99 ms", "errors", "Redis CPU µs/msg",
                        "per node (busiest first)"], rows))
    check = results.get("single", {}).get("replication_check_us")
    if check is not None:
        print(f"of which the failover check (INFO replication in delivery_append.lua): {check:.2f} µs per message")
    cluster = results.get("cluster", {}).get("spread")
    if cluster:
        print(format_table(["primary", "keys", "shard channels"],
                           [[node, str(c["keys"]), str(c["channels"])] for node, c in sorted(cluster.items())]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--window", type=int, default=2, help="sends in flight per sender")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    users, senders, receivers = pair_users(args.pairs)
    plan = Plan(senders, receivers, window=args.window, warmup=args.warmup, seconds=args.seconds)
    results = {}
    for backbone in ("single", "cluster"):
        print(f"relay on {'a 3-primary Redis Cluster' if backbone == 'cluster' else 'one Redis'}: "
              f"{args.pairs} pairs, window {args.window}, {args.seconds:.0f} s ...", flush=True)
        results[backbone] = measure(plan, users, cluster=backbone == "cluster")
    print_report(results)


if __name__ == "__main__":
    main()
