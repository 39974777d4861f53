"""The seed transcript, line for line: `python3 server.py`, then two real CLI clients.

Once in real terminals (tmux panes, so prompt_toolkit draws the input line and
incoming messages are printed above it) and once with stdin piped (scripted use:
no escape codes, answers echoed after their prompts).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def seed_lines(port: int) -> tuple[list[str], list[str]]:
    alice = [
        f"[Spartan] Connected to Spartan Server at port {port}.",
        "[Spartan] User list: bob,charlie,eve,foo,bar,baz,qux",
        "[Spartan] Enter a user whom you want to chat with: bob",
        "[Spartan] You are now ready to chat with bob.",
        "[alice] > Hey Bob!",
        "[bob] Hi Alice!",
    ]
    bob = [
        f"[Spartan] Connected to Spartan Server at port {port}.",
        "[Spartan] User list: alice,charlie,eve,foo,bar,baz,qux",
        "[Spartan] alice is requesting to chat with you. Enter 'yes' to accept or different user: yes",
        "[Spartan] You are now ready to chat with alice.",
        "[alice] Hey Bob!",
        "[bob] > Hi Alice!",
    ]
    return alice, bob


class LocalServer:
    """`python3 server.py` in a scratch folder holding the shipped config.yaml."""

    def __init__(self, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")
        self.port = 3000 if _port_free(3000) else free_port()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARTAN_KEY_DIR": str(workdir / "keys"),
                    "SPARTAN_PORT": str(self.port),
                    "SPARTAN_SERVICES__PRESENCE": f"127.0.0.1:{free_port()}",
                    "SPARTAN_SERVICES__HISTORY": f"127.0.0.1:{free_port()}", **(extra_env or {})}
        self.process = subprocess.Popen([sys.executable, str(ROOT / "server.py")], cwd=workdir, env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.first_line = self.process.stdout.readline().rstrip("\n")

    def client(self, user: str, *extra: str) -> list[str]:
        return [sys.executable, str(ROOT / "client.py"), user, *extra]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    local = LocalServer(tmp_path)
    try:
        yield local
    finally:
        local.stop()


def register(server: LocalServer, user: str) -> None:
    """First use of the client creates and registers the user's keys; /quit leaves at once."""
    done = subprocess.run(server.client(user), input="/quit\n", capture_output=True, text=True, cwd=server.workdir,
                          env=server.env, timeout=60)
    assert done.returncode == 0, done.stderr


def test_server_prints_the_seed_line(server: LocalServer) -> None:
    assert server.first_line == f"Spartan server started on port {server.port}."


def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


class Pane:
    """A tmux session running one client in a real terminal."""

    def __init__(self, name: str, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        exports = " ".join(f"{k}={_quote(v)}" for k, v in env.items() if k.startswith(("SPARTAN_", "PYTHONPATH")))
        shell = f"cd {_quote(str(cwd))} && env {exports} {' '.join(map(_quote, command))}; sleep 30"
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "120", "-y", "30", shell], check=True)

    def type(self, text: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", text], check=True)
        subprocess.run(["tmux", "send-keys", "-t", self.name, "Enter"], check=True)

    def lines(self) -> list[str]:
        screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], check=True, capture_output=True,
                                text=True).stdout
        lines = [line.rstrip() for line in screen.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def shows(self, text: str) -> bool:
        return any(text in line for line in self.lines())

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def test_seed_transcript_in_real_terminals(server: LocalServer) -> None:
    register(server, "bob")
    expected_alice, expected_bob = seed_lines(server.port)
    suffix = str(os.getpid())
    alice = Pane(f"alice{suffix}", server.client("alice"), server.workdir, server.env)
    bob: Pane | None = None
    try:
        wait_until(lambda: alice.shows("Enter a user whom you want to chat with:"))
        alice.type("bob")
        wait_until(lambda: alice.shows("[alice] >"))
        alice.type("Hey Bob!")
        wait_until(lambda: alice.lines()[-1:] == ["[alice] >"] and len(alice.lines()) >= 6)
        bob = Pane(f"bob{suffix}", server.client("bob"), server.workdir, server.env)
        wait_until(lambda: bob.shows("Enter 'yes' to accept"))
        bob.type("yes")
        wait_until(lambda: bob.shows("[alice] Hey Bob!"))
        bob.type("Hi Alice!")
        wait_until(lambda: alice.shows("[bob] Hi Alice!"))
        wait_until(lambda: bob.lines()[-1:] == ["[bob] >"])
        assert alice.lines() == [*expected_alice, "[alice] >"]
        assert bob.lines() == [*expected_bob, "[bob] >"]
    finally:
        alice.close()
        if bob:
            bob.close()


def test_seed_transcript_with_stdin_piped(server: LocalServer) -> None:
    register(server, "bob")
    expected_alice, expected_bob = seed_lines(server.port)
    alice = subprocess.Popen(server.client("alice"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=server.workdir, env=server.env)
    out: dict[str, list[str]] = {"alice": [], "bob": []}
    assert alice.stdin and alice.stdout
    read_until(alice, out["alice"], "Connected to Spartan Server")
    read_until(alice, out["alice"], "User list")
    alice.stdin.write("bob\n")
    alice.stdin.flush()
    read_until(alice, out["alice"], "You are now ready to chat with bob.")
    alice.stdin.write("Hey Bob!\n")
    alice.stdin.flush()
    read_until(alice, out["alice"], "[alice] > Hey Bob!")
    bob = subprocess.Popen(server.client("bob"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                           cwd=server.workdir, env=server.env)
    assert bob.stdin and bob.stdout
    read_until(bob, out["bob"], "User list")
    bob.stdin.write("yes\n")
    bob.stdin.flush()
    read_until(bob, out["bob"], "[alice] Hey Bob!")
    bob.stdin.write("Hi Alice!\n")
    bob.stdin.close()
    read_until(alice, out["alice"], "[bob] Hi Alice!")
    alice.stdin.close()
    assert alice.wait(timeout=30) == 0 and bob.wait(timeout=30) == 0
    out["bob"] += [line.rstrip("\n") for line in bob.stdout]
    assert out["alice"] == expected_alice
    assert out["bob"] == expected_bob
    assert not any("\x1b" in line for line in out["alice"] + out["bob"])


def read_until(process: subprocess.Popen[str], into: list[str], text: str) -> None:
    assert process.stdout is not None
    while True:
        line = process.stdout.readline()
        assert line, f"client ended before printing {text!r}; got {into}"
        into.append(line.rstrip("\n"))
        if text in line:
            return
