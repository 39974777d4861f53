"""A real nginx gRPC load balancer in front of local gateways, for integration tests.

The config comes from the project's own renderer (`deploy/nginx/render.py`), so the
tests exercise exactly the proxy settings the deployment ships: nginx runs as the
current user in the foreground (`daemon off`), on a free port, with its pid, logs and
temp files inside the test's folder.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from deploy.nginx.render import nginx_command, write_local_conf
from tests.support.ports import free_port, stop_process, wait_for_port

NGINX_BINARY = shutil.which("nginx") or "/usr/sbin/nginx"


class Nginx:
    """One nginx process balancing gRPC over `gateway_ports`; `.address` is what clients dial."""

    def __init__(self, workdir: Path, gateway_ports: list[int]) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.gateway_ports = list(gateway_ports)
        self.conf_path = write_local_conf(self.port, self.gateway_ports, str(workdir))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "Nginx":
        check = subprocess.run([*nginx_command(self.conf_path, str(self.workdir), NGINX_BINARY), "-t"],
                               capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejected its config:\n{check.stderr}")
        self.process = subprocess.Popen(nginx_command(self.conf_path, str(self.workdir), NGINX_BINARY),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"nginx did not start:\n{self.error_log()}") from None
        return self

    def access_log(self) -> str:
        return self._read("access.log")

    def error_log(self) -> str:
        return self._read("error.log")

    def _read(self, name: str) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (nginx's fast shutdown) and wait; SIGKILL if it does not exit in time."""
        stop_process(self.process, timeout=timeout)
