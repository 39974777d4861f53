"""A compose deployment of deploy/docker-compose.yml under a real Docker engine, for tests.

`scripts/docker-engine.sh` makes the engine ready (installs and starts it, builds
look-alike base images where no registry is reachable); this module runs the
commands docs/DEPLOY.md gives users, under a project name of its own and with
the published ports moved to free loopback ports, so a user's `spartan` project
and other tests on the machine are left alone.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
CLUSTER_FILE = ROOT / "deploy" / "docker-compose.cluster.yml"
ENGINE_SCRIPT = ROOT / "scripts" / "docker-engine.sh"
NO_ENGINE_EXIT = 2
GATEWAYS = ("gateway-1", "gateway-2", "gateway-3")


class EngineUnavailable(Exception):
    """No Docker engine can be had on this machine; the message says why."""


def prepare_engine(timeout: float = 900) -> str:
    """Run scripts/docker-engine.sh; returns its last line. Raises EngineUnavailable or RuntimeError."""
    done = subprocess.run(["bash", str(ENGINE_SCRIPT)], capture_output=True, text=True, timeout=timeout)
    lines = (done.stdout.strip().splitlines() or [""])
    if done.returncode == NO_ENGINE_EXIT:
        raise EngineUnavailable(lines[-1])
    if done.returncode != 0:
        raise RuntimeError(f"scripts/docker-engine.sh failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return lines[-1]


def run(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 120,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


@dataclass
class Deployment:
    """One compose project; `up()` / `down()` run exactly the documented commands plus `-p`."""

    project: str
    files: tuple[Path, ...] = (COMPOSE_FILE,)
    gateway_port: int = field(default_factory=free_port)
    prometheus_port: int = field(default_factory=free_port)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "GATEWAY_PUBLISH": f"127.0.0.1:{self.gateway_port}",
                "PROMETHEUS_PUBLISH": f"127.0.0.1:{self.prometheus_port}"}

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        files = [option for path in self.files for option in ("-f", str(path))]
        return run(["docker", "compose", "-p", self.project, *files, *args],
                   env=self.env, timeout=timeout, check=check)

    def up(self, *services: str, timeout: float = 600) -> None:
        self.compose("up", "--build", "--wait", *services, timeout=timeout)

    def down(self, *, volumes: bool = True) -> None:
        self.compose("down", *(["-v"] if volumes else []), "--remove-orphans", "--timeout", "10", timeout=180)

    def logs(self) -> str:
        done = self.compose("logs", "--no-color", "--tail", "40", check=False)
        return done.stdout + done.stderr

    def container(self, service: str) -> str:
        ids = self.containers(service)
        assert len(ids) == 1, f"{service}: expected one container, got {ids}"
        return ids[0]

    def containers(self, *services: str) -> list[str]:
        """Ids of the services' containers (every service's if none is named), stopped ones included."""
        return self.compose("ps", "-a", "-q", *services).stdout.split()

    def exec(self, service: str, *command: str) -> str:
        return self.compose("exec", "-T", service, *command).stdout

    def metric(self, service: str, name: str) -> float:
        """Sum of one metric's samples, read from the service's own /metrics inside its container."""
        script = ("import urllib.request,sys;t=urllib.request.urlopen('http://127.0.0.1:9100/metrics',timeout=5)"
                  ".read().decode();print(sum(float(l.rsplit(' ',1)[1]) for l in t.splitlines() "
                  f"if l.startswith('{name}') and not l.startswith('#')))")
        return float(self.exec(service, "python", "-c", script).strip())

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks of this project still known to the engine."""
        label = f"label=com.docker.compose.project={self.project}"
        found = {
            "containers": run(["docker", "ps", "-a", "-q", "--filter", label]).stdout.split(),
            "volumes": run(["docker", "volume", "ls", "-q", "--filter", label]).stdout.split(),
            "networks": run(["docker", "network", "ls", "-q", "--filter", label]).stdout.split(),
        }
        return {kind: names for kind, names in found.items() if names}

    def prometheus(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/{path}{query}"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            answer = json.loads(response.read().decode())
        assert answer["status"] == "success", answer
        return answer["data"]


def wait_for(probe, timeout: float, what: str, interval: float = 0.5):  # type: ignore[no-untyped-def]
    """Call `probe` until it returns something truthy; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (OSError, AssertionError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout:.0f} s (last: {last!r})")
