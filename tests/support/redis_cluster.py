"""A private Redis Cluster for tests: 3 primaries and 3 replicas on free loopback ports.

`spartan.local_redis.LocalRedisCluster` (what the benchmarks use too), in a scratch folder,
with what tests ask of it: which node serves a key, emptying it between tests. Tests may
SIGKILL any node: its replica takes over within about `NODE_TIMEOUT_MS` and an election.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from spartan.local_redis import LocalRedis, LocalRedisCluster

NODE_TIMEOUT_MS = 2000  # how long a primary may be unreachable before its replica is promoted


class RedisCluster(LocalRedisCluster):
    def __init__(self, primaries: int = 3, replicas_each: int = 1) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="spartan-cluster-")), primaries=primaries,
                         replicas_each=replicas_each, node_timeout_ms=NODE_TIMEOUT_MS)

    def primary_of(self, key: str) -> LocalRedis:
        """The node that holds `key`'s slot now."""
        slot = int(self.cli(self.nodes[0], "CLUSTER", "KEYSLOT", key))
        for node in self.primaries():
            for line in self.cli(node, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "myself" in fields[2]:
                    for served in fields[8:]:
                        start, _, end = served.partition("-")
                        if start.isdigit() and int(start) <= slot <= int(end or start):
                            return node
        raise LookupError(f"no node serves the slot of {key}")

    def flush(self) -> None:
        for node in self.primaries():
            self.cli(node, "FLUSHALL")

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
