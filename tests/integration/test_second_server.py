"""A second `python3 server.py` while another local server holds the ports.

It must not print the started line and then restart its children forever while
clients reach the first server: it fails at once with one line naming a busy port,
exits non-zero, starts nothing (no Redis, no data folder), and the first server keeps
serving.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.cli import ROOT, LocalServer, register


def test_second_server_names_the_busy_port_and_starts_nothing(tmp_path: Path) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = LocalServer(first_dir)
    try:
        assert first.first_line == f"Spartan server started on port {first.port}."
        (second_dir / "config.yaml").write_text((first_dir / "config.yaml").read_text())
        second = subprocess.run([sys.executable, str(ROOT / "server.py")], cwd=second_dir, env=first.env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert second.stdout == ""  # never claims to have started
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        busy = {first.port, *(int(first.env[k].rsplit(":", 1)[1])
                              for k in ("SPARTAN_SERVICES__PRESENCE", "SPARTAN_SERVICES__HISTORY"))}
        assert any(f"port {port} is already in use" in lines[0] for port in busy), lines[0]
        assert not (second_dir / ".spartan").exists()  # nothing started, nothing to clean up
        register(first, "bob")  # the first server is unharmed
        assert first.process.poll() is None
    finally:
        first.stop()
