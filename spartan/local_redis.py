"""A redis-server child process: the local launcher's private Redis, and the throwaway ones of tests and benchmarks.

One place knows how to start `redis-server` with the project's settings (no RDB
snapshots, optional AOF, a log file in its folder), wait until it accepts
connections, and stop, kill or restart it, so a restarted Redis keeps its folder
and, with AOF, its data.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from spartan.private_files import PRIVATE_UMASK, private_dir

INSTALL_HELP = (
    "Spartan needs Redis. Install it (Debian/Ubuntu: sudo apt-get install redis-server; "
    "macOS: brew install redis) or point redis.url / SPARTAN_REDIS__URL at a running server."
)


class RedisNotInstalled(RuntimeError):
    """No `redis-server` on the PATH; the message says how to get one."""


class LocalRedis:
    def __init__(
        self,
        directory: Path,
        *,
        port: int = 0,
        appendonly: bool = False,
        fsync: str = "everysec",
        logfile: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        """`port` 0 listens on a unix socket in `directory` only; otherwise on 127.0.0.1:`port`."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisNotInstalled(INSTALL_HELP)
        self.binary = binary
        self.directory = directory.resolve()
        self.port = port
        self.appendonly = appendonly
        self.fsync = fsync
        self.logfile = (logfile or self.directory / "redis.log").resolve()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.port else f"unix://{self.socket_path}"

    def start(self, timeout: float = 15.0) -> LocalRedis:
        private_dir(self.directory)  # the AOF holds every stored message (ciphertext) and key
        listen = (
            ["--port", str(self.port), "--bind", "127.0.0.1"]
            if self.port
            else ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        )
        args = [
            self.binary,
            *listen,
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.fsync,
            "--logfile",
            str(self.logfile),
            *self.extra,
        ]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )  # its AOF, log and socket: owner only
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"redis-server exited at start; see {self.logfile}")
            try:
                if self.port:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                else:
                    with socket.socket(socket.AF_UNIX) as unix:
                        unix.connect(str(self.socket_path))
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not accept connections within {timeout}s; see {self.logfile}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal and wait (SIGTERM lets Redis flush its AOF); SIGKILL if it does not exit in time."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()


class LocalRedisCluster:
    """A Redis Cluster of `redis-server` children on loopback ports: `primaries` primaries with
    `replicas_each` replicas each, made with `redis-cli --cluster create` as an operator makes one.

    For tests and benchmarks. `node_timeout_ms` is how long a primary may be unreachable
    before its replica takes over; a replica may take over however long ago it last heard
    from its primary (`cluster-replica-validity-factor 0`: a loaded machine's links lag).
    """

    def __init__(
        self,
        directory: Path,
        *,
        primaries: int = 3,
        replicas_each: int = 1,
        node_timeout_ms: int = 2000,
        extra: tuple[str, ...] = (),
    ) -> None:
        from spartan.ports import free_port

        self.directory = directory
        self.replicas_each = replicas_each
        self.nodes: list[LocalRedis] = []
        for index in range(primaries * (1 + replicas_each)):
            port = free_port()
            self.nodes.append(
                LocalRedis(
                    directory / f"node{index}",
                    port=port,
                    extra=(
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                        "--cluster-port",
                        str(free_port()),  # not port + 10000, which may be taken
                        "--cluster-node-timeout",
                        str(node_timeout_ms),
                        "--cluster-replica-validity-factor",
                        "0",
                        "--repl-diskless-sync-delay",
                        "0",  # a replica's first sync starts at once, not after 5 s
                        *extra,
                    ),
                )
            )

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.nodes]

    @property
    def url(self) -> str:
        """What the `redis.url` setting names: every node, so any one of them can be down at start."""
        return "redis+cluster://" + ",".join(self.addresses)

    def start(self, timeout: float = 30.0) -> LocalRedisCluster:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *self.addresses,
                    "--cluster-replicas",
                    str(self.replicas_each),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=timeout,
            )
            self.wait_ok(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node sees a whole cluster and every replica has its primary's data (a replica
        promoted in the middle of its first sync would come up empty)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._node_ok(node) for node in self.nodes if node.alive()):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Redis Cluster in {self.directory} was not ok within {timeout}s")

    def _node_ok(self, node: LocalRedis) -> bool:
        cluster = self.cli(node, "CLUSTER", "INFO")
        replication = self.cli(node, "INFO", "replication")
        synced = "role:master" in replication or "master_link_status:up" in replication
        return "cluster_state:ok" in cluster and synced

    def primaries(self) -> list[LocalRedis]:
        """The live nodes that serve slots now."""
        return [node for node in self.nodes if node.alive() and "role:master" in self.cli(node, "INFO", "replication")]

    @staticmethod
    def cli(node: LocalRedis, *command: str) -> str:
        """One command to one node, its reply as text ("" if the node does not answer)."""
        import redis

        try:
            with redis.Redis(port=node.port, socket_timeout=2, decode_responses=True) as client:
                client.response_callbacks.clear()  # the reply as Redis wrote it, not parsed into a dict
                return str(client.execute_command(*command))
        except (redis.exceptions.RedisError, OSError):
            return ""

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()
