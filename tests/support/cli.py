"""Driving the real CLI in tests: `python3 server.py` in a scratch folder, piped clients, tmux panes."""
from __future__ import annotations

import itertools
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


class LocalServer:
    """`python3 server.py` in a scratch folder holding the shipped config.yaml."""

    def __init__(self, workdir: Path, extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.args = args  # server.py's own flags
        shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")
        self.port = 3000 if _port_free(3000) else free_port()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARTAN_KEY_DIR": str(workdir / "keys"),
                    "SPARTAN_PORT": str(self.port),
                    "SPARTAN_SERVICES__PRESENCE": f"127.0.0.1:{free_port()}",
                    "SPARTAN_SERVICES__HISTORY": f"127.0.0.1:{free_port()}", **(extra_env or {})}
        self.start()

    def start(self) -> None:
        """Start `python3 server.py` (again, after `stop`: same folder, same ports)."""
        self.process = subprocess.Popen([sys.executable, str(ROOT / "server.py"), *self.args], cwd=self.workdir, env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.first_line = self.process.stdout.readline().rstrip("\n")

    def client(self, user: str, *extra: str) -> list[str]:
        return [sys.executable, str(ROOT / "client.py"), user, *extra]

    def piped(self, user: str) -> subprocess.Popen[str]:
        """`client.py USER` with stdin and stdout piped, as a script would run it."""
        return subprocess.Popen(self.client(user), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                cwd=self.workdir, env=self.env)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def register(server: LocalServer, user: str) -> None:
    """First use of the client creates and registers the user's keys; /quit leaves at once."""
    done = subprocess.run(server.client(user), input="/quit\n", capture_output=True, text=True, cwd=server.workdir,
                          env=server.env, timeout=60)
    assert done.returncode == 0, done.stderr


def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


_PANE_NUMBERS = itertools.count(1)


class Pane:
    """A tmux session running one client in a real terminal, on a tmux server of its own.

    One server per pane, never reused (a test may open a second pane of the same name): when
    the last session of a server ends, the server exits, and a session created on that socket
    in that moment fails to start ("server exited unexpectedly").
    """

    def __init__(self, name: str, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        self.tmux_socket = f"spartan-test-{name}-{os.getpid()}-{next(_PANE_NUMBERS)}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if k.startswith(("SPARTAN_", "PYTHONPATH")))
        shell = f"cd {shlex.quote(str(cwd))} && env {exports} {' '.join(map(shlex.quote, command))}; echo \"[exited $?]\"; sleep 30"
        self.tmux("new-session", "-d", "-s", name, "-x", "120", "-y", "30", shell)

    def tmux(self, *args: str) -> str:
        """Run one tmux command against this pane's server; returns what it printed."""
        return subprocess.run(["tmux", "-L", self.tmux_socket, *args], check=True, capture_output=True, text=True).stdout

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", self.name, "-l", text)
        self.tmux("send-keys", "-t", self.name, "Enter")

    def lines(self) -> list[str]:
        lines = [line.rstrip() for line in self.tmux("capture-pane", "-p", "-t", self.name).splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def shows(self, text: str) -> bool:
        return any(text in line for line in self.lines())

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.tmux_socket, "kill-server"], capture_output=True)


def write(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()


def read_until(process: subprocess.Popen[str], into: list[str], text: str) -> None:
    assert process.stdout is not None
    while True:
        line = process.stdout.readline()
        assert line, f"client ended before printing {text!r}; got {into}"
        into.append(line.rstrip("\n"))
        if text in line:
            return
