"""A real multi-process Spartan stack for integration tests: presence, history (R replicas each) and N gateways.

Each service is its own OS process started exactly as in a deployment (the console
modules with `--port` and `SPARTAN_*` environment), against a private redis-server,
so tests can SIGKILL, SIGSTOP or restart any of them.
"""
from __future__ import annotations

import glob
import os
import secrets
import signal
import sys
from pathlib import Path

from spartan.launcher import Child
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]

def rates(**per_second: float) -> dict[str, str]:
    """Settings raising the limit of the named APIs only (e.g. `rates(send=1000)`): calls per second,
    with a bucket of one second's worth; every other API keeps the shipped 3 calls per 30 s."""
    apis = ", ".join(f"{api}: {{rate: {rate}, per_seconds: 1}}" for api, rate in per_second.items())
    return {"SPARTAN_RATE__APIS": "{" + apis + "}"}


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        raise RuntimeError("libfaketime is not installed (apt-get install faketime)")
    return found[0]


class Stack:
    def __init__(self, workdir: Path, redis: RedisServer, *, gateways: int = 2, replicas: int = 1,
                 settings: dict[str, str] | None = None, clock_offsets: dict[str, str] | None = None) -> None:
        """`replicas`: presence and history processes each, named presence, presence-2, …; the gateways
        are given every replica's address (the list form of services.presence / services.history)."""
        self.workdir = workdir
        self.redis = redis
        self.presence_ports = [free_port() for _ in range(replicas)]
        self.history_ports = [free_port() for _ in range(replicas)]
        self.presence_port, self.history_port = self.presence_ports[0], self.history_ports[0]
        self.gateway_ports = [free_port() for _ in range(gateways)]
        self.metrics_ports: dict[str, int] = {}
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "SPARTAN_CONFIG": str(ROOT / "config.yaml"),
            "SPARTAN_REDIS__URL": redis.url,
            "SPARTAN_SERVICES__PRESENCE": ",".join(f"127.0.0.1:{port}" for port in self.presence_ports),
            "SPARTAN_SERVICES__HISTORY": ",".join(f"127.0.0.1:{port}" for port in self.history_ports),
            "SPARTAN_AUTH__TOKEN_SECRET": secrets.token_hex(32),
            "SPARTAN_AUTH__SERVICE_SECRET": secrets.token_hex(32),
            "SPARTAN_GATEWAY__HOST": "127.0.0.1",  # loopback, as the local launcher: no enrolment codes needed
            **(settings or {}),  # the shipped config.yaml, plus what the test itself raises
        }
        self.clock_offsets = clock_offsets or {}  # process name -> faketime offset such as "+300s"
        self.children: dict[str, Child] = {}
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        for k, (presence, history) in enumerate(zip(self.presence_ports, self.history_ports)):
            suffix = f"-{k + 1}" if k else ""
            self._add(f"presence{suffix}", "services.presence.main", presence)
            self._add(f"history{suffix}", "services.history.main", history)
        for i, port in enumerate(self.gateway_ports):
            self._add(f"gateway-{i + 1}", "services.gateway.main", port)

    def _add(self, name: str, module: str, port: int) -> None:
        metrics_port = free_port()
        self.metrics_ports[name] = metrics_port
        env = dict(self.env)
        if name.startswith("gateway"):
            env["SPARTAN_GATEWAY__INSTANCE_ID"] = name
        args = [sys.executable, "-m", module, "--port", str(port), "--metrics-port", str(metrics_port)]
        if name in self.clock_offsets:  # a skewed process clock: Debian's libfaketime, preloaded into the
            # service itself (the `faketime` wrapper would stand between our signals and the service)
            env["LD_PRELOAD"] = libfaketime()
            env["FAKETIME"] = self.clock_offsets[name]
        self.children[name] = Child(name, args, port, env, self.workdir / "logs" / f"{name}.log")

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.gateway_ports]

    def address(self, gateway: int) -> str:
        """Address of gateway number `gateway` (1-based)."""
        return f"127.0.0.1:{self.gateway_ports[gateway - 1]}"

    def start(self) -> "Stack":
        for child in self.children.values():
            child.start()
        for child in self.children.values():
            self.wait_ready(child.name)
        return self

    def wait_ready(self, name: str, timeout: float = 20.0) -> None:
        self.children[name].wait_listening(timeout)

    def log(self, name: str) -> str:
        return self.children[name].log()

    def all_logs(self) -> str:
        return "\n".join(self.log(name) for name in self.children)

    def signal(self, name: str, sig: int) -> None:
        process = self.children[name].process
        assert process is not None
        process.send_signal(sig)

    def kill(self, name: str) -> None:
        self.signal(name, signal.SIGKILL)
        process = self.children[name].process
        assert process is not None
        process.wait(timeout=10)

    def terminate(self, name: str, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        self.signal(name, signal.SIGTERM)
        process = self.children[name].process
        assert process is not None
        return process.wait(timeout=timeout)

    def restart(self, name: str) -> None:
        self.children[name].stop(timeout=10)
        self.children[name].start()
        self.wait_ready(name)

    def stop(self) -> None:
        for child in self.children.values():  # everything drains at once, then each is waited for
            child.signal(signal.SIGTERM)
        for child in self.children.values():
            child.stop(timeout=10)
