"""`python3 server.py` restarts a child that dies (docs/RELIABILITY.md, "How the pieces heal")."""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from spartan.launcher import RESTART_DELAY_SECONDS
from tests.support.cli import LocalServer

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
