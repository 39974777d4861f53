"""Prints the compose test's time in the run's closing summary, where CI logs keep it."""
from __future__ import annotations

import pytest

TIMING_LINE = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    line = config.stash.get(TIMING_LINE, None)
    if line:
        terminalreporter.write_line(line)
