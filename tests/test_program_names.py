"""Each program's --help names the command as typed, and --version answers for every one of them."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from spartan.program import project_version
from tests.support.stack import ROOT

SCRIPTS = Path(sysconfig.get_path("scripts"))
INSTALLED = ["spartan-server", "spartan-client", "spartan-admin", "spartan-gateway", "spartan-presence",
             "spartan-history"]


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("name", INSTALLED)
def test_an_installed_command_shows_its_own_name_and_version(name: str) -> None:
    command = str(SCRIPTS / name)
    assert run(command, "--help").startswith(f"usage: {name} ")
    assert run(command, "--version").strip() == f"{name} {project_version()}"


@pytest.mark.parametrize("script", ["server.py", "client.py"])
def test_the_checkout_script_shows_its_file_name(script: str) -> None:
    assert run(sys.executable, script, "--help").startswith(f"usage: {script} ")
    assert run(sys.executable, script, "--version").strip() == f"{script} {project_version()}"
