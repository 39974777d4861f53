"""Free loopback ports and waiting for a listener: for local stacks, tests and benchmarks."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener already holds host:port (a port only in TIME_WAIT counts as free, as it does for
    servers, which bind with SO_REUSEADDR)."""
    host = host.strip("[]")  # "[::]" as gRPC spells it
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def first_busy(ports: list[tuple[str, int]]) -> tuple[str, int] | None:
    """The first (host, port) in `ports` that something else listens on, or None when all are free."""
    for host, port in ports:
        if port and port_in_use(port, host):
            return host, port
    return None
