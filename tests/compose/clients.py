"""Real terminal clients (`client.py`, stdin and stdout piped) against a compose deployment."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.compose.docker import ROOT, Deployment, wait_for


class PipedClient:
    """`client.py USER --server 127.0.0.1:PORT` with stdin and stdout piped, read on a thread."""

    def __init__(self, user: str, port: int, workdir: Path, enrolment_code: str = "") -> None:
        self.user = user
        code = ["--enrolment-code", enrolment_code] if enrolment_code else []
        self.lines: list[str] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPARTAN_")}
        env |= {"PYTHONPATH": str(ROOT), "SPARTAN_KEY_DIR": str(workdir / "keys")}
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "client.py"), user, "--server", f"127.0.0.1:{port}", *code],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def write(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def wait_line(self, text: str, timeout: float = 60, count: int = 1) -> None:
        try:
            wait_for(lambda: sum(text in line for line in self.lines) >= count, timeout,
                     f"{self.user} printing {text!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it printed {self.lines}") from None

    def finish(self, timeout: float = 60) -> list[str]:
        """Close stdin (the client leaves) and return everything it printed."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        code = self.process.wait(timeout=timeout)
        time.sleep(0.2)  # let the reader thread take the last lines
        assert code == 0, f"{self.user} exited {code}: {self.lines}"
        return self.lines

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def enrolment_code(deployment: Deployment, user: str) -> str:
    """The operator's step before a user's first login: gateways here listen beyond loopback."""
    return deployment.exec("presence", "spartan-admin", "enrol", user).split("--enrolment-code ")[1].strip()


def register(user: str, port: int, workdir: Path, code: str) -> None:
    """First use of the client creates and registers the user's keys; /quit leaves at once."""
    client = PipedClient(user, port, workdir, code)
    try:
        client.write("/quit")
        client.finish()
    finally:
        client.kill()


def acknowledged(lines: list[str], prompt: str, texts: list[str]) -> list[str]:
    """Texts whose send the client finished without a failure notice before its next prompt."""
    acked = []
    for text in texts:
        index = lines.index(f"{prompt} {text}")
        after = lines[index + 1:]
        following = next((i for i, line in enumerate(after) if line.startswith(prompt)), len(after))
        if not any(("Could not send" in line or "Not sent" in line or "Slow down" in line)
                   for line in after[:following]):
            acked.append(text)
    return acked


def start_chat(deployment: Deployment, workdir: Path, first: str, second: str) -> tuple[PipedClient, PipedClient]:
    """Register both users, then `first` asks `second` to chat and `second` accepts: the seed transcript's steps."""
    port = deployment.gateway_port
    register(second, port, workdir, enrolment_code(deployment, second))
    asking = PipedClient(first, port, workdir, enrolment_code(deployment, first))
    asking.wait_line("User list")
    asking.write(second)
    asking.wait_line(f"You are now ready to chat with {second}.")
    answering = PipedClient(second, port, workdir)
    try:
        answering.wait_line("User list")  # piped, a prompt is printed with its answer
        answering.write("yes")
        answering.wait_line(f"You are now ready to chat with {first}.")
    except BaseException:
        asking.kill()
        answering.kill()
        raise
    return asking, answering


def wait_seen(first: PipedClient, second: PipedClient, first_texts: list[str], second_texts: list[str],
              timeout: float = 90) -> tuple[list[str], list[str]]:
    """Each sees the other's texts, then both leave; returns everything each printed."""
    for text in first_texts:
        second.wait_line(f"[{first.user}] {text}", timeout=timeout)
    for text in second_texts:
        first.wait_line(f"[{second.user}] {text}", timeout=timeout)
    return first.finish(), second.finish()


def shown_from(lines: list[str], sender: str) -> list[str]:
    """The chat lines from `sender` a client printed, in order (not its own prompt lines)."""
    return [line for line in lines if line.startswith(f"[{sender}] ") and not line.startswith(f"[{sender}] >")]
