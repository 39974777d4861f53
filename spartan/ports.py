"""Free loopback ports and waiting for a listener: for local stacks, tests and benchmarks."""

from __future__ import annotations

import collections
import random
import socket
import time

# Below Linux's ephemeral range (32768-60999 by default): a port the kernel hands out for
# bind(0) is also handed out as the source port of outgoing connections, so a port picked
# that way could be taken by some client's connection (to Redis, say) before the service that
# was meant to listen there starts, and clients would then reach the wrong program.
PORT_RANGE = (20000, 32767)
_handed_out: collections.deque[int] = collections.deque(maxlen=2000)  # not handed out twice by one process


def free_port() -> int:
    """A loopback port that nothing listens on now, outside the ephemeral range."""
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _handed_out.append(port)
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE[0]}-{PORT_RANGE[1]} after 200 tries")


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
