"""scripts/docker-engine.sh says in one line, with exit status 2, when no engine can be had.

That line is the compose test's skip reason, so it must be the only reason a
compose test is skipped: checked as an unprivileged user, who can neither reach the
root-owned engine socket nor install one. Needs root (to become that user) and `su`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.compose.docker import ENGINE_SCRIPT, NO_ENGINE_EXIT


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("su"), reason="needs root and su to run as another user")
def test_an_unprivileged_user_gets_one_line_and_exit_2() -> None:
    # A copy that `nobody` can read: the checkout may sit in a folder only root can enter.
    readable = Path(tempfile.mkdtemp(prefix="spartan-engine-"))
    try:
        readable.chmod(0o755)
        (readable / "scripts").mkdir(mode=0o755)
        script = readable / "scripts" / ENGINE_SCRIPT.name
        shutil.copy(ENGINE_SCRIPT, script)
        script.chmod(0o644)
        done = subprocess.run(["su", "nobody", "-s", "/bin/bash", "-c", f"bash {script} --no-images"],
                              capture_output=True, text=True, timeout=60, cwd="/")
    finally:
        shutil.rmtree(readable, ignore_errors=True)
    if done.returncode == 0:
        pytest.skip("this engine's socket is open to every user")  # e.g. a rootless or shared engine
    assert done.returncode == NO_ENGINE_EXIT, done.stdout + done.stderr
    assert done.stdout.strip().splitlines() == [done.stdout.strip()]
    assert done.stdout.startswith("no Docker engine: ") and done.stderr == ""
