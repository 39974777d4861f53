"""Processes the benchmarks measure: a private Redis, a Spartan stack, the raw relay, and their plumbing.

Every benchmark starts its own redis-server on a free loopback port (never the
machine's shared one) and its services as separate OS processes, started exactly as
in a deployment (console modules, `--port`, `SPARTAN_*` environment), so the load
generators, the services and Redis compete for the same cores the way they would on
one small host. Also here: user names, session tokens, RSS readings and the
open-files limit every benchmark process raises.
"""
from __future__ import annotations

import asyncio
import os
import resource
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Self

from spartan.launcher import Child
from spartan.local_redis import LocalRedis, LocalRedisCluster, RedisNotInstalled
from spartan.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
SPARTAN_SEND = "/spartan.v1.Spartan/SendMsg"
SPARTAN_RECEIVE = "/spartan.v1.Spartan/ReceiveMsg"


def raise_open_files_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def user_names(count: int) -> list[str]:
    """u000, u001, ... (at least three digits), valid under the config's name pattern."""
    width = max(3, len(str(max(count - 1, 0))))
    return [f"u{i:0{width}d}" for i in range(count)]


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS in /proc/<pid>/status), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


BENCH_DEPLOYMENT_ID = "bench"


def mint_token(secret: str, user: str, identity_key: bytes) -> str:
    """A session token exactly as `Login` issues it for `identity_key` (which must be the registered key)."""
    from spartan.crypto.tokens import TokenIssuer

    return TokenIssuer(secret, 3600, deployment_id=BENCH_DEPLOYMENT_ID).issue(user, identity_key)[0]


async def register_keys(presence_address: str, users: list[str], service_secret: str,
                        concurrency: int = 32) -> dict[str, bytes]:
    """Register a fresh key pair per user in the presence directory, as a first login does
    (without the key-update broadcast); returns each user's public identity key."""
    import grpc

    from spartan.crypto.identity import Identity
    from spartan.rpc.service_auth import signing_interceptors
    from spartan.v1 import rpc

    keys: dict[str, bytes] = {}
    limit = asyncio.Semaphore(concurrency)
    async with grpc.aio.insecure_channel(presence_address,
                                         interceptors=signing_interceptors(service_secret)) as channel:
        presence = rpc.PresenceStub(channel)

        async def one(user: str) -> None:
            public = Identity.generate(user).public_keys()
            async with limit:
                await presence.PutKeys(public, timeout=30)
            keys[user] = public.identity_key

        await asyncio.gather(*(one(user) for user in users))
    return keys


async def login_token(address: str, user: str) -> str:
    """Log in for real (challenge, Ed25519 signature, key registration) and return the session token."""
    from spartan.client.connection import Connection
    from spartan.config import TlsConfig
    from spartan.crypto.identity import Identity

    connection = Connection([address], Identity.generate(user), TlsConfig())
    try:
        await connection.open()
        return connection.token
    finally:
        await connection.close()


class PrivateRedis(LocalRedis):
    """A throwaway redis-server on a free loopback port, no persistence; every benchmark's Redis."""

    def __init__(self) -> None:
        try:
            super().__init__(Path(tempfile.mkdtemp(prefix="spartan-bench-redis-")), port=free_port(),
                             extra=("--maxclients", "10000"))
        except RedisNotInstalled as missing:
            raise SystemExit(str(missing)) from None
        try:
            self.start(10)
        except RuntimeError:
            self.close()
            raise

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "PrivateRedis":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PrivateRedisCluster(LocalRedisCluster):
    """A throwaway Redis Cluster (3 primaries, 3 replicas) on free loopback ports, no persistence."""

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="spartan-bench-cluster-")), extra=("--maxclients", "10000"))
        self.start()

    def pids(self) -> dict[str, int]:
        """Each node's pid, by `redis:<port>`."""
        return {f"redis:{node.port}": node.process.pid for node in self.nodes if node.process is not None}

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


class Processes:
    """Child processes with logs in one directory; stopped together."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.children: dict[str, Child] = {}

    def add(self, name: str, args: list[str], port: int, env: dict[str, str]) -> Child:
        child = Child(name, args, port, env, self.workdir / "logs" / f"{name}.log")
        self.children[name] = child
        return child

    def start(self, timeout: float = 30.0) -> None:
        for child in self.children.values():
            child.start()
        for child in self.children.values():
            child.wait_listening(timeout)

    def pid(self, name: str) -> int:
        process = self.children[name].process
        assert process is not None
        return process.pid

    def pids(self) -> dict[str, int]:
        return {name: self.pid(name) for name in self.children}

    def log(self, name: str) -> str:
        return self.children[name].log()

    def stop(self) -> None:
        for child in self.children.values():
            child.stop(timeout=10)


class ServiceStack:
    """A private Redis and the processes using it, started and stopped together (a context manager)."""

    def __init__(self, workdir: Path, *, cluster: bool = False) -> None:
        """`cluster`: on a private Redis Cluster instead of one redis-server."""
        self.redis: PrivateRedis | PrivateRedisCluster = PrivateRedisCluster() if cluster else PrivateRedis()
        self.processes = Processes(workdir)

    def start(self) -> Self:
        try:
            self.processes.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        self.processes.stop()
        self.redis.close()

    def pids(self) -> dict[str, int]:
        """Every process of the stack by name, Redis included (for CPU accounting; a cluster's nodes
        as `redis:<port>`)."""
        if isinstance(self.redis, PrivateRedisCluster):
            return {**self.processes.pids(), **self.redis.pids()}
        assert self.redis.process is not None
        return {**self.processes.pids(), "redis": self.redis.process.pid}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class SpartanStack(ServiceStack):
    """Redis, presence, history and N gateways, as in a deployment (one process each)."""

    def __init__(self, workdir: Path, *, users: list[str], gateways: int = 2,
                 settings: dict[str, str] | None = None, cluster: bool = False) -> None:
        super().__init__(workdir, cluster=cluster)
        self.secret = secrets.token_hex(32)
        presence_port, history_port = free_port(), free_port()
        self.gateway_ports = [free_port() for _ in range(gateways)]
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SPARTAN_")},
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "SPARTAN_CONFIG": str(ROOT / "config.yaml"),
            "SPARTAN_REDIS__URL": self.redis.url,
            "SPARTAN_SERVICES__PRESENCE": f"127.0.0.1:{presence_port}",
            "SPARTAN_SERVICES__HISTORY": f"127.0.0.1:{history_port}",
            "SPARTAN_AUTH__TOKEN_SECRET": self.secret,
            "SPARTAN_AUTH__DEPLOYMENT_ID": BENCH_DEPLOYMENT_ID,  # what `mint_token` signs for
            "SPARTAN_AUTH__SERVICE_SECRET": secrets.token_hex(32),  # presence checks direct key registration
            "SPARTAN_GATEWAY__HOST": "127.0.0.1",
            "SPARTAN_USERS": ",".join(users),
            "SPARTAN_GROUPS": "{}",
            "SPARTAN_RATE__RATE": "1000000",
            "SPARTAN_RATE__PER_SECONDS": "1",
            "SPARTAN_MAX_NUM_MESSAGES_PER_USER": "1000",
            "SPARTAN_LOG__LEVEL": "WARNING",
            "SPARTAN_SHUTDOWN__GRACE_SECONDS": "1",
            **(settings or {}),
        }
        python = sys.executable
        self.processes.add("presence", [python, "-m", "services.presence.main", "--port", str(presence_port)],
                           presence_port, self.env)
        self.processes.add("history", [python, "-m", "services.history.main", "--port", str(history_port)],
                           history_port, self.env)
        for i, port in enumerate(self.gateway_ports):
            env = {**self.env, "SPARTAN_GATEWAY__INSTANCE_ID": f"gateway-{i + 1}"}
            self.processes.add(f"gateway-{i + 1}", [python, "-m", "services.gateway.main", "--port", str(port)],
                               port, env)

    def address(self, gateway: int) -> str:
        """Address of gateway number `gateway` (1-based)."""
        return f"127.0.0.1:{self.gateway_ports[gateway - 1]}"

    def gateway_pid(self, gateway: int) -> int:
        return self.processes.pid(f"gateway-{gateway}")
