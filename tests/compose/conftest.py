"""Fixtures shared by the compose tests, and their time in the run's closing summary, where CI logs keep it."""
from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compose.docker import ROOT, Deployment, EngineUnavailable, prepare_engine

TIMING_LINES = pytest.StashKey[list[str]]()


class Timings:
    """Seconds per phase of one deployment, printed as one line at the end of the run."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.phases: dict[str, float] = {}
        self.started = time.monotonic()

    def measure(self, name: str, since: float) -> None:
        self.phases[name] = time.monotonic() - since

    def line(self) -> str:
        parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.phases.items())
        return f"{self.name} time: {time.monotonic() - self.started:.0f} s in all ({parts})"


def deployed(request: pytest.FixtureRequest, stack: Deployment, name: str) -> Iterator[Deployment]:
    """`up --build --wait` the stack (skipped, with the reason, where no engine can be had), yield it, `down -v`."""
    timings = Timings(name)
    started = time.monotonic()
    try:
        prepare_engine()
    except EngineUnavailable as exc:
        pytest.skip(str(exc))
    timings.measure("engine and base images", started)
    started = time.monotonic()
    try:
        stack.up()
    except BaseException:
        print(stack.logs())
        stack.down()
        raise
    timings.measure("up --build --wait", started)
    try:
        yield stack
    finally:
        started = time.monotonic()
        stack.down()
        timings.measure("down -v", started)
        request.config.stash.setdefault(TIMING_LINES, []).append(timings.line())


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    return tmp_path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    for line in config.stash.get(TIMING_LINES, []):
        terminalreporter.write_line(line)
