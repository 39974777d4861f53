"""A private Redis Cluster for tests: 3 primaries and 3 replicas on free loopback ports.

Each node is a `RedisServer` started with `--cluster-enabled yes`; `redis-cli --cluster
create` assigns the 16384 slots and pairs each primary with a replica, exactly as an
operator builds one. Tests may SIGKILL any node.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from redis import Redis

from tests.support.ports import free_port
from tests.support.redis_server import RedisServer

NODE_TIMEOUT_MS = 2000  # how long a primary may be unreachable before its replica is promoted


class RedisCluster:
    def __init__(self, primaries: int = 3, replicas_each: int = 1) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="spartan-cluster-"))
        self.replicas_each = replicas_each
        self.nodes: list[RedisServer] = []
        for index in range(primaries * (1 + replicas_each)):
            node = RedisServer(directory=self.directory / f"node{index}")
            node.extra = ("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{node.port}.conf",
                          "--cluster-port", str(free_port()),  # not port + 10000, which may be taken
                          "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                          # A replica may take over however long ago it last heard from its primary
                          # (the default refuses one whose link broke long ago: a test's machine may be slow).
                          "--cluster-replica-validity-factor", "0")
            self.nodes.append(node)

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.nodes]

    @property
    def url(self) -> str:
        """What the `redis.url` setting names: every node, so any one of them can be down at start."""
        return "redis+cluster://" + ",".join(self.addresses)

    def start(self, timeout: float = 30.0) -> "RedisCluster":
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(["redis-cli", "--cluster", "create", *self.addresses, "--cluster-replicas",
                            str(self.replicas_each), "--cluster-yes"], check=True, capture_output=True,
                           timeout=timeout)
            self.wait_ok(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is whole and every replica has synced."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._node_ok(node) for node in self.nodes if node.alive()):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Redis Cluster in {self.directory} was not ok within {timeout}s")

    def _node_ok(self, node: RedisServer) -> bool:
        """The node sees a whole cluster and, if it is a replica, has its primary's data (a replica still
        in its first sync that is promoted would come up empty)."""
        with Redis(port=node.port, socket_timeout=1) as client:
            info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            replication = client.info("replication")
            synced = replication["role"] == "master" or replication.get("master_link_status") == "up"
            return "cluster_state:ok" in text and synced

    def primary_of(self, key: str) -> RedisServer:
        """The node that holds `key`'s slot now."""
        with Redis(port=self.nodes[0].port, socket_timeout=1) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no node serves the slot of {key}")

    def flush(self) -> None:
        for node in self.nodes:
            if node.alive():
                with Redis(port=node.port, socket_timeout=2) as client:
                    if client.info("replication")["role"] == "master":
                        client.flushall()

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
