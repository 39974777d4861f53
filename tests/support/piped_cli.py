"""The real client (`client.py USER`) with stdin and stdout piped, and a second device's copy of an identity."""
from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.stack import ROOT, Stack


class PipedCli:
    """`client.py USER` with stdin and stdout piped; lines are read on a thread so waits can time out."""

    def __init__(self, user: str, stack: Stack, key_dir: Path, gateway: int = 1, *extra: str) -> None:
        command = [sys.executable, str(ROOT / "client.py"), user, "--server", stack.address(gateway),
                   "--key-dir", str(key_dir), *extra]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=stack.env, cwd=key_dir.parent)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def type(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def read_until(self, text: str, timeout: float = 30.0) -> list[str]:
        """Lines up to and including the first that contains `text`."""
        start = len(self.lines)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} within {timeout}s; got {self.lines}") from None
            if line is None:
                raise AssertionError(f"client ended before printing {text!r}; got {self.lines}")
            self.lines.append(line)
            if text in line:
                return self.lines[start:]

    def open_chat(self, peer: str) -> list[str]:
        """Wait for the user list, pick `peer` at the prompt, wait until the chat is open."""
        self.read_until("User list")
        self.type(peer)
        return self.read_until(f"You are now ready to chat with {peer}.")

    def quit(self) -> int:
        if self.process.poll() is None:
            try:
                self.type("/quit")
            except (BrokenPipeError, OSError):
                pass
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def copy_identity(user: str, source: Path, target: Path) -> None:
    """The same identity and prekeys in another folder (its own pins file), as on a second device
    (docs/SECURITY.md: a second device needs the key file and the prekeys file)."""
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in (f"{user}.json", f"{user}.prekeys.json"):
        if (source / name).exists():
            shutil.copy(source / name, target / name)
            os.chmod(target / name, 0o600)
