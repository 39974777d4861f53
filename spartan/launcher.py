"""`python3 server.py` / `spartan-server`: the whole stack on one machine in one command.

Starts a private `redis-server` (AOF on, data under `redis.data_dir`) unless a Redis
URL is configured, then the presence and history services (`--replicas` of each, replica
k on the configured port + 10·(k-1)) and N gateway replicas on consecutive ports, each
as its own process exactly as in a distributed deployment; gateways balance their calls
over every presence and history replica (spartan.rpc.balancing).
It prints `Spartan server started on port 3000.` once every service answers its
health check, restarts a child that dies, and on Ctrl-C or SIGTERM drains the
gateways first and stops Redis last. Children log to files under `<data>/logs/`.

It is a local demo: gateways listen on loopback unless `--host` says otherwise (then
new users need enrolment codes, docs/DEPLOY.md), presence and history on loopback
only, and every call between services carries the service credential from
`<data>/service_secret`. The data folder and everything in it are the owner's only
(0700 / 0600). Before starting anything it checks that every port it needs is free:
a second server fails at once naming the busy port, instead of answering health
checks with the first server's services.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spartan.config import Config, ConfigError, load_config
from spartan.enrolment import required as enrolment_required
from spartan.local_redis import LocalRedis, RedisNotInstalled
from spartan.ports import first_busy, wait_for_port
from spartan.private_files import open_private_append, private_dir, read_or_create_secret
from spartan.program import argument_parser
from spartan.service_addresses import port_of

RESTART_DELAY_SECONDS = 1.0
SERVICE_SECRET_FILE = "service_secret"  # under the data folder; spartan-admin finds it there too
LOCAL_HOST = "127.0.0.1"
REPLICA_PORT_STEP = 10  # presence replica k listens on services.presence's port + 10·(k-1); history likewise
MAX_REPLICAS = 10


@dataclass
class Child:
    name: str
    args: list[str]
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        log = open_private_append(self.log_path)
        self.process = subprocess.Popen(
            self.args, env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """What the child has written so far (empty before it first starts)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_listening(self, timeout: float) -> None:
        """Block until the child accepts TCP connections on its port; RuntimeError with its log if not."""
        try:
            wait_for_port(self.port, timeout)
        except TimeoutError:
            raise RuntimeError(f"{self.name} did not start:\n{self.log()[-3000:]}") from None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(sig)

    def stop(self, timeout: float) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser("server.py", "Run the whole Spartan Messenger stack locally.")
    parser.add_argument("--config", help="path to config.yaml (default: ./config.yaml or $SPARTAN_CONFIG)")
    parser.add_argument("--gateways", type=int, default=1, help="gateway replicas on consecutive ports (default 1)")
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help=f"presence and history replicas each, on ports {REPLICA_PORT_STEP} apart (default 1)",
    )
    parser.add_argument("--redis-url", help="use this Redis instead of starting a private one")
    parser.add_argument("--data-dir", help="where the private Redis, logs and the token secret live (default .spartan)")
    parser.add_argument(
        "--host",
        default=os.environ.get("SPARTAN_GATEWAY__HOST", LOCAL_HOST),
        help="interface the gateways listen on (default 127.0.0.1; any other needs enrolment codes)",
    )
    args = parser.parse_args(argv)
    if args.gateways < 1:
        parser.error("--gateways must be at least 1")
    if not 1 <= args.replicas <= MAX_REPLICAS:
        parser.error(f"--replicas must be between 1 and {MAX_REPLICAS}")
    return args


def data_root(config: Config, override: str | None) -> Path:
    if override:
        return Path(override)
    return Path(config.redis.data_dir).parent if config.redis.data_dir else Path(".spartan")


def token_secret(root: Path, configured: str) -> str:
    """The configured secret, else one generated once and kept (0600) so restarts keep sessions valid."""
    return configured or read_or_create_secret(root / "token_secret")


def service_secret_env(root: Path, config: Config) -> dict[str, str]:
    """The service credential's file for the children, unless config names one (created 0600 once)."""
    if config.auth.service_secret or config.auth.service_secret_file:
        return {}
    path = root / SERVICE_SECRET_FILE
    read_or_create_secret(path)
    return {"SPARTAN_AUTH__SERVICE_SECRET_FILE": str(path.resolve())}


def replica_ports(setting: str, replicas: int) -> list[int]:
    """The ports of a service's replicas: the setting's port, then every REPLICA_PORT_STEP above it."""
    return [port_of(setting) + REPLICA_PORT_STEP * k for k in range(replicas)]


def replica_addresses(setting: str, replicas: int) -> str:
    """What the gateways are told: every replica's loopback address (spartan.service_addresses)."""
    return ",".join(f"{LOCAL_HOST}:{port}" for port in replica_ports(setting, replicas))


def needed_ports(config: Config, args: argparse.Namespace) -> list[tuple[str, int]]:
    """Every (host, port) the children will listen on, in the order they start."""
    ports = [(LOCAL_HOST, port) for port in replica_ports(config.services.presence, args.replicas)]
    ports += [(LOCAL_HOST, port) for port in replica_ports(config.services.history, args.replicas)]
    ports += [(args.host, config.port + i) for i in range(args.gateways)]
    if config.metrics.port:
        ports += [(config.metrics.host, config.metrics.port + i) for i in range(2 * args.replicas + args.gateways)]
    return ports


def start_redis(root: Path, config: Config, data_dir_given: bool) -> LocalRedis:
    directory = Path(config.redis.data_dir) if config.redis.data_dir and not data_dir_given else root / "redis"
    try:
        return LocalRedis(directory, appendonly=True, logfile=root / "logs" / "redis.log").start()
    except RedisNotInstalled as missing:
        raise SystemExit(str(missing)) from None


async def wait_healthy(port: int, child: Child, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited; see {child.log_path}")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"{child.name} did not become healthy on port {port}; see {child.log_path}")
            await asyncio.sleep(0.1)


def build_children(config: Config, args: argparse.Namespace, root: Path, env: dict[str, str]) -> list[Child]:
    python = sys.executable
    config_flag = ["--config", args.config] if args.config else []
    logs = root / "logs"
    children = []
    metrics = config.metrics.port

    def child(name: str, module: str, port: int, index: int) -> Child:
        flags = [*config_flag, "--port", str(port)]
        if metrics:
            flags += ["--metrics-port", str(metrics + index)]
        child_env = dict(env)
        if name.startswith("gateway"):
            child_env["SPARTAN_GATEWAY__INSTANCE_ID"] = name
        return Child(name, [python, "-m", module, *flags], port, child_env, logs / f"{name}.log")

    presence_ports = replica_ports(config.services.presence, args.replicas)
    history_ports = replica_ports(config.services.history, args.replicas)
    # Metrics ports: presence, history, the gateways, then further replicas (one replica keeps the old layout).
    children.append(child("presence", "services.presence.main", presence_ports[0], 0))
    children.append(child("history", "services.history.main", history_ports[0], 1))
    for i in range(args.gateways):
        children.append(child(f"gateway-{i + 1}", "services.gateway.main", config.port + i, 2 + i))
    for k in range(1, args.replicas):
        index = 2 + args.gateways + 2 * (k - 1)
        children.append(child(f"presence-{k + 1}", "services.presence.main", presence_ports[k], index))
        children.append(child(f"history-{k + 1}", "services.history.main", history_ports[k], index + 1))
    return children


async def supervise(children: list[Child], stop: asyncio.Event) -> None:
    """Restart children that die until asked to stop."""
    while not stop.is_set():
        for child in children:
            if not child.alive() and not stop.is_set():
                child.restarts += 1
                print(
                    f"[Spartan] {child.name} stopped unexpectedly; restarting it (see {child.log_path})",
                    file=sys.stderr,
                )
                child.start()
        try:
            await asyncio.wait_for(stop.wait(), timeout=RESTART_DELAY_SECONDS)
        except TimeoutError:
            pass


async def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"server.py: config error: {exc}", file=sys.stderr)
        return 2
    ports = needed_ports(config, args)
    if len({port for _, port in ports}) < len(ports):
        print(
            "server.py: the gateways', services' and metrics ports overlap with these settings; choose ports further "
            "apart (port, services.presence, services.history, metrics.port in config.yaml)",
            file=sys.stderr,
        )
        return 2
    busy = first_busy(ports)
    if busy is not None:  # checked before anything starts, so there is nothing to stop
        print(
            f"server.py: port {busy[1]} is already in use (another Spartan server?); stop it or choose other "
            "ports (port, services.presence, services.history in config.yaml)",
            file=sys.stderr,
        )
        return 1
    root = private_dir(data_root(config, args.data_dir))
    private_dir(root / "logs")
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SPARTAN_GATEWAY__HOST": args.host,
        "SPARTAN_SERVICES__LISTEN_HOST": LOCAL_HOST,  # presence and history: this machine only
        "SPARTAN_SERVICES__PRESENCE": replica_addresses(config.services.presence, args.replicas),
        "SPARTAN_SERVICES__HISTORY": replica_addresses(config.services.history, args.replicas),
    }
    env.update(service_secret_env(root, config))
    if not config.auth.token_secret_file:  # a configured file is read by the gateways themselves
        env["SPARTAN_AUTH__TOKEN_SECRET"] = token_secret(root, config.auth.token_secret)
    project_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH", "")]))
    redis_process = None
    redis_url = args.redis_url or config.redis.url
    if not redis_url:
        redis_process = start_redis(root, config, data_dir_given=bool(args.data_dir))
        redis_url = redis_process.url
    env["SPARTAN_REDIS__URL"] = redis_url
    children = build_children(config, args, root, env)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for child in children:
            child.start()
        for child in children:
            await wait_healthy(child.port, child)
        print(f"Spartan server started on port {config.port}.", flush=True)
        if enrolment_required(config.auth.enrolment, args.host):
            print(
                f"[Spartan] Gateways listen on {args.host}: a user's first login needs a code from "
                "`spartan-admin enrol USER` (client: --enrolment-code CODE).",
                flush=True,
            )
        if args.gateways > 1:
            gateway_ports = ",".join(str(config.port + i) for i in range(args.gateways))
            print(f"[Spartan] {args.gateways} gateway replicas on ports {gateway_ports}.", flush=True)
        if args.replicas > 1:
            print(
                f"[Spartan] {args.replicas} replicas of presence "
                f"({env['SPARTAN_SERVICES__PRESENCE']}) and of history ({env['SPARTAN_SERVICES__HISTORY']}).",
                flush=True,
            )
        await supervise(children, stop)
        return 0
    except RuntimeError as exc:
        print(f"server.py: {exc}", file=sys.stderr)
        return 1
    finally:
        stop.set()
        grace = config.shutdown.grace_seconds + 2
        gateways = [c for c in children if c.name.startswith("gateway")]
        for child in gateways:  # all gateways drain at once, while presence and history still answer
            child.signal(signal.SIGTERM)
        for child in [*gateways, *children]:
            child.stop(grace)
        if redis_process is not None:
            redis_process.stop()


def main(argv: list[str] | None = None) -> None:
    try:
        raise SystemExit(asyncio.run(run(argv)))
    except KeyboardInterrupt:
        raise SystemExit(0) from None


if __name__ == "__main__":
    main()
