"""CPU time per process over a measured window, so a throughput number says what it cost and where.

On a 2-core machine every benchmark is a whole-system number: the load generators,
the services and Redis share the cores. Reading each process's user + system time
(`/proc/<pid>/stat`) at the start and end of the measured window turns a rate into
CPU microseconds per delivered message per process, which shows which process a
change made cheaper and compares Spartan with the raw bound process by process.
"""
from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0.0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND  # utime, stime (fields 14 and 15)


class CpuMeter:
    """`start()` and `stop()` around a window; `per_message(n)` gives µs of CPU per message by process."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self.started = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        self.used = {name: cpu_seconds(pid) - self.started[name] for name, pid in self.pids.items()}

    def per_message(self, messages: int) -> dict[str, float]:
        """CPU µs per message for each process and in total (empty when nothing was delivered)."""
        if not messages or not self.used:
            return {}
        shares = {name: round(seconds * 1e6 / messages, 1) for name, seconds in self.used.items()}
        shares["total"] = round(sum(self.used.values()) * 1e6 / messages, 1)
        return shares
