"""The local server's files are its owner's only, from the moment they exist.

`python3 server.py` runs here under umask 000, so nothing can rely on the umask: the
data folder, the secrets, the logs and the private Redis's folder and AOF must be
created with owner-only modes by the calls that create them. Its internal services
listen on loopback only.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from tests.support.cli import ROOT, wait_until
from tests.support.ports import free_port


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, also as grpc's IPv4-mapped IPv6


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def listening_hosts(port: int) -> set[str]:
    """Local addresses of TCP sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                hosts.add(address)
    return hosts


def test_secrets_logs_and_redis_files_are_owner_only(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    presence, history = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARTAN_PORT": str(free_port()),
           "SPARTAN_SERVICES__PRESENCE": f"127.0.0.1:{presence}", "SPARTAN_SERVICES__HISTORY": f"127.0.0.1:{history}"}
    server = subprocess.Popen([sys.executable, str(ROOT / "server.py")], cwd=tmp_path, env=env, umask=0,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("Spartan server started")
        data = tmp_path / ".spartan"
        wait_until(lambda: any((data / "redis").rglob("*.aof")))
        for folder in (data, data / "logs", data / "redis"):
            assert mode(folder) == 0o700, folder
        for secret in ("token_secret", "service_secret"):
            assert mode(data / secret) == 0o600, secret
        files = [p for p in [*(data / "logs").iterdir(), *(data / "redis").rglob("*")] if not p.is_socket()]
        assert any(p.name == "gateway-1.log" for p in files) and any(p.suffix == ".aof" for p in files)
        for path in files:
            assert mode(path) & 0o077 == 0, (path, oct(mode(path)))
        for port in (presence, history):
            hosts = listening_hosts(port)
            assert hosts and hosts <= LOOPBACK, (port, hosts)
    finally:
        server.terminate()
        server.wait(timeout=60)
