"""`python3 server.py` restarts a child that dies (docs/RELIABILITY.md, "How the pieces heal")."""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from spartan.launcher import REPLICA_PORT_STEP, RESTART_DELAY_SECONDS
from tests.support.cli import LocalServer, register

# Slack over the launcher's check interval: starting a Python service and binding its port on a
# loaded machine.
BACK_WITHIN_SECONDS = RESTART_DELAY_SECONDS + 15.0


def children(parent: int, module: str) -> list[int]:
    """Pids of `parent`'s child processes running `python -m module`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and module.encode() in argv:
            found.append(int(entry.name))
    return found


def listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def test_a_killed_presence_is_restarted_and_the_launcher_says_so(tmp_path: Path) -> None:
    server = LocalServer(tmp_path)
    try:
        assert server.first_line.startswith("Spartan server started"), server.first_line
        [presence] = children(server.process.pid, "services.presence.main")
        address = server.env["SPARTAN_SERVICES__PRESENCE"]
        assert listening(address)
        os.kill(presence, signal.SIGKILL)  # a child this test's server started
        killed = time.monotonic()
        while True:
            again = children(server.process.pid, "services.presence.main")
            if again and again != [presence] and listening(address):
                break
            assert time.monotonic() - killed <= BACK_WITHIN_SECONDS, "presence was not restarted"
            time.sleep(0.2)
    finally:
        server.stop()
    assert server.process.stderr is not None
    said = server.process.stderr.read()
    assert "[Spartan] presence stopped unexpectedly; restarting it (see " in said, said


def test_replicas_start_two_of_each_service_and_a_login_needs_only_one(tmp_path: Path) -> None:
    server = LocalServer(tmp_path, args=("--replicas", "2"))
    try:
        assert server.first_line.startswith("Spartan server started"), server.first_line
        assert server.process.stdout is not None
        told = server.process.stdout.readline().rstrip("\n")
        presence_port = int(server.env["SPARTAN_SERVICES__PRESENCE"].rsplit(":", 1)[1])
        history_port = int(server.env["SPARTAN_SERVICES__HISTORY"].rsplit(":", 1)[1])
        presences = [f"127.0.0.1:{presence_port + k * REPLICA_PORT_STEP}" for k in (0, 1)]
        histories = [f"127.0.0.1:{history_port + k * REPLICA_PORT_STEP}" for k in (0, 1)]
        assert told == (f"[Spartan] 2 replicas of presence ({','.join(presences)}) and of history "
                        f"({','.join(histories)})."), told
        assert all(listening(address) for address in presences + histories)
        first, _second = sorted(children(server.process.pid, "services.presence.main"))
        assert len(children(server.process.pid, "services.history.main")) == 2
        os.kill(first, signal.SIGKILL)  # a child this test's server started; the other replica serves
        register(server, "bob")
    finally:
        server.stop()
