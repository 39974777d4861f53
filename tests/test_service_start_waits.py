"""Services started before Redis is usable wait with one log line, then serve; never a traceback.

Here: nothing listening yet (compose starting containers together). The other case
seen in deployments, a Redis that answers with an error (protected mode refusing a
client that is not on loopback), needs a second host and is checked in containers by
tests/compose/test_compose_up.py.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.support.ports import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent


class Presence:
    """`spartan-presence` with its log lines collected on a thread."""

    def __init__(self, redis_url: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPARTAN_")}
        env |= {"PYTHONPATH": str(ROOT), "SPARTAN_REDIS__URL": redis_url,
                "SPARTAN_SERVICES__PRESENCE": f"127.0.0.1:{free_port()}",
                "SPARTAN_AUTH__SERVICE_SECRET": secrets.token_hex(32)}
        self.lines: list[str] = []
        self.process = subprocess.Popen([sys.executable, "-m", "services.presence.main", "--config",
                                         str(ROOT / "config.yaml")], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            assert self.process.poll() is None, f"presence exited: {self.lines}"
            time.sleep(0.1)
        raise AssertionError(f"presence did not log {text!r}: {self.lines}")

    def check_clean(self) -> None:
        assert sum("waiting for Redis" in line for line in self.lines) == 1, self.lines
        assert not any("Traceback" in line for line in self.lines), self.lines


def redis_server(port: int, *args: str) -> subprocess.Popen[bytes]:
    directory = tempfile.mkdtemp(prefix="spartan-redis-")
    process = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                "--dir", directory, *args], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    return process


def test_presence_waits_for_a_redis_that_is_not_there_yet() -> None:
    port = free_port()
    presence = Presence(f"redis://127.0.0.1:{port}/0")
    redis = None
    try:
        presence.wait_for("waiting for Redis")
        time.sleep(1.5)  # a few retries, still one line
        redis = redis_server(port, "--bind", "127.0.0.1")
        presence.wait_for("Redis is reachable")
        presence.wait_for("presence listening")
        presence.check_clean()
    finally:
        stop_process(presence.process)
        stop_process(redis)

