"""Free TCP ports on the loopback interface, and stopping the processes the tests start."""
from __future__ import annotations

import signal
import subprocess

from spartan.ports import free_port, wait_for_port

__all__ = ["free_port", "stop_process", "wait_for_port"]


def stop_process(process: "subprocess.Popen[bytes] | subprocess.Popen[str] | None", *, sig: int = signal.SIGTERM,
                 timeout: float = 15.0) -> None:
    """Signal a child (SIGTERM by default), wait for it, SIGKILL it if it does not exit in time."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
